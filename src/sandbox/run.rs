//! The one `start` every backend shares, over one [`Running`] value.
//!
//! A backend's own part of a run is [`Backend::drive`]: copy the
//! workspace in, stream the output, enforce the clock, read the exit. What
//! is the same for every backend lives here once: the clock (the wait for
//! a slot is not the run's), the cancel check before anything starts, the
//! removal whatever happened (timed, and said when it fails), and the
//! [`RunRecord`] that lets the run be repeated.

use std::future::Future;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::output::ReportAt;
use super::{ms, Durations, Outcome, OutputSink, RunRecord, RunSpec, SandboxError};
use crate::workspace::Manifest;

/// What a backend learned about where and what it ran.
#[derive(Debug, Default)]
pub(crate) struct RunFacts {
    /// The image's id, as the host resolved it.
    pub(crate) image_id: Option<String>,
    /// The digest of the workspace tree sent in.
    pub(crate) tree: Option<String>,
    /// Where it ran, more precisely than the backend's name (a node).
    pub(crate) place: Option<String>,
}

/// A run from prepare to start: the backend's handle on what it created
/// (removed when dropped), the streams it opened, and what every run has.
pub(crate) struct Prepared<H, Io> {
    pub(crate) handle: H,
    pub(crate) io: Io,
    pub(crate) nonce: String,
    pub(crate) report: ReportAt,
    pub(crate) spec: RunSpec,
    pub(crate) manifest: Manifest,
    pub(crate) clock: RunClock,
    pub(crate) facts: RunFacts,
}

/// A run being driven: what [`Backend::drive`] reads and fills in.
pub(crate) struct Running<'a, H> {
    /// The backend's handle on what the run created.
    pub(crate) handle: H,
    /// The secret the wrapper's markers carry.
    pub(crate) nonce: String,
    /// Where the test report is looked for.
    pub(crate) report: ReportAt,
    /// What runs.
    pub(crate) spec: RunSpec,
    /// Time spent in each phase so far.
    pub(crate) durations: Durations,
    /// What the backend learned.
    pub(crate) facts: RunFacts,
    /// Where the output goes live.
    pub(crate) sink: &'a mut dyn OutputSink,
    /// Fires when the run must stop.
    pub(crate) cancel: &'a CancellationToken,
}

/// A backend's own part of a run.
pub(crate) trait Backend: Sync {
    /// What removes what the run created (when dropped, in the background).
    type Handle: Send;
    /// The streams prepare opened, consumed by the drive.
    type Io: Send;
    /// Whether a run whose host was lost still waits for its removal: a
    /// cluster's API answers when one node is lost; a lost engine would not.
    const REMOVE_LOST: bool;

    /// Copies the workspace in, runs the command, and reads its outcome.
    fn drive(
        &self,
        run: &mut Running<'_, Self::Handle>,
        io: Self::Io,
        manifest: Manifest,
    ) -> impl Future<Output = Result<Outcome, SandboxError>> + Send;

    /// Removes what the run created, and waits.
    fn remove(&self, handle: &mut Self::Handle) -> impl Future<Output = Result<(), String>> + Send;

    /// The warning when the removal failed: what is left, and how to remove it.
    fn left_behind(&self, handle: &Self::Handle, why: &str) -> String;

    /// Where the run ran, for its record.
    fn place(&self, facts: &RunFacts) -> String;
}

/// Starts a prepared run on `backend`: drives it unless cancelled, removes
/// what it created whatever happened, and completes its outcome.
pub(crate) async fn start<B: Backend>(
    backend: &B,
    p: Prepared<B::Handle, B::Io>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<Outcome, SandboxError> {
    let (durations, total) = p.clock.start();
    let mut run = Running {
        handle: p.handle,
        nonce: p.nonce,
        report: p.report,
        spec: p.spec,
        durations,
        facts: p.facts,
        sink,
        cancel,
    };
    let result = if cancel.is_cancelled() {
        Err(SandboxError::Interrupted)
    } else {
        backend.drive(&mut run, p.io, p.manifest).await
    };
    // A lost engine will not answer a removal either: waiting for it would
    // only delay the retry elsewhere. The removal goes on in the background
    // when the handle drops (and `autodev clean` finds what it could not
    // remove).
    if !B::REMOVE_LOST && matches!(result, Err(SandboxError::LostHost { .. })) {
        return result;
    }
    let t_rm = Instant::now();
    let removed = backend.remove(&mut run.handle).await;
    run.durations.remove_ms = ms(t_rm.elapsed());
    run.durations.total_ms = total.ms();
    if let Err(e) = &removed {
        crate::errln!("autodev: warning: {}", backend.left_behind(&run.handle, e));
    }
    let place = backend.place(&run.facts);
    result.map(|mut o| {
        o.durations = run.durations;
        o.record = Some(RunRecord::new(
            &run.spec,
            run.facts.image_id.take(),
            run.facts.tree.take(),
            &place,
            &o,
        ));
        o
    })
}

/// A run's clock, from prepare on: how long the create took, and the
/// run's total without the wait between prepare and start (for a slot),
/// which is not the run's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    t0: std::time::Instant,
    create_ms: u64,
}

impl RunClock {
    /// Starts at prepare.
    pub(crate) fn new() -> Self {
        RunClock {
            t0: std::time::Instant::now(),
            create_ms: 0,
        }
    }

    /// The create is done.
    pub(crate) fn created(self) -> Self {
        RunClock {
            create_ms: ms(self.t0.elapsed()),
            ..self
        }
    }

    /// At start: the durations so far, and the stopwatch for the total.
    fn start(self) -> (Durations, Total) {
        let waited = self
            .t0
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(self.create_ms));
        let durations = Durations {
            create_ms: self.create_ms,
            ..Durations::default()
        };
        (
            durations,
            Total {
                t0: self.t0,
                waited,
            },
        )
    }
}

/// The stopwatch for a run's total, less its wait for a slot.
struct Total {
    t0: std::time::Instant,
    waited: std::time::Duration,
}

impl Total {
    fn ms(&self) -> u64 {
        ms(self.t0.elapsed().saturating_sub(self.waited))
    }
}
