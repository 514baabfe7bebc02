//! Reporting: the JSON Lines transcript ([`transcript`]) and what the
//! terminal shows ([`ui`]).

pub mod junit;
pub mod term;
pub mod transcript;
pub mod ui;

pub use transcript::Transcript;
pub use ui::{Ui, UiMode};

use crate::sandbox::Outcome;

/// One line for the terminal after a run.
pub fn outcome_line(o: &Outcome) -> String {
    let d = &o.durations;
    let mut line = format!(
        "autodev: {} (exit {}) in {:.2}s [create {} ms, copy-in {} ms, run {} ms, remove {} ms]",
        o.verdict,
        o.exit_code
            .map_or_else(|| "-".to_string(), |c| c.to_string()),
        d.total_ms as f64 / 1000.0,
        d.create_ms,
        d.copy_in_ms,
        d.run_ms,
        d.remove_ms
    );
    for (name, c) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if c.dropped_bytes > 0 {
            line.push_str(&format!(
                "; {name} truncated, {} of {} bytes dropped",
                c.dropped_bytes, c.total_bytes
            ));
        }
    }
    line
}

/// Cuts `text` to at most `budget` characters keeping its head and its tail
/// (a quarter and three quarters): the end of a test log holds the summary.
pub fn cut_middle(text: &str, budget: usize) -> String {
    let n = text.chars().count();
    if n <= budget {
        return text.to_string();
    }
    let head = budget / 4;
    let tail = budget - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!(
        "{start}\n[... {} characters omitted ...]\n{end}",
        n - head - tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_middle_keeps_head_and_tail() {
        assert_eq!(cut_middle("short", 10), "short");
        let t: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let c = cut_middle(&t, 20);
        assert!(c.starts_with(&t[..5]));
        assert!(c.ends_with(&t[85..]));
        assert!(c.contains("80 characters omitted"));
    }
}
