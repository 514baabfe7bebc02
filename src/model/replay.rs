//! Scripted replies served in order from a file, so demos and tests run
//! offline and deterministically.
//!
//! File format: replies separated by lines reading exactly `=== REPLY ===`;
//! text before the first separator is a comment.

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
        Ok(Replay::from_text(path, &text))
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
        if let Some(r) = current {
            replies.push(r.join("\n"));
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
}
