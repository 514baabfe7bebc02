//! Search/replace edits: the exact lines a change starts from and what
//! replaces them, several per file, so a model fixes one line of a long
//! file without sending it whole.
//!
//! ```text
//! EDIT::relative/path
//! <<<<<<< SEARCH
//! the exact lines as they are in the file
//! =======
//! what replaces them
//! >>>>>>> REPLACE
//! ENDEDIT
//! ```
//!
//! A search must match exactly once. With no exact match, a match that
//! differs only in the lines' leading and trailing whitespace is taken
//! when there is exactly one (the replacement is re-indented by the same
//! amount, and the report says so). Anything else is refused with what
//! the model needs to fix it: how many matches there were and where, or
//! the nearest lines the file has. A block's edits apply in order, all or
//! none; an empty search on a file that does not exist creates it.

use serde::{Deserialize, Serialize};

/// Marker opening an edit block; the path follows on the same line.
pub const OPEN: &str = "EDIT::";
/// Line closing an edit block.
pub const CLOSE: &str = "ENDEDIT";
const SEARCH: &str = "<<<<<<< SEARCH";
const DIVIDER: &str = "=======";
const REPLACE: &str = ">>>>>>> REPLACE";

/// Lines of the file shown around a near miss.
const NEAR_LINES: usize = 8;

/// One search/replace pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// The lines to find (each with its `\n`).
    pub search: String,
    /// What replaces them.
    pub replace: String,
    /// 1-based line of its `<<<<<<< SEARCH` in the reply.
    pub line: usize,
}

/// Reads an edit block's body (the lines between `EDIT::` and `ENDEDIT`);
/// `first` is the reply line of the body's first line.
pub fn parse_body(body: &[&str], first: usize) -> Result<Vec<Edit>, String> {
    let mut edits = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let t = body[i].trim();
        if t.is_empty() || t.starts_with("```") {
            i += 1;
            continue;
        }
        if t != SEARCH {
            return Err(format!(
                "line {}: expected `{SEARCH}`, found {:?}; each edit is `{SEARCH}`, the exact lines, `{DIVIDER}`, the new lines, `{REPLACE}`",
                first + i,
                body[i]
            ));
        }
        let at = first + i;
        let mut search = String::new();
        let mut replace = String::new();
        let mut j = i + 1;
        while j < body.len() && body[j].trim_end() != DIVIDER {
            search.push_str(body[j]);
            search.push('\n');
            j += 1;
        }
        if j == body.len() {
            return Err(format!("line {at}: the edit has no `{DIVIDER}`"));
        }
        j += 1;
        while j < body.len() && body[j].trim() != REPLACE {
            replace.push_str(body[j]);
            replace.push('\n');
            j += 1;
        }
        if j == body.len() {
            return Err(format!("line {at}: the edit has no `{REPLACE}`"));
        }
        edits.push(Edit {
            search,
            replace,
            line: at,
        });
        i = j + 1;
    }
    if edits.is_empty() {
        return Err(format!("no `{SEARCH}` … `{REPLACE}` edit in the block"));
    }
    Ok(edits)
}

/// The text after applying `edits` in order to `text` (`None`: the file
/// does not exist), and notes on edits matched ignoring whitespace.
pub fn apply_edits(text: Option<&str>, edits: &[Edit]) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    let Some(mut text) = text.map(str::to_string) else {
        // A new file: one edit with nothing to search for.
        return match edits {
            [e] if e.search.trim().is_empty() => Ok((e.replace.clone(), notes)),
            _ => Err("the file does not exist: create it with one edit whose SEARCH is empty, or send it whole as a PATCH block".into()),
        };
    };
    for (k, e) in edits.iter().enumerate() {
        let n = k + 1;
        if e.search.trim().is_empty() {
            if text.trim().is_empty() {
                text = e.replace.clone();
                continue;
            }
            return Err(format!(
                "edit {n}: SEARCH is empty but the file is not: copy the lines to replace into SEARCH"
            ));
        }
        let found: Vec<usize> = text.match_indices(&e.search).map(|(at, _)| at).collect();
        match found.as_slice() {
            [at] => text.replace_range(*at..*at + e.search.len(), &e.replace),
            [] => match loose(&text, e) {
                Ok((new, line)) => {
                    notes.push(format!(
                        "edit {n} matched at line {line} only when ignoring whitespace; it was re-indented to fit"
                    ));
                    text = new;
                }
                Err(why) => return Err(format!("edit {n}: {why}")),
            },
            many => {
                let lines: Vec<String> = many
                    .iter()
                    .take(5)
                    .map(|at| (text[..*at].matches('\n').count() + 1).to_string())
                    .collect();
                return Err(format!(
                    "edit {n}: SEARCH matches {} times (at lines {}): add the lines around it that make it unique",
                    many.len(),
                    lines.join(", ")
                ));
            }
        }
    }
    Ok((text, notes))
}

/// Splits text into lines that keep their `\n`.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// The whitespace-tolerant match: the one window of lines whose trimmed
/// text equals the search's; the replacement gets the indentation the
/// file has where the search had less (or loses what the search had more).
fn loose(text: &str, e: &Edit) -> Result<(String, usize), String> {
    let file = lines(text);
    let want: Vec<&str> = lines(&e.search)
        .into_iter()
        .skip_while(|l| l.trim().is_empty())
        .collect();
    let want: Vec<&str> = match want.iter().rposition(|l| !l.trim().is_empty()) {
        Some(last) => want[..=last].to_vec(),
        None => Vec::new(),
    };
    let same = |at: usize| {
        want.iter()
            .zip(&file[at..at + want.len()])
            .all(|(a, b)| a.trim() == b.trim())
    };
    let hits: Vec<usize> = (0..=file.len().saturating_sub(want.len()))
        .filter(|at| file.len() >= want.len() && same(*at))
        .collect();
    match hits.as_slice() {
        [at] => {
            let (have, had) = (indent(file[*at]), indent(want[0]));
            let mut new = String::new();
            for l in &file[..*at] {
                new.push_str(l);
            }
            for l in lines(&e.replace) {
                if l.trim().is_empty() {
                    new.push_str(l);
                } else if let Some(rest) = l.strip_prefix(had) {
                    new.push_str(have);
                    new.push_str(rest);
                } else {
                    new.push_str(l);
                }
            }
            if !e.replace.is_empty() && !e.replace.ends_with('\n') {
                new.push('\n');
            }
            for l in &file[*at + want.len()..] {
                new.push_str(l);
            }
            Ok((new, at + 1))
        }
        [] => Err(nearest(&file, &want)),
        many => Err(format!(
            "SEARCH is not in the file exactly, and ignoring whitespace it matches {} times (at lines {}): copy the lines exactly, with the lines around them",
            many.len(),
            many.iter().take(5).map(|a| (a + 1).to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Where the file comes closest to the search (most equal trimmed lines
/// in a window of its length), shown so the model can copy it exactly.
fn nearest(file: &[&str], want: &[&str]) -> String {
    let n = want.len().max(1);
    let score = |at: usize| {
        want.iter()
            .zip(file.iter().skip(at))
            .filter(|(a, b)| a.trim() == b.trim() && !a.trim().is_empty())
            .count()
    };
    let best = (0..file.len()).max_by_key(|at| (score(*at), std::cmp::Reverse(*at)));
    match best.filter(|at| score(*at) > 0) {
        None => "SEARCH is not in the file, and no line of it is: read the file again and copy the lines to change exactly".into(),
        Some(at) => {
            let shown: String = file[at..(at + n.min(NEAR_LINES)).min(file.len())].concat();
            format!(
                "SEARCH is not in the file; the nearest lines are at line {} ({} of {} lines the same):\n{}Copy the lines exactly as the file has them.",
                at + 1,
                score(at),
                want.len(),
                shown
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(search: &str, replace: &str) -> Edit {
        Edit {
            search: search.into(),
            replace: replace.into(),
            line: 1,
        }
    }

    #[test]
    fn the_body_reads_several_edits_and_refuses_a_broken_one() {
        let body = "<<<<<<< SEARCH\na = 1\n=======\na = 2\n>>>>>>> REPLACE\n\n<<<<<<< SEARCH\nb\n=======\n>>>>>>> REPLACE";
        let lines: Vec<&str> = body.split('\n').collect();
        let edits = parse_body(&lines, 10).unwrap();
        assert_eq!(
            edits,
            vec![
                Edit {
                    search: "a = 1\n".into(),
                    replace: "a = 2\n".into(),
                    line: 10
                },
                Edit {
                    search: "b\n".into(),
                    replace: "".into(),
                    line: 16
                },
            ]
        );
        let broken: Vec<&str> = "<<<<<<< SEARCH\na\n>>>>>>> REPLACE".split('\n').collect();
        assert!(parse_body(&broken, 1).unwrap_err().contains("no `=======`"));
        assert!(parse_body(&["x = 1"], 4)
            .unwrap_err()
            .contains("line 4: expected"));
    }

    #[test]
    fn an_exact_single_match_is_replaced_in_order() {
        let text = "def f():\n    return 1\n\ndef g():\n    return 2\n";
        let (out, notes) = apply_edits(
            Some(text),
            &[
                edit("    return 1\n", "    return 10\n"),
                edit("    return 10\n\ndef g", "    return 11\n\ndef g"),
            ],
        )
        .unwrap();
        assert_eq!(out, "def f():\n    return 11\n\ndef g():\n    return 2\n");
        assert!(notes.is_empty());
    }

    #[test]
    fn ambiguous_and_missing_searches_say_where_to_look() {
        let text = "x = 1\ny = 2\nx = 1\n";
        let e = apply_edits(Some(text), &[edit("x = 1\n", "x = 3\n")]).unwrap_err();
        assert_eq!(e, "edit 1: SEARCH matches 2 times (at lines 1, 3): add the lines around it that make it unique");
        let file = "def add(a, b):\n    total = a - b\n    return total\n";
        let e = apply_edits(
            Some(file),
            &[edit("def add(a, b):\n    total = a * b\n", "x\n")],
        )
        .unwrap_err();
        assert!(
            e.contains("nearest lines are at line 1 (1 of 2 lines the same)"),
            "{e}"
        );
        assert!(e.contains("    total = a - b\n"), "{e}");
        let e = apply_edits(Some(file), &[edit("nothing like it\n", "x\n")]).unwrap_err();
        assert!(e.contains("no line of it is"), "{e}");
        // All or none: the first edit's change is not kept.
        let e = apply_edits(
            Some(file),
            &[edit("return total", "return 0"), edit("zzz", "")],
        );
        assert!(e.is_err());
    }

    #[test]
    fn whitespace_only_differences_match_once_and_are_reindented() {
        let text = "class A:\n    def f(self):\n        return 1   \n";
        let (out, notes) = apply_edits(
            Some(text),
            &[edit(
                "def f(self):\n    return 1\n",
                "def f(self):\n    return 2\n",
            )],
        )
        .unwrap();
        assert_eq!(out, "class A:\n    def f(self):\n        return 2\n");
        assert_eq!(
            notes,
            ["edit 1 matched at line 2 only when ignoring whitespace; it was re-indented to fit"]
        );
    }

    #[test]
    fn an_empty_search_creates_a_new_file_only() {
        assert_eq!(
            apply_edits(None, &[edit("", "x = 1\n")]).unwrap().0,
            "x = 1\n"
        );
        assert!(apply_edits(None, &[edit("a\n", "b\n")]).is_err());
        assert!(apply_edits(Some("y\n"), &[edit("\n", "b\n")])
            .unwrap_err()
            .contains("SEARCH is empty"));
    }
}
