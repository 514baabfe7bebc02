//! Bounded capture of one output stream: the head and the tail are kept, the
//! middle is counted and dropped, so a flood costs a fixed amount of memory.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A stream being captured within a byte budget.
#[derive(Debug)]
pub struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

/// What was kept of one stream once the run is over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// Kept text (invalid UTF-8 replaced); an omission marker joins head and tail.
    pub text: String,
    /// Bytes the command wrote in all.
    pub total_bytes: u64,
    /// Bytes left out of `text`.
    pub dropped_bytes: u64,
}

impl Capture {
    /// A capture keeping at most `limit` bytes, half from the start, half from the end.
    pub fn new(limit: u64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX / 2);
        let head_cap = limit / 2;
        Capture {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: limit - head_cap,
            total: 0,
        }
    }

    /// Adds bytes as they arrive.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let take = (self.head_cap - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Freezes the capture into text and counts.
    pub fn finish(self) -> Captured {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let dropped = self.total - kept;
        let (a, b) = self.tail.as_slices();
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if dropped > 0 {
            text.push_str(&format!("\n[... autodev: {dropped} bytes omitted ...]\n"));
        }
        let mut tail = Vec::with_capacity(a.len() + b.len());
        tail.extend_from_slice(a);
        tail.extend_from_slice(b);
        text.push_str(&String::from_utf8_lossy(&tail));
        Captured {
            text,
            total_bytes: self.total,
            dropped_bytes: dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Capture::new(100);
        c.push(b"hello ");
        c.push(b"world");
        let out = c.finish();
        assert_eq!(
            out,
            Captured {
                text: "hello world".into(),
                total_bytes: 11,
                dropped_bytes: 0
            }
        );
    }

    #[test]
    fn flood_keeps_head_and_tail_and_counts_the_rest() {
        let mut c = Capture::new(10);
        for i in 0..1000u32 {
            c.push(format!("{:04}", i).as_bytes());
        }
        let out = c.finish();
        assert_eq!(out.total_bytes, 4000);
        assert_eq!(out.dropped_bytes, 3990);
        assert!(out.text.starts_with("00000"), "{}", out.text);
        assert!(out.text.ends_with("80999"), "{}", out.text);
        assert!(out.text.contains("3990 bytes omitted"));
    }

    #[test]
    fn one_huge_chunk_is_split_between_head_and_tail() {
        let mut c = Capture::new(4);
        c.push(b"abcdefghij");
        let out = c.finish();
        assert!(out.text.starts_with("ab"));
        assert!(out.text.ends_with("ij"));
        assert_eq!(out.dropped_bytes, 6);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut c = Capture::new(64);
        c.push(&[0xff, 0xfe, b'o', b'k']);
        assert!(c.finish().text.ends_with("ok"));
    }
}
