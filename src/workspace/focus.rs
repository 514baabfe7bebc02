//! Context for a workspace larger than the prompt's budget: instead of
//! "files up to the budget" (an arbitrary cut of a real repository), the
//! files the model asked for (`READ::path`), the files the failure output
//! and the task name (whole, or the lines around the lines named), and a
//! map of the repository (each file with its top-level definitions), in
//! that order, within the budget. A workspace that fits is shown whole,
//! as before.

use std::collections::BTreeSet;
use std::path::Path;

use super::context::{context_files, whole};
use super::{CopyOptions, WorkspaceError};

/// Files answered per `READ::` round.
pub const MAX_READS: usize = 8;
/// Lines shown on each side of a line the failure names, when the file
/// does not fit whole.
const AROUND: usize = 30;
/// Definitions listed per file in the map.
const MAX_DEFS: usize = 24;
/// Share of the budget kept for the map (the rest for files).
const MAP_SHARE: usize = 4;

/// What the prompt should put first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Focus<'a> {
    /// Text that names files: the failure output, the task.
    pub naming: &'a str,
    /// Paths the model asked for.
    pub reads: &'a [String],
}

/// The context for the prompt: every file when they fit in `budget`
/// characters, else the focused files and the map (see the module notes).
pub fn prompt_context(
    root: &Path,
    copy: &CopyOptions,
    budget: usize,
    focus: Focus<'_>,
) -> Result<String, WorkspaceError> {
    let files = context_files(root, copy)?;
    let total: usize = files
        .iter()
        .map(|f| f.text.chars().count() + f.rel.len() + 10)
        .sum();
    if total <= budget {
        // Read once: the files already read are the whole context.
        return Ok(whole(&files, budget));
    }
    let known: BTreeSet<&str> = files.iter().map(|f| f.rel.as_str()).collect();
    let mut wanted: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |rel: &str, line: Option<usize>| match wanted.iter_mut().find(|(r, _)| r == rel) {
        Some((_, lines)) => lines.extend(line),
        None => wanted.push((rel.to_string(), line.into_iter().collect())),
    };
    let mut unknown = Vec::new();
    for r in focus.reads.iter().take(MAX_READS) {
        let clean = r.trim().trim_start_matches("./");
        if known.contains(clean) {
            add(clean, None);
        } else {
            unknown.push(r.clone());
        }
    }
    for (rel, line) in named(focus.naming, &known) {
        add(&rel, line);
    }
    let file_budget = budget - budget / MAP_SHARE;
    let mut out = format!(
        "(The project is larger than this prompt: shown are the files you asked for, the files the task \
and the failure name, then a map of every file with its top-level definitions. To see a file, \
write READ::path on a line of its own; up to {MAX_READS} are answered next time.)\n"
    );
    if !unknown.is_empty() {
        out.push_str(&format!(
            "(Not found or not text, so not shown: {})\n",
            unknown.join(", ")
        ));
    }
    let mut shown = BTreeSet::new();
    for (rel, lines) in &wanted {
        let Some(f) = files.iter().find(|f| &f.rel == rel) else {
            continue;
        };
        let left = file_budget.saturating_sub(out.chars().count());
        let full = format!("=== {rel} ===\n{}\n", f.text);
        let part = if full.chars().count() <= left {
            full
        } else {
            excerpt(rel, &f.text, lines, left)
        };
        if part.is_empty() {
            break;
        }
        out.push_str(&part);
        shown.insert(rel.as_str());
    }
    out.push_str("=== map of the project (path: top-level definitions) ===\n");
    for (k, f) in files.iter().enumerate() {
        let defs = definitions(&f.rel, &f.text);
        let mark = if shown.contains(f.rel.as_str()) {
            " (shown above)"
        } else {
            ""
        };
        let line = if defs.is_empty() {
            format!("{}{mark}\n", f.rel)
        } else {
            format!("{}{mark}: {}\n", f.rel, defs.join(", "))
        };
        if out.chars().count() + line.chars().count() > budget {
            out.push_str(&format!("[... {} more files ...]\n", files.len() - k));
            break;
        }
        out.push_str(&line);
    }
    Ok(out)
}

/// The lines of `text` around each of `lines` (or its head when none), as
/// much as `room` characters allow.
fn excerpt(rel: &str, text: &str, lines: &[usize], room: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut ranges: Vec<(usize, usize)> = if lines.is_empty() {
        vec![(0, (2 * AROUND).min(all.len()))]
    } else {
        lines
            .iter()
            .map(|l| (l.saturating_sub(AROUND + 1), (l + AROUND).min(all.len())))
            .collect()
    };
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let head = format!(
        "=== {rel} (lines shown with their numbers; {} lines in all) ===\n",
        all.len()
    );
    if head.len() >= room {
        return String::new();
    }
    let mut out = head;
    for (a, b) in merged {
        for (n, l) in all.iter().enumerate().take(b).skip(a) {
            let line = format!("{:>5} {l}\n", n + 1);
            if out.chars().count() + line.chars().count() + 1 > room {
                out.push_str("[... cut at the character budget ...]\n");
                return out;
            }
            out.push_str(&line);
        }
        out.push_str("  ...\n");
    }
    out
}

/// Files of `known` that `text` names, with the line it names when it does
/// (`File "/workspace/a/b.py", line 12`, `a/b.py:12`, `tests/t.py::test_x`,
/// `b_test.go:12`), in order of first mention.
pub fn named(text: &str, known: &BTreeSet<&str>) -> Vec<(String, Option<usize>)> {
    let mut found: Vec<(String, Option<usize>)> = Vec::new();
    for line in text.lines().take(20_000) {
        let traceback_line = line
            .split_once(", line ")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        for token in line.split(|c: char| c.is_whitespace() || "\"'(),[]<>=".contains(c)) {
            let token = token
                .trim_start_matches("/workspace/")
                .trim_start_matches("./");
            let token = token.split("::").next().unwrap_or("");
            let mut parts = token.split(':');
            let path = parts.next().unwrap_or("").trim_end_matches('.');
            let at = parts.next().and_then(|n| n.parse().ok()).or(traceback_line);
            if path.len() < 3 || !path.contains('.') {
                continue;
            }
            let hit = if known.contains(path) {
                Some(path.to_string())
            } else if !path.contains('/') {
                // A bare file name (Go's `calc_test.go:12`): when one file has it.
                let mut m = known.iter().filter(|k| k.rsplit('/').next() == Some(path));
                match (m.next(), m.next()) {
                    (Some(k), None) => Some(k.to_string()),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(rel) = hit {
                if !found.iter().any(|(r, l)| *r == rel && *l == at) {
                    found.push((rel, at));
                }
            }
        }
    }
    found
}

/// A file's top-level definitions, by the conventions of its language.
fn definitions(rel: &str, text: &str) -> Vec<String> {
    let ext = rel.rsplit('.').next().unwrap_or("");
    let name = |rest: &str| -> Option<String> {
        let n: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (!n.is_empty()).then_some(n)
    };
    let prefixes: &[&str] = match ext {
        "py" => &["def ", "async def ", "class "],
        "go" => &["func ", "type "],
        "rs" => &[
            "fn ",
            "pub fn ",
            "struct ",
            "pub struct ",
            "enum ",
            "pub enum ",
            "trait ",
            "pub trait ",
            "mod ",
            "pub mod ",
        ],
        "js" | "ts" | "mjs" | "jsx" | "tsx" => &[
            "function ",
            "class ",
            "export function ",
            "export class ",
            "export const ",
            "export default function ",
            "async function ",
            "export async function ",
        ],
        "java" | "kt" => &[
            "public class ",
            "class ",
            "public interface ",
            "interface ",
            "public enum ",
        ],
        _ => &[],
    };
    let mut out = Vec::new();
    for l in text.lines() {
        // Top level only: an unindented line (Go methods too: `func (r T) Name`).
        if l.starts_with(char::is_whitespace) {
            continue;
        }
        for p in prefixes {
            if let Some(rest) = l.strip_prefix(p) {
                let rest = match (ext, rest.strip_prefix('(')) {
                    ("go", Some(recv)) => recv.split_once(") ").map_or("", |(_, n)| n),
                    _ => rest,
                };
                if let Some(n) = name(rest) {
                    out.push(n);
                }
                break;
            }
        }
        if out.len() >= MAX_DEFS {
            out.push("…".into());
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_output_names_files_and_lines() {
        let known: BTreeSet<&str> = [
            "src/app/sessions.py",
            "tests/test_basic.py",
            "doc/man_test.go",
            "README.md",
        ]
        .into();
        let out = "Traceback (most recent call last):\n  File \"/workspace/src/app/sessions.py\", line 342, in save\n\
FAILED tests/test_basic.py::test_vary - AssertionError\n    man_test.go:57: want x\nsee README.md\n";
        assert_eq!(
            named(out, &known),
            vec![
                ("src/app/sessions.py".to_string(), Some(342)),
                ("tests/test_basic.py".to_string(), None),
                ("doc/man_test.go".to_string(), Some(57)),
                ("README.md".to_string(), None),
            ]
        );
    }

    #[test]
    fn definitions_are_the_top_level_ones() {
        let py = "import os\nclass A:\n    def inner(self): pass\ndef f(x):\n    pass\nasync def g(): pass\n";
        assert_eq!(definitions("m.py", py), ["A", "f", "g"]);
        let go = "package x\nfunc (c *Command) Execute() error {\n}\ntype Command struct{}\nfunc New() {}\n";
        assert_eq!(definitions("x.go", go), ["Execute", "Command", "New"]);
    }

    #[test]
    fn a_large_project_gets_the_named_files_the_asked_ones_and_a_map() {
        let d = tempfile::tempdir().unwrap();
        let big: String = (1..=400)
            .map(|i| format!("def f{i}():\n    return {i}\n"))
            .collect();
        std::fs::write(d.path().join("big.py"), &big).unwrap();
        std::fs::write(d.path().join("small.py"), "def helper():\n    pass\n").unwrap();
        std::fs::write(d.path().join("other.py"), "class Other:\n    pass\n").unwrap();
        let copy = CopyOptions::default();
        let reads = vec!["small.py".to_string(), "missing.py".to_string()];
        let c = prompt_context(
            d.path(),
            &copy,
            3_000,
            Focus {
                naming: "  File \"/workspace/big.py\", line 300, in f150\n",
                reads: &reads,
            },
        )
        .unwrap();
        assert!(c.len() <= 3_200, "{}", c.len());
        assert!(c.contains("=== small.py ===\ndef helper"), "{c}");
        assert!(
            c.contains("Not found or not text, so not shown: missing.py"),
            "{c}"
        );
        assert!(c.contains("=== big.py (lines shown"), "{c}");
        assert!(
            c.contains("  300     return 150\n"),
            "the named line is shown: {c}"
        );
        assert!(c.contains("other.py: Other"), "{c}");
        // A project that fits is shown whole, as before.
        let whole = prompt_context(d.path(), &copy, 1_000_000, Focus::default()).unwrap();
        assert_eq!(
            whole,
            super::super::file_context(d.path(), &copy, 1_000_000).unwrap()
        );
    }
}
