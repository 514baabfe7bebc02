//! A scripted [`Sandbox`] for unit tests of the loop and batch code: it runs
//! nothing, answers from a closure, and records what it was asked.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::{Captured, Outcome, OutputSink, RunSpec, Sandbox, SandboxError, Verdict};

type Responder = dyn Fn(&RunSpec, usize) -> Result<Outcome, SandboxError> + Send + Sync;

/// Answers each run with what a closure returns for (spec, call index).
#[derive(Clone)]
pub struct FakeSandbox {
    respond: Arc<Responder>,
    calls: Arc<Mutex<Vec<RunSpec>>>,
}

impl std::fmt::Debug for FakeSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSandbox").finish_non_exhaustive()
    }
}

impl FakeSandbox {
    /// A fake answering with `respond(spec, n)` on the n-th call (from 0).
    pub fn new(
        respond: impl Fn(&RunSpec, usize) -> Result<Outcome, SandboxError> + Send + Sync + 'static,
    ) -> Self {
        FakeSandbox {
            respond: Arc::new(respond),
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A fake answering with these verdicts in order, repeating the last.
    pub fn verdicts(list: Vec<Verdict>) -> Self {
        FakeSandbox::new(move |_, n| {
            let v = list
                .get(n)
                .or(list.last())
                .copied()
                .unwrap_or(Verdict::Passed);
            Ok(outcome(v, if v == Verdict::Passed { 0 } else { 1 }, ""))
        })
    }

    /// The specs of the runs so far.
    pub fn calls(&self) -> Vec<RunSpec> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// An outcome with the given verdict, exit code and stdout.
pub fn outcome(verdict: Verdict, exit_code: i64, stdout: &str) -> Outcome {
    let out = Captured {
        text: stdout.to_string(),
        total_bytes: stdout.len() as u64,
        dropped_bytes: 0,
    };
    Outcome::new(verdict, Some(exit_code), out, Captured::default())
}

impl Sandbox for FakeSandbox {
    /// Nothing to create: the spec is all a fake run needs.
    type Prepared = RunSpec;

    async fn prepare(&self, spec: &RunSpec) -> Result<RunSpec, SandboxError> {
        Ok(spec.clone())
    }

    async fn start(
        &self,
        spec: RunSpec,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        if cancel.is_cancelled() {
            return Err(SandboxError::Interrupted);
        }
        let n = {
            let mut calls = self.calls.lock().map_err(|_| SandboxError::Interrupted)?;
            calls.push(spec.clone());
            calls.len() - 1
        };
        let result = (self.respond)(&spec, n);
        if let Ok(o) = &result {
            sink.stdout(o.stdout.text.as_bytes());
            sink.stderr(o.stderr.text.as_bytes());
        }
        result
    }

    async fn abandon(&self, _: RunSpec) {}

    async fn preflight(&self, _: &RunSpec) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn clean(&self, _: &[(String, String)]) -> Result<usize, SandboxError> {
        Ok(0)
    }
}
