//! Parser for the patch format the model is asked to reply in:
//!
//! ```text
//! PATCH::relative/path
//! <the whole file>
//! ENDPATCH
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

/// One file the model wants written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Path as written by the model (not yet checked).
    pub path: String,
    /// New content: trailing newlines trimmed, one newline added.
    pub content: String,
    /// 1-based line of the `PATCH::` marker.
    pub line: usize,
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
}

impl ParsedReply {
    /// True when the reply holds no block at all, complete or not.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.refused.is_empty()
    }
}

/// Parses a model reply into blocks.
pub fn parse(reply: &str) -> ParsedReply {
    let text = reply.replace("\r\n", "\n");
    let mut out = ParsedReply::default();
    let mut current: Option<(String, usize, Vec<&str>)> = None;
    for (i, line) in text.split('\n').enumerate() {
        let lineno = i + 1;
        let trimmed = line.trim();
        if let Some(path) = trimmed.strip_prefix(OPEN) {
            if let Some((p, at, _)) = current.take() {
                out.refused.push(unterminated(p, at));
            }
            current = Some((path.trim().to_string(), lineno, Vec::new()));
            continue;
        }
        match current.as_mut() {
            Some(_) if trimmed == CLOSE => {
                if let Some((path, at, body)) = current.take() {
                    out.blocks.push(Block {
                        path,
                        content: finish(&body),
                        line: at,
                    });
                }
            }
            Some((_, _, body)) => body.push(line),
            None => {}
        }
    }
    if let Some((p, at, _)) = current {
        out.refused.push(unterminated(p, at));
    }
    out
}

fn unterminated(path: String, line: usize) -> Refusal {
    Refusal {
        detail: format!(
            "block for {path:?} opened at line {line} has no {CLOSE}; nothing was written"
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
            content: content.into(),
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
            parse("PATCH::__init__.py\nENDPATCH").blocks[0].content,
            "\n"
        );
    }

    #[test]
    fn indented_markers_are_accepted() {
        let r = parse("  PATCH:: a.py  \nx\n  ENDPATCH  ");
        assert_eq!(r.blocks, vec![block("a.py", "x\n", 1)]);
    }
}
