//! One run in a started container: send the run's settings and stream the
//! workspace in, demultiplex the output live, enforce the wall clock, and
//! read the exit status, the test report and the resource use into an
//! [`Outcome`].

use std::time::Instant;

use bollard::errors::Error as BollardError;
use std::time::Duration;

use bollard::query_parameters::KillContainerOptions;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::attach::{ExitWait, Input, Output};
use super::health::{Watchdog, HEARTBEAT_TIMEOUT};
use super::removal::{Removal, CLEANUP_TIMEOUT};
use super::{ms, DockerSandbox};
use crate::sandbox::feed::ChannelWriter;
use crate::sandbox::output::{judge, RunOutput};
use crate::sandbox::run::Running;
use crate::sandbox::wrapper;
use crate::sandbox::{Outcome, OutputSink, SandboxError, TimeLimit, Verdict};
use crate::workspace::{self, Manifest};

/// A run that timed out having used less than this share of the CPU time
/// its wall clock and `--cpus` allowed was starved (by a busy host), not slow.
const STARVED_SHARE: f64 = 0.25;

/// How long past its wall-clock limit a run may live when nobody ends it
/// (its owner died): then the wrapper kills everything and the engine
/// removes the container. Long enough that a live owner's clock, which
/// starts earlier, always acts first (and says `timed_out`).
pub(super) const DEADLINE_GRACE: Duration = Duration::from_secs(15);

/// The exit status of a process ended by SIGKILL (128 + 9), as the OOM
/// killer ends one.
const SIGKILL_STATUS: i64 = 137;

/// How the output stream ended.
enum Ended {
    /// The container closed it: the command is over.
    Closed,
    /// The wall clock ran out first.
    TimedOut,
    /// The engine broke it off.
    Broken(bollard::errors::Error),
}

/// The workspace on its way in: the tar produced on a blocking thread and
/// fed to the container's stdin through a small channel, so memory stays
/// bounded whatever the size.
struct Feed {
    packer: tokio::task::JoinHandle<Result<String, workspace::WorkspaceError>>,
    feeder: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Feed {
    fn start(run: &Running<'_, Removal>, mut input: Input, manifest: Manifest) -> Self {
        let limits = &run.spec.limits;
        let header = wrapper::header(
            &run.nonce,
            run.report.path(),
            limits
                .cpu_time
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            run.spec.write_back,
            limits.timeout + DEADLINE_GRACE,
            &run.spec.env,
            &run.spec.command,
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let packer = tokio::task::spawn_blocking(move || {
            workspace::write_tar(&manifest, ChannelWriter::new(tx))
        });
        let feeder = tokio::spawn(async move {
            input.write_all(&header).await?;
            while let Some(chunk) = rx.recv().await {
                input.write_all(&chunk).await?;
            }
            input.shutdown().await
        });
        Feed { packer, feeder }
    }

    /// Stops feeding; the packer's result if it is done (it is once the
    /// wrapper has unpacked everything, or the copy failed), never waited for.
    async fn stop(self) -> Option<Result<String, workspace::WorkspaceError>> {
        self.feeder.abort();
        if self.packer.is_finished() {
            self.packer.await.ok()
        } else {
            self.packer.abort();
            None
        }
    }
}

impl DockerSandbox {
    /// Docker's part of a run: feed the settings and the workspace in,
    /// stream the output until it ends or the clock runs out, then read
    /// the exit status.
    pub(super) async fn drive_run(
        &self,
        run: &mut Running<'_, Removal>,
        (mut stream, input, mut exit): (Output, Input, ExitWait),
        manifest: Manifest,
    ) -> Result<Outcome, SandboxError> {
        // One heartbeat for the whole run: a cut link shows no error, calls
        // just hang.
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        let started = Instant::now();
        let feed = Feed::start(run, input, manifest);
        let mut output =
            RunOutput::new(&run.nonce, run.spec.limits.output_limit, run.report.clone())
                .expect_report(&run.spec.command)
                .write_back(run.spec.write_back);
        let ended = tokio::select! {
            biased;
            _ = run.cancel.cancelled() => Err(SandboxError::Interrupted),
            _ = lost.cancelled() => Err(self.lost("the run", format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()))),
            e = pump(&mut stream, &mut output, run.sink, run.spec.limits.timeout) => Ok(e),
        };
        let ended_at = Instant::now();
        let packed = feed.stop().await;
        let ended = ended?;
        let packed_err = match packed {
            Some(Ok(hash)) => {
                run.facts.tree = Some(hash);
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        let ready_at = output.ready_at();
        let ready = ready_at.unwrap_or(ended_at);
        run.durations.copy_in_ms = ms(ready - started);
        run.durations.run_ms = ms(ended_at - ready);
        match ended {
            Ended::TimedOut => return self.timed_out(run, output).await,
            Ended::Broken(e) => return Err(self.lost("output streaming", e.to_string())),
            Ended::Closed => {}
        }
        if ready_at.is_none() {
            // The packer's own error says more than tar's complaint about a cut stream.
            if let Some(e) = packed_err {
                return Err(SandboxError::Workspace(e));
            }
            return Err(SandboxError::CopyFailed(output.copy_failure()));
        }
        let id = run.handle.id.clone();
        let exit_code = exit.status(self, &id, &lost, &mut run.handle).await?;
        let f = output.finish(run.sink);
        // The cgroup's count of OOM kills, as the wrapper read it when the
        // command ended (a child killed while the command lived on counts).
        // A SIGKILL with no count (the wrapper died with its command, as
        // under gVisor, whose sentry takes the whole sandbox down) asks the
        // engine, which saw the kernel's OOM event.
        let count = f.usage.and_then(|u| u.oom_kills);
        let oom = match count {
            Some(n) => n > 0,
            None if exit_code == SIGKILL_STATUS && !f.cpu_exceeded => {
                self.oom_seen(&id, &exit).await
            }
            None => false,
        };
        let (verdict, note) = judge(exit_code, oom, &f);
        Ok(Outcome {
            verdict,
            timed_out_by: f.cpu_exceeded.then_some(TimeLimit::CpuTime),
            durations: run.durations,
            tests: f.tests,
            tests_note: note.or(f.tests_note),
            tree_back: f.tree,
            ..Outcome::new(Verdict::Passed, Some(exit_code), f.stdout, f.stderr)
        }
        .with_usage(f.usage))
    }

    /// The wall clock ran out: how much CPU the run got (far less than the
    /// clock allowed means the host was busy, not the code slow), then the
    /// kill that stops it. If the engine cannot kill it, that is the
    /// engine's fault, not a verdict.
    async fn timed_out(
        &self,
        run: &mut Running<'_, Removal>,
        output: RunOutput,
    ) -> Result<Outcome, SandboxError> {
        let id = run.handle.id.clone();
        let limits = &run.spec.limits;
        let starved = self.cpu_ns(&id).await.map(|used| {
            let allowed = limits.timeout.as_nanos() as f64 * limits.cpus;
            (used as f64) < allowed * STARVED_SHARE
        });
        // Removal (forced) follows in `start`.
        let kill = tokio::time::timeout(
            CLEANUP_TIMEOUT,
            self.docker.kill_container(
                &id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            ),
        )
        .await;
        match kill {
            Ok(Ok(()))
            | Ok(Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            })) => {}
            Ok(Err(e)) => {
                return Err(match self.err("kill at timeout", e) {
                    lost @ SandboxError::LostHost { .. } => lost,
                    other => SandboxError::KillFailed {
                        engine: self.name.clone(),
                        detail: other.to_string(),
                    },
                })
            }
            Err(_) => {
                return Err(self.lost(
                    "kill at timeout",
                    format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs()),
                ))
            }
        }
        let f = output.finish(run.sink);
        Ok(Outcome {
            timed_out_by: Some(TimeLimit::WallClock),
            starved,
            durations: run.durations,
            tests: f.tests,
            tests_note: f.tests_note,
            tree_back: f.tree,
            ..Outcome::new(Verdict::TimedOut, None, f.stdout, f.stderr)
        }
        .with_usage(None))
    }

    /// The container's CPU time so far, in ns, from the engine's stats.
    async fn cpu_ns(&self, id: &str) -> Option<u64> {
        let opts = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.docker.stats(id, Some(opts));
        let first = tokio::time::timeout(HEARTBEAT_TIMEOUT, stats.next()).await;
        match first {
            Ok(Some(Ok(s))) => s.cpu_stats?.cpu_usage?.total_usage,
            _ => None,
        }
    }
}

/// Docker's part of the one `start` both backends share.
impl crate::sandbox::run::Backend for DockerSandbox {
    type Handle = Removal;
    const REMOVE_LOST: bool = false;
    type Io = (Output, Input, ExitWait);

    async fn drive(
        &self,
        run: &mut crate::sandbox::run::Running<'_, Removal>,
        io: Self::Io,
        manifest: Manifest,
    ) -> Result<Outcome, SandboxError> {
        self.drive_run(run, io, manifest).await
    }

    async fn remove(&self, handle: &mut Removal) -> Result<(), String> {
        handle.now().await
    }

    fn left_behind(&self, handle: &Removal, why: &str) -> String {
        format!(
            "could not remove container {} on {}: {why}; run `autodev clean`",
            handle.id, self.name
        )
    }

    fn place(&self, _: &crate::sandbox::run::RunFacts) -> String {
        self.name.clone()
    }
}

/// Passes the container's output on until it ends or `timeout` passes.
async fn pump(
    stream: &mut Output,
    output: &mut RunOutput,
    sink: &mut dyn OutputSink,
    timeout: std::time::Duration,
) -> Ended {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => return Ended::TimedOut,
            item = stream.next() => match item {
                None => return Ended::Closed,
                Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                    output.stdout(&message, sink);
                }
                Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                    output.stderr(&message, sink);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ended::Broken(e),
            }
        }
    }
}
