//! What the terminal shows during `autodev run`: a header per iteration, a
//! spinner while the model thinks, the test output streamed, a summary line.
//! `--quiet` keeps only the summary; `--json` keeps stdout for one JSON object.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{Observer, RunEvent, TestStep};
use crate::term;

/// How much to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiMode {
    /// Headers, spinner, streamed test output.
    Human,
    /// The final summary only.
    Quiet,
    /// Nothing on stdout but the final JSON.
    Json,
}

/// Terminal output for one run.
#[derive(Debug)]
pub struct Ui {
    mode: UiMode,
    spinner: Option<ProgressBar>,
    fancy: bool,
}

impl Ui {
    /// A UI in `mode`; the spinner only appears on a terminal.
    pub fn new(mode: UiMode) -> Self {
        Ui {
            mode,
            spinner: None,
            fancy: std::io::stderr().is_terminal(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> UiMode {
        self.mode
    }

    /// A line of progress, on stderr.
    pub fn say(&self, line: &str) {
        if self.mode == UiMode::Human {
            crate::errln!("{line}");
        }
    }

    /// Starts the "model is thinking" spinner.
    pub fn thinking(&mut self, what: &str) {
        if self.mode != UiMode::Human {
            return;
        }
        if !self.fancy {
            crate::errln!("{what}...");
            return;
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(what.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        self.spinner = Some(pb);
    }

    /// Stops the spinner.
    pub fn done_thinking(&mut self) {
        if let Some(pb) = self.spinner.take() {
            pb.finish_and_clear();
        }
    }

    /// The final line (all modes but JSON, which prints its object instead).
    pub fn summary(&self, line: &str) {
        if self.mode != UiMode::Json {
            crate::errln!("{line}");
        }
    }
}

/// The terminal's view of a run: headers, the spinner, the test output
/// streamed, one line per test run.
impl Observer for Ui {
    fn on(&mut self, event: &RunEvent) {
        self.done_thinking();
        match event {
            RunEvent::Thinking { model } => self.thinking(&format!("asking {model}")),
            RunEvent::Testing { step, runner } => self.say(&match step {
                TestStep::Start => {
                    format!("\n── iteration 0 (the starting state) ── running: {runner}")
                }
                TestStep::Iteration { n, of } => {
                    format!("\n── iteration {n}/{of} ── running: {runner}")
                }
                TestStep::Final => format!("\n── final check ── running: {runner}"),
                TestStep::Holdout => format!("── held-out tests ── running: {runner}"),
            }),
            RunEvent::Test(t) => self.say(&super::test_line(t)),
            RunEvent::Holdout(t) => self.say(&format!("held-out tests: {}", super::test_line(t))),
            RunEvent::Patches {
                applied, refused, ..
            } => {
                for p in applied {
                    self.say(&format!("  wrote {p}"));
                }
                for r in refused {
                    self.say(&format!("  refused {:?}: {}", r.path, r.detail));
                }
            }
            RunEvent::Progress { broke, missing, .. } => {
                if !broke.is_empty() {
                    self.say(&format!(
                        "regression: {} test(s) that passed before now fail: {}",
                        broke.len(),
                        broke.join(", ")
                    ));
                }
                if !missing.is_empty() {
                    self.say(&format!(
                        "regression: {} test(s) of the last run are missing from this one: {}",
                        missing.len(),
                        missing.join(", ")
                    ));
                }
            }
            RunEvent::KeepBest {
                iteration,
                best,
                last,
            } => self.say(&format!(
                "kept the best iteration ({iteration}: {best}) instead of the last ({last})"
            )),
            RunEvent::Export { zip, files } => {
                self.say(&format!("exported {files} files to {zip}"))
            }
            RunEvent::Note(line) => self.say(line),
            _ => {}
        }
    }
    fn output(&mut self, stream: term::Stream, bytes: &[u8]) {
        if self.mode == UiMode::Human {
            term::write(stream, bytes);
        }
    }
}
