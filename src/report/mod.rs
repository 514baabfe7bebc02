//! Reporting: the JSON Lines transcript ([`transcript`]) and what the
//! terminal shows ([`ui`]).

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
