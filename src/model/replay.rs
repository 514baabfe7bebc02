//! Scripted replies served in order from a file, so demos and tests run
//! offline and deterministically.
//!
//! File format: replies separated by lines reading exactly `=== REPLY ===`;
//! text before the first separator is a comment. A file without any
//! separator is one reply. Problems (unreadable, not UTF-8, no reply) are
//! found when the file is loaded, before anything runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Completion, Message, ModelClient, ModelError};

/// Line separating replies.
pub const SEPARATOR: &str = "=== REPLY ===";

/// A replay of scripted replies.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    replies: Vec<String>,
    next: AtomicUsize,
}

impl Replay {
    /// Loads the replies from `path`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::ReplayFile {
            path: path.to_path_buf(),
            source,
        })?;
        let replay = Replay::from_text(path, &text);
        if replay.is_empty() {
            return Err(ModelError::ReplayEmpty(path.to_path_buf()));
        }
        Ok(replay)
    }

    /// Replies parsed from `text` (the path is for messages).
    pub fn from_text(path: &Path, text: &str) -> Self {
        let text = text.replace("\r\n", "\n");
        let mut replies: Vec<String> = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in text.split('\n') {
            if line.trim_end() == SEPARATOR {
                if let Some(r) = current.take() {
                    replies.push(r.join("\n"));
                }
                current = Some(Vec::new());
            } else if let Some(r) = current.as_mut() {
                r.push(line);
            }
        }
        match current {
            Some(r) => replies.push(r.join("\n")),
            // No separator at all: the whole file is the one reply.
            None if !text.trim().is_empty() => replies.push(text.clone()),
            None => {}
        }
        Replay {
            path: path.to_path_buf(),
            replies,
            next: AtomicUsize::new(0),
        }
    }

    /// Number of replies in the script.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True when the script holds no reply.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

impl ModelClient for Replay {
    fn describe(&self) -> String {
        format!("replay:{}", self.path.display())
    }

    async fn complete(&self, _messages: &[Message]) -> Result<Completion, ModelError> {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        let text = self
            .replies
            .get(i)
            .cloned()
            .ok_or_else(|| ModelError::ReplayExhausted {
                path: self.path.clone(),
                available: self.replies.len(),
            })?;
        Ok(Completion {
            text,
            usage: None,
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_replies_in_order_then_errors() {
        let r = Replay::from_text(
            Path::new("x"),
            "comment\n=== REPLY ===\nfirst\nline\n=== REPLY ===\nsecond\n",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r.complete(&[]).await.unwrap().text, "first\nline");
        assert_eq!(r.complete(&[]).await.unwrap().text, "second\n");
        assert!(matches!(
            r.complete(&[]).await,
            Err(ModelError::ReplayExhausted { available: 2, .. })
        ));
    }

    #[test]
    fn a_file_without_separator_is_one_reply_and_an_empty_one_is_refused() {
        let r = Replay::from_text(Path::new("x"), "PATCH::a.py\nx\nENDPATCH\n");
        assert_eq!(r.len(), 1);
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("e.txt");
        std::fs::write(&empty, "\n  \n").unwrap();
        assert!(matches!(
            Replay::load(&empty),
            Err(ModelError::ReplayEmpty(_))
        ));
        let bad = d.path().join("b.txt");
        std::fs::write(&bad, b"\xff\xfe").unwrap();
        assert!(matches!(
            Replay::load(&bad),
            Err(ModelError::ReplayFile { .. })
        ));
    }
}
