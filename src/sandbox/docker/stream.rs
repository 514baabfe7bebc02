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
use crate::sandbox::output::{judge, ReportAt, RunOutput};
use crate::sandbox::wrapper;
use crate::sandbox::{Durations, Outcome, OutputSink, RunSpec, SandboxError, TimeLimit, Verdict};
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

impl DockerSandbox {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn drive(
        &self,
        (id, nonce, report_at): (&str, &str, &ReportAt),
        (mut stream, mut input, mut exit): (Output, Input, ExitWait),
        removal: &mut Removal,
        spec: &RunSpec,
        manifest: Manifest,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
        durations: &mut Durations,
        tree: &mut Option<String>,
    ) -> Result<Outcome, SandboxError> {
        // One heartbeat for the whole run: a cut link shows no error, calls
        // just hang.
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        let started = Instant::now();
        let limits = &spec.limits;
        let header = wrapper::header(
            nonce,
            report_at.path(),
            limits
                .cpu_time
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            limits.timeout + DEADLINE_GRACE,
            &spec.env,
            &spec.command,
        );

        // The tar is produced on a blocking thread and fed to the container's
        // stdin through a small channel: memory stays bounded whatever the size.
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

        let mut output = RunOutput::new(nonce, limits.output_limit, report_at.clone())
            .expect_report(&spec.command);
        let mut timed_out = false;
        let mut stream_error = None;
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);

        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    feeder.abort();
                    return Err(SandboxError::Interrupted);
                }
                _ = &mut deadline => {
                    timed_out = true;
                    break;
                }
                _ = lost.cancelled() => {
                    feeder.abort();
                    return Err(self.lost("the run", format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs())));
                }
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                        output.stdout(&message, sink);
                    }
                    Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                        output.stderr(&message, sink);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        stream_error = Some(e);
                        break;
                    }
                }
            }
        }
        let ended = Instant::now();
        feeder.abort();
        // The packer is done once the wrapper has unpacked everything (or
        // the copy failed); it is never waited for.
        let packed = if packer.is_finished() {
            packer.await.ok()
        } else {
            packer.abort();
            None
        };
        let packed_err = match packed {
            Some(Ok(hash)) => {
                *tree = Some(hash);
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        let ready_at = output.ready_at();
        let ready = ready_at.unwrap_or(ended);
        durations.copy_in_ms = ms(ready - started);
        durations.run_ms = ms(ended - ready);

        if timed_out {
            // Before the kill: how much CPU did the run get? Far less than
            // the wall clock allowed means the host was busy, not the code slow.
            let starved = self.cpu_ns(id).await.map(|used| {
                let allowed = spec.limits.timeout.as_nanos() as f64 * spec.limits.cpus;
                (used as f64) < allowed * STARVED_SHARE
            });
            // Kill now so the clock stops; removal (forced) follows in `run`.
            // If the daemon cannot kill it, the verdict is the daemon's fault.
            let kill = tokio::time::timeout(
                CLEANUP_TIMEOUT,
                self.docker.kill_container(
                    id,
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
            let f = output.finish(sink);
            return Ok(Outcome {
                timed_out_by: Some(TimeLimit::WallClock),
                starved,
                durations: *durations,
                tests: f.tests,
                tests_note: f.tests_note,
                ..Outcome::new(Verdict::TimedOut, None, f.stdout, f.stderr)
            }
            .with_usage(None));
        }
        if let Some(e) = stream_error {
            return Err(self.lost("output streaming", e.to_string()));
        }
        if ready_at.is_none() {
            // The packer's own error says more than tar's complaint about a cut stream.
            if let Some(e) = packed_err {
                return Err(SandboxError::Workspace(e));
            }
            return Err(SandboxError::CopyFailed(output.copy_failure()));
        }

        let exit_code = exit.status(self, id, &lost, removal).await?;
        let f = output.finish(sink);
        // The cgroup's count of OOM kills, as the wrapper read it when the
        // command ended (a child killed while the command lived on counts).
        // A SIGKILL with no count (the wrapper died with its command, as
        // under gVisor, whose sentry takes the whole sandbox down) asks the
        // engine, which saw the kernel's OOM event.
        let count = f.usage.and_then(|u| u.oom_kills);
        let oom = match count {
            Some(n) => n > 0,
            None if exit_code == SIGKILL_STATUS && !f.cpu_exceeded => {
                self.oom_seen(id, &exit).await
            }
            None => false,
        };
        let (verdict, note) = judge(exit_code, oom, &f);
        Ok(Outcome {
            verdict,
            timed_out_by: f.cpu_exceeded.then_some(TimeLimit::CpuTime),
            durations: *durations,
            tests: f.tests,
            tests_note: note.or(f.tests_note),
            ..Outcome::new(Verdict::Passed, Some(exit_code), f.stdout, f.stderr)
        }
        .with_usage(f.usage))
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
