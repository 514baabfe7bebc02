//! Reporting: the JSON Lines transcript ([`transcript`]) and what the
//! terminal shows ([`ui`]).

pub mod transcript;
pub mod ui;

pub use transcript::Transcript;
pub use ui::{Ui, UiMode};

use crate::events::TestRun;
use crate::sandbox::{Durations, Outcome, Verdict};

/// One line for the terminal after a run.
pub fn outcome_line(o: &Outcome) -> String {
    line(
        o.verdict,
        o.exit_code,
        &o.durations,
        [
            ("stdout", o.stdout.dropped_bytes, o.stdout.total_bytes),
            ("stderr", o.stderr.dropped_bytes, o.stderr.total_bytes),
        ],
    )
}

/// The same line for a test run of the loop.
pub fn test_line(t: &TestRun) -> String {
    line(
        t.verdict,
        t.exit_code,
        &t.durations,
        [
            ("stdout", t.stdout_dropped, t.stdout_bytes),
            ("stderr", t.stderr_dropped, t.stderr_bytes),
        ],
    )
}

fn line(
    verdict: Verdict,
    exit_code: Option<i64>,
    d: &Durations,
    streams: [(&str, u64, u64); 2],
) -> String {
    let mut line = format!(
        "autodev: {} (exit {}) in {:.2}s [create {} ms, copy-in {} ms, run {} ms, remove {} ms]",
        verdict,
        exit_code.map_or_else(|| "-".to_string(), |c| c.to_string()),
        d.total_ms as f64 / 1000.0,
        d.create_ms,
        d.copy_in_ms,
        d.run_ms,
        d.remove_ms
    );
    for (name, dropped, total) in streams {
        if dropped > 0 {
            line.push_str(&format!(
                "; {name} truncated, {dropped} of {total} bytes dropped"
            ));
        }
    }
    line
}
