//! What the terminal shows during `autodev run`: a header per iteration, a
//! spinner while the model thinks, the test output streamed, a summary line.
//! `--quiet` keeps only the summary; `--json` keeps stdout for one JSON object.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::sandbox::{NullSink, OutputSink, StdioSink};

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

    /// Where test output goes while it runs.
    pub fn sink(&self) -> Box<dyn OutputSink> {
        match self.mode {
            UiMode::Human => Box::new(StdioSink),
            _ => Box::new(NullSink),
        }
    }

    /// The final line (all modes but JSON, which prints its object instead).
    pub fn summary(&self, line: &str) {
        if self.mode != UiMode::Json {
            crate::errln!("{line}");
        }
    }
}
