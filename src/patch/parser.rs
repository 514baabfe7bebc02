//! Parser for the formats the model is asked to reply in:
//!
//! ```text
//! PATCH::relative/path
//! <the whole file>
//! ENDPATCH
//!
//! EDIT::relative/path
//! <<<<<<< SEARCH … ======= … >>>>>>> REPLACE   (see super::edit)
//! ENDEDIT
//!
//! DIFF::
//! <a unified diff>                               (see super::diff)
//! ENDDIFF
//! ```
//!
//! Text outside blocks is ignored, which makes code fences around blocks and
//! chatter harmless. CRLF line ends are read as LF. A fence that wraps the
//! whole content inside a block is removed. A block that is not closed by
//! `ENDPATCH` before the reply ends (or before the next `PATCH::`) is refused,
//! never half-written.
//!
//! The parser does not judge paths: confinement is [`mod@super::apply`]'s job.

use serde::{Deserialize, Serialize};

/// Marker opening a block; the path follows on the same line.
pub const OPEN: &str = "PATCH::";
/// Line closing a block.
pub const CLOSE: &str = "ENDPATCH";

/// A line asking to see a file (outside any block).
pub const READ: &str = "READ::";
/// `READ::` lines kept from one reply (the prompt answers fewer).
const MAX_READ_LINES: usize = 64;

/// Marker opening a diff block.
pub const DIFF_OPEN: &str = "DIFF::";
/// Line closing a diff block.
pub const DIFF_CLOSE: &str = "ENDDIFF";

/// One file the model wants changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Path as written by the model (not yet checked).
    pub path: String,
    /// What to do to it.
    pub change: Change,
    /// 1-based line of the block's marker.
    pub line: usize,
}

/// How a block changes its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The whole new content: trailing newlines trimmed, one newline added.
    Whole(String),
    /// Search/replace edits, in order.
    Edits(Vec<super::edit::Edit>),
    /// This file's part of a unified diff.
    Diff(super::diff::FileDiff),
}

impl Block {
    /// The whole new content, for a whole-file block.
    pub fn content(&self) -> Option<&str> {
        match &self.change {
            Change::Whole(c) => Some(c),
            _ => None,
        }
    }
}

/// Why a block was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// No `ENDPATCH` before the end of the reply or the next block.
    Unterminated,
    /// The path is empty.
    EmptyPath,
    /// The path is absolute.
    Absolute,
    /// The path has a `..` component.
    ParentDir,
    /// The path holds a NUL byte or a control character.
    BadCharacter,
    /// The path uses Windows separators or a drive prefix.
    WindowsPath,
    /// The path or one of its components is too long.
    TooLong,
    /// The path goes through a symlink.
    Symlink,
    /// The content is over the size cap.
    TooLarge,
    /// A component of the path is an existing file, or the target a folder.
    NotAFile,
    /// The path names VCS metadata (`.git`, `.hg`, ...) or autodev's own
    /// workspace marker: files the host's tools read and may act on.
    ProtectedPath,
    /// The path is one of the project's tests, or configures or hooks the
    /// test runner (see `agent::protect`).
    ProtectedTest,
    /// Writing failed.
    Io,
    /// An edit's search text or a diff's hunk is not in the file (or is
    /// there more than once).
    NoMatch,
    /// An edit or diff block is not in its format.
    Malformed,
}

/// A block that was not applied, and why; shown to the model next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The path as written.
    pub path: String,
    /// Reason class.
    pub reason: RefusalReason,
    /// Human-readable detail.
    pub detail: String,
    /// Line of the block in the reply.
    pub line: usize,
}

/// Everything found in one reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// Complete blocks, in reply order.
    pub blocks: Vec<Block>,
    /// Blocks refused while parsing.
    pub refused: Vec<Refusal>,
    /// Files the model asked to see (`READ::path` lines outside blocks).
    pub reads: Vec<String>,
}

impl ParsedReply {
    /// True when the reply holds no block at all, complete or not (it may
    /// still ask to read files).
    pub fn writes_nothing(&self) -> bool {
        self.blocks.is_empty() && self.refused.is_empty()
    }

    /// True when the reply holds no block at all, complete or not, and
    /// asks to read nothing.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.refused.is_empty() && self.reads.is_empty()
    }
}

/// Which kind of block is open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Patch,
    Edit,
    Diff,
}

impl Open {
    fn close(self) -> &'static str {
        match self {
            Open::Patch => CLOSE,
            Open::Edit => super::edit::CLOSE,
            Open::Diff => DIFF_CLOSE,
        }
    }
}

/// Parses a model reply into blocks.
pub fn parse(reply: &str) -> ParsedReply {
    let text = reply.replace("\r\n", "\n");
    let mut out = ParsedReply::default();
    let mut current: Option<(Open, String, usize, Vec<&str>)> = None;
    for (i, line) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let trimmed = line.trim();
        let opened = [
            (OPEN, Open::Patch),
            (super::edit::OPEN, Open::Edit),
            (DIFF_OPEN, Open::Diff),
        ]
        .into_iter()
        .find_map(|(m, k)| trimmed.strip_prefix(m).map(|p| (k, p)));
        if let Some((kind, path)) = opened {
            if let Some((k, p, at, _)) = current.take() {
                out.refused.push(unterminated(p, at, k));
            }
            let path = if kind == Open::Diff { "" } else { path.trim() };
            current = Some((kind, path.to_string(), lineno, Vec::new()));
            continue;
        }
        match current.as_mut() {
            Some((k, ..)) if trimmed == k.close() => {
                if let Some((kind, path, at, body)) = current.take() {
                    close(&mut out, kind, path, at, &body);
                }
            }
            Some((_, _, _, body)) => body.push(line),
            None => {
                if let Some(p) = trimmed.strip_prefix(READ) {
                    let p = p.trim();
                    if !p.is_empty()
                        && out.reads.len() < MAX_READ_LINES
                        && !out.reads.iter().any(|r| r == p)
                    {
                        out.reads.push(p.to_string());
                    }
                }
            }
        }
    }
    if let Some((k, p, at, _)) = current {
        out.refused.push(unterminated(p, at, k));
    }
    out
}

/// Turns a closed block into blocks or a refusal.
fn close(out: &mut ParsedReply, kind: Open, path: String, at: usize, body: &[&str]) {
    let malformed = |path: String, detail: String| Refusal {
        path,
        reason: RefusalReason::Malformed,
        detail,
        line: at,
    };
    match kind {
        Open::Patch => out.blocks.push(Block {
            path,
            change: Change::Whole(finish(body)),
            line: at,
        }),
        Open::Edit => match super::edit::parse_body(body, at + 1) {
            Ok(edits) => out.blocks.push(Block {
                path,
                change: Change::Edits(edits),
                line: at,
            }),
            Err(e) => out.refused.push(malformed(path, e)),
        },
        Open::Diff => match super::diff::parse(&body.join("\n")) {
            Err(e) => out.refused.push(malformed(e.path.clone(), e.to_string())),
            Ok(files) if files.is_empty() => out.refused.push(malformed(
                String::new(),
                "the diff block holds no file: `--- a/path`, `+++ b/path`, then `@@` hunks".into(),
            )),
            Ok(files) => {
                for f in files {
                    let path = f.new.clone().or_else(|| f.old.clone()).unwrap_or_default();
                    if f.old.is_some() && f.new.is_some() && f.old != f.new {
                        out.refused.push(malformed(
                            path,
                            "renames are not applied from a reply: send the new file whole".into(),
                        ));
                        continue;
                    }
                    out.blocks.push(Block {
                        path,
                        change: Change::Diff(f),
                        line: at,
                    });
                }
            }
        },
    }
}

fn unterminated(path: String, line: usize, kind: Open) -> Refusal {
    Refusal {
        detail: format!(
            "block for {path:?} opened at line {line} has no {}; nothing was written",
            kind.close()
        ),
        path,
        reason: RefusalReason::Unterminated,
        line,
    }
}

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

fn finish(body: &[&str]) -> String {
    let mut lines = body;
    // Skip blank lines around a possible fence so "\n```py\n...\n```\n" unwraps too.
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    if let (Some(f), Some(l)) = (first, last) {
        if f < l && is_fence(lines[f]) && lines[l].trim() == "```" {
            lines = &lines[f + 1..l];
        }
    }
    let joined = lines.join("\n");
    let mut content = joined.trim_end_matches('\n').to_string();
    content.push('\n');
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(path: &str, content: &str, line: usize) -> Block {
        Block {
            path: path.into(),
            change: Change::Whole(content.into()),
            line,
        }
    }

    #[test]
    fn two_blocks_with_chatter() {
        let r = parse(
            "Sure!\nPATCH::a.py\nx = 1\n\n\nENDPATCH\nthen\nPATCH::pkg/b.py\ny = 2\nENDPATCH\n",
        );
        assert_eq!(
            r.blocks,
            vec![block("a.py", "x = 1\n", 2), block("pkg/b.py", "y = 2\n", 8)]
        );
        assert!(r.refused.is_empty());
    }

    #[test]
    fn fences_around_blocks_are_ignored() {
        let r = parse("```\nPATCH::a.py\nprint(1)\nENDPATCH\n```\n");
        assert_eq!(r.blocks, vec![block("a.py", "print(1)\n", 2)]);
    }

    #[test]
    fn fence_wrapping_content_is_removed() {
        let r = parse("PATCH::a.py\n```python\nprint(1)\n```\nENDPATCH");
        assert_eq!(r.blocks, vec![block("a.py", "print(1)\n", 1)]);
    }

    #[test]
    fn crlf_is_read_as_lf() {
        let r = parse("PATCH::a.py\r\nx = 1\r\ny = 2\r\nENDPATCH\r\n");
        assert_eq!(r.blocks, vec![block("a.py", "x = 1\ny = 2\n", 1)]);
    }

    #[test]
    fn unterminated_block_is_refused_not_written() {
        let r = parse("PATCH::a.py\nx = 1\nPATCH::b.py\ny\nENDPATCH\nPATCH::c.py\nhalf");
        assert_eq!(r.blocks, vec![block("b.py", "y\n", 3)]);
        let reasons: Vec<_> = r
            .refused
            .iter()
            .map(|x| (x.path.as_str(), x.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("a.py", RefusalReason::Unterminated),
                ("c.py", RefusalReason::Unterminated)
            ]
        );
    }

    #[test]
    fn no_blocks_is_empty() {
        assert!(parse("I think the tests are fine.").is_empty());
        assert!(!parse("PATCH::x").is_empty());
    }

    #[test]
    fn empty_file_is_one_newline() {
        assert_eq!(
            parse("PATCH::__init__.py\nENDPATCH").blocks[0].content(),
            Some("\n")
        );
    }

    #[test]
    fn indented_markers_are_accepted() {
        let r = parse("  PATCH:: a.py  \nx\n  ENDPATCH  ");
        assert_eq!(r.blocks, vec![block("a.py", "x\n", 1)]);
    }

    #[test]
    fn edit_and_diff_blocks_beside_whole_files() {
        let r = parse(
            "PATCH::a.py\nx = 1\nENDPATCH\nEDIT::b.py\n<<<<<<< SEARCH\nold\n=======\nnew\n>>>>>>> REPLACE\nENDEDIT\n\
DIFF::\n```diff\n--- a/c.py\n+++ b/c.py\n@@ -1 +1 @@\n-p\n+q\n```\nENDDIFF\nEDIT::d.py\nnot an edit\nENDEDIT\n\
DIFF::\n--- a/e.py\n+++ b/f.py\n@@ -1 +1 @@\n-p\n+q\nENDDIFF",
        );
        let kinds: Vec<(&str, &str)> = r
            .blocks
            .iter()
            .map(|b| {
                let k = match b.change {
                    Change::Whole(_) => "whole",
                    Change::Edits(_) => "edits",
                    Change::Diff(_) => "diff",
                };
                (b.path.as_str(), k)
            })
            .collect();
        assert_eq!(
            kinds,
            [("a.py", "whole"), ("b.py", "edits"), ("c.py", "diff")]
        );
        let refused: Vec<(&str, RefusalReason)> = r
            .refused
            .iter()
            .map(|x| (x.path.as_str(), x.reason))
            .collect();
        assert_eq!(
            refused,
            [
                ("d.py", RefusalReason::Malformed),
                ("f.py", RefusalReason::Malformed)
            ]
        );
        let r = parse("EDIT::x.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\nENDPATCH\n");
        assert_eq!(r.refused[0].reason, RefusalReason::Unterminated);
        assert!(r.refused[0].detail.contains("ENDEDIT"));
    }

    #[test]
    fn read_requests_outside_blocks_are_kept_once() {
        let r = parse("READ::src/a.py\nREAD:: src/a.py \nPATCH::b.py\nREAD::inside.py\nENDPATCH\nREAD::c.go\n");
        assert_eq!(r.reads, ["src/a.py", "c.go"]);
        assert!(
            !parse("READ::x.py").is_empty(),
            "a reply that only asks to read is not empty"
        );
    }
}
