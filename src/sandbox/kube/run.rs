//! One started pod: wait until it runs, attach, stream the workspace in,
//! demultiplex the output live, enforce the wall clock, watch the node, and
//! read the exit from the container's terminated state into an [`Outcome`].

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::AttachParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::removal::PodRemoval;
use super::{pod, removal, KubeSandbox};
use crate::sandbox::feed::ChannelWriter;
use crate::sandbox::output::{judge, RunOutput};
use crate::sandbox::run::{RunFacts, Running};
use crate::sandbox::{ms, Outcome, RunSpec, SandboxError, TimeLimit, Verdict};
use crate::workspace::{self, Manifest};

/// GNU tar reading a pipe waits for whole records of this size; stdin
/// cannot be closed to end the last one on servers before the v5
/// WebSocket protocol, so the stream is padded to a whole record.
const TAR_RECORD: usize = 10_240;
/// Bound on a pod getting from created to running: scheduling (a busy
/// cluster queues pods), pulling the image, starting the container.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the exit being recorded once the output has ended.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the node of a running pod is checked: a lost node shows as
/// no error at all on the attach stream, or as its end.
const NODE_CHECK: Duration = Duration::from_secs(2);
/// Longest pause between two reads of a pod's status while waiting for it
/// to run or to end: each is on the run's critical path, and the kubelet
/// itself only looks every second.
const POLL_MAX: Duration = Duration::from_millis(200);
/// Buffer between the WebSocket and the readers.
const STREAM_BUF: usize = 64 * 1024;

/// The attached pod's output streams.
struct Streams<R> {
    stdout: R,
    stderr: R,
}

impl KubeSandbox {
    /// Kubernetes' part of a run: wait until the pod runs, attach, feed the
    /// workspace in, stream the output until it ends or the clock runs
    /// out, then read the exit from the container's terminated state.
    pub(super) async fn drive_run(
        &self,
        run: &mut Running<'_, PodRemoval>,
        manifest: Manifest,
    ) -> Result<Outcome, SandboxError> {
        let name = run.handle.name().to_string();
        let t0 = Instant::now();
        let node = self
            .wait_running(&name, &run.spec, run.cancel, &mut run.facts)
            .await?;
        // Scheduling and starting the container are part of creating it here.
        run.durations.create_ms += ms(t0.elapsed());
        let started = Instant::now();
        let ap = AttachParams::default()
            .container(pod::CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .max_stdin_buf_size(STREAM_BUF)
            .max_stdout_buf_size(STREAM_BUF)
            .max_stderr_buf_size(STREAM_BUF);
        let mut attached = self.call("attach", self.pods.attach(&name, &ap)).await?;
        let broken = || SandboxError::CopyFailed("the attach stream lacks a channel".into());
        let stdin = attached.stdin().ok_or_else(broken)?;
        let streams = Streams {
            stdout: attached.stdout().ok_or_else(broken)?,
            stderr: attached.stderr().ok_or_else(broken)?,
        };
        let (mut packer, feeder) = feed(stdin, manifest);
        let mut output =
            RunOutput::new(&run.nonce, run.spec.limits.output_limit, run.report.clone())
                .expect_report(&run.spec.command);
        let pumped = self
            .pump(run, &node, streams, &mut packer, &mut output)
            .await;
        let ended = Instant::now();
        feeder.abort();
        packer.abort();
        attached.abort();
        let timed_out = pumped?;
        let ready = output.ready_at().unwrap_or(ended);
        run.durations.copy_in_ms = ms(ready - started);
        run.durations.run_ms = ms(ended - ready);
        if timed_out {
            // Deleting the pod stops the clock; the removal finds it gone.
            let _ = removal::delete(&self.pods, &name).await;
            let f = output.finish(run.sink);
            return Ok(Outcome {
                timed_out_by: Some(TimeLimit::WallClock),
                durations: run.durations,
                tests: f.tests,
                tests_note: f.tests_note,
                ..Outcome::new(Verdict::TimedOut, None, f.stdout, f.stderr)
            }
            .with_usage(None));
        }
        if output.ready_at().is_none() {
            return Err(SandboxError::CopyFailed(output.copy_failure()));
        }
        let exit = self.wait_exit(&name, &node).await?;
        // The run is over when the cluster has recorded its exit.
        run.durations.run_ms = ms(ready.elapsed());
        Ok(ended_outcome(run, output, &exit))
    }

    /// Passes the pod's output on until both streams end or the wall clock
    /// runs out (`Ok(true)`), watching the packer and the node meanwhile.
    async fn pump<R: tokio::io::AsyncRead + Unpin>(
        &self,
        run: &mut Running<'_, PodRemoval>,
        node: &str,
        mut streams: Streams<R>,
        packer: &mut Packer,
        output: &mut RunOutput,
    ) -> Result<bool, SandboxError> {
        let (mut obuf, mut ebuf) = (vec![0; STREAM_BUF], vec![0; STREAM_BUF]);
        let (mut out_open, mut err_open) = (true, true);
        let deadline = tokio::time::sleep(run.spec.limits.timeout);
        tokio::pin!(deadline);
        let mut check = tokio::time::interval(NODE_CHECK);
        check.tick().await;
        while out_open || err_open {
            tokio::select! {
                biased;
                _ = run.cancel.cancelled() => return Err(SandboxError::Interrupted),
                _ = &mut deadline => return Ok(true),
                r = &mut *packer, if run.facts.tree.is_none() => match r {
                    Ok(Ok(hash)) => run.facts.tree = Some(hash),
                    Ok(Err(e)) => return Err(SandboxError::Workspace(e)),
                    Err(e) => return Err(SandboxError::CopyFailed(format!("packing the workspace failed: {e}"))),
                },
                _ = check.tick() => {
                    if self.node_ready(node).await == Some(false) {
                        return Err(self.lost("the run", format!("node {node} is no longer Ready")));
                    }
                }
                n = streams.stdout.read(&mut obuf), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => output.stdout(&obuf[..n], run.sink),
                },
                n = streams.stderr.read(&mut ebuf), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => output.stderr(&ebuf[..n], run.sink),
                },
            }
        }
        Ok(false)
    }

    /// Waits until the pod's container runs (it then waits on stdin);
    /// returns its node. A pod that cannot start is a [`SandboxError`] with
    /// the cluster's reason.
    async fn wait_running(
        &self,
        name: &str,
        spec: &RunSpec,
        cancel: &CancellationToken,
        facts: &mut RunFacts,
    ) -> Result<String, SandboxError> {
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut checked = Instant::now();
        let mut pending = String::from("not scheduled yet");
        loop {
            let pod = self
                .pod(name)
                .await?
                .ok_or_else(|| self.lost("start", "the pod was deleted before it ran".into()))?;
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            facts.place.clone_from(&node);
            let status = pod.status.unwrap_or_default();
            let cs = status
                .container_statuses
                .as_ref()
                .and_then(|v| v.first().cloned());
            if let Some(cs) = cs {
                if !cs.image_id.is_empty() {
                    facts.image_id = Some(cs.image_id.clone());
                }
                let state = cs.state.unwrap_or_default();
                if state.running.is_some() {
                    return Ok(node.unwrap_or_default());
                }
                if let Some(t) = state.terminated {
                    return Err(SandboxError::CopyFailed(format!(
                        "the container ended before the workspace was in ({}): the image needs /bin/sh and tar",
                        said(t.reason.as_deref(), t.message.as_deref())
                    )));
                }
                if let Some(w) = state.waiting {
                    let why = said(w.reason.as_deref(), w.message.as_deref());
                    match w.reason.as_deref().unwrap_or("") {
                        "ErrImageNeverPull" | "ErrImagePull" | "ImagePullBackOff"
                        | "InvalidImageName" => {
                            let on = node.as_deref().unwrap_or("its node");
                            return Err(SandboxError::ImageMissing {
                                image: spec.image.clone(),
                                engine: format!("{} node {on}", self.cluster),
                                hint: format!("{why}; load it onto the nodes, or allow pulls with --image-pull-policy IfNotPresent"),
                            });
                        }
                        "CreateContainerConfigError" => {
                            return Err(SandboxError::Refused { detail: why })
                        }
                        "CreateContainerError" | "RunContainerError" => {
                            return Err(SandboxError::CreateFailed {
                                engine: self.cluster.clone(),
                                detail: why,
                            })
                        }
                        _ => pending = why,
                    }
                }
            }
            if status.phase.as_deref() == Some("Failed") {
                return Err(SandboxError::CreateFailed {
                    engine: self.cluster.clone(),
                    detail: said(status.reason.as_deref(), status.message.as_deref()),
                });
            }
            if let Some(c) = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            {
                pending = said(c.reason.as_deref(), c.message.as_deref());
            }
            if let Some(n) = &node {
                if checked.elapsed() >= NODE_CHECK {
                    checked = Instant::now();
                    if self.node_ready(n).await == Some(false) {
                        return Err(self.lost("start", format!("node {n} is not Ready")));
                    }
                }
            }
            if t0.elapsed() >= START_TIMEOUT {
                return Err(SandboxError::CreateFailed {
                    engine: self.cluster.clone(),
                    detail: format!(
                        "the pod did not start within {}s: {pending}",
                        START_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(SandboxError::Interrupted),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// The container's exit once the kubelet has recorded it, or the pod's
    /// failure (`DeadlineExceeded`); a node that stops being Ready first is lost.
    async fn wait_exit(&self, name: &str, node: &str) -> Result<Exit, SandboxError> {
        let t0 = Instant::now();
        let mut checked = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let pod = self
                .pod(name)
                .await?
                .ok_or_else(|| self.lost("wait", "the pod was deleted".into()))?;
            if let Some(exit) = exit_of(&pod) {
                return Ok(exit);
            }
            if checked.elapsed() >= NODE_CHECK {
                checked = Instant::now();
                if self.node_ready(node).await == Some(false) {
                    return Err(self.lost("wait", format!("node {node} is no longer Ready")));
                }
            }
            if t0.elapsed() >= EXIT_TIMEOUT {
                return Err(self.lost(
                    "wait",
                    format!(
                        "no exit recorded within {}s of the output's end",
                        EXIT_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// How a pod's container ended.
#[derive(Debug, PartialEq, Eq)]
struct Exit {
    code: i64,
    reason: Option<String>,
}

fn exit_of(pod: &Pod) -> Option<Exit> {
    let status = pod.status.as_ref()?;
    let terminated: Option<&ContainerStateTerminated> = status
        .container_statuses
        .as_ref()
        .and_then(|v| v.first())
        .and_then(|cs| cs.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(t) = terminated {
        return Some(Exit {
            code: i64::from(t.exit_code),
            reason: t.reason.clone(),
        });
    }
    (status.phase.as_deref() == Some("Failed")
        && status.reason.as_deref() == Some("DeadlineExceeded"))
    .then(|| Exit {
        code: 137,
        reason: Some("DeadlineExceeded".into()),
    })
}

fn said(reason: Option<&str>, message: Option<&str>) -> String {
    match (reason, message) {
        (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
        (Some(r), _) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "no reason given".into(),
    }
}

/// The tar of the workspace, produced on a blocking thread.
type Packer = tokio::task::JoinHandle<Result<String, workspace::WorkspaceError>>;

/// Feeds the workspace's tar into the pod's stdin, padded to whole tar
/// records, through a small channel: memory stays bounded whatever the size.
fn feed<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut stdin: W,
    manifest: Manifest,
) -> (Packer, tokio::task::JoinHandle<std::io::Result<W>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let packer = tokio::task::spawn_blocking(move || {
        workspace::write_tar(&manifest, ChannelWriter::new(tx))
    });
    let feeder = tokio::spawn(async move {
        let mut sent = 0;
        while let Some(chunk) = rx.recv().await {
            stdin.write_all(&chunk).await?;
            sent += chunk.len();
        }
        let pad = (TAR_RECORD - sent % TAR_RECORD) % TAR_RECORD;
        stdin.write_all(&vec![0; pad]).await?;
        stdin.flush().await?;
        // Dropping stdin would close the whole stream on older servers.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(stdin)
    });
    (packer, feeder)
}

/// The outcome of a pod whose container ended by itself.
fn ended_outcome(run: &mut Running<'_, PodRemoval>, output: RunOutput, exit: &Exit) -> Outcome {
    let f = output.finish(run.sink);
    if exit.reason.as_deref() == Some("DeadlineExceeded") {
        // The cluster's backstop fired before autodev's own clock.
        return Outcome {
            timed_out_by: Some(TimeLimit::WallClock),
            durations: run.durations,
            ..Outcome::new(Verdict::TimedOut, None, f.stdout, f.stderr)
        }
        .with_usage(None);
    }
    let oom = exit.reason.as_deref() == Some("OOMKilled")
        || f.usage.and_then(|u| u.oom_kills).is_some_and(|n| n > 0);
    let (verdict, note) = judge(exit.code, oom, &f);
    Outcome {
        verdict,
        timed_out_by: f.cpu_exceeded.then_some(TimeLimit::CpuTime),
        durations: run.durations,
        tests: f.tests,
        tests_note: note.or(f.tests_note),
        ..Outcome::new(Verdict::Passed, Some(exit.code), f.stdout, f.stderr)
    }
    .with_usage(f.usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn exits_are_read_from_the_terminated_state_or_the_deadline() {
        let oom = pod(serde_json::json!({"status": {"containerStatuses": [{
            "name": "run", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}));
        assert_eq!(
            exit_of(&oom),
            Some(Exit {
                code: 137,
                reason: Some("OOMKilled".into())
            })
        );
        let deadline =
            pod(serde_json::json!({"status": {"phase": "Failed", "reason": "DeadlineExceeded"}}));
        assert_eq!(
            exit_of(&deadline).unwrap().reason.as_deref(),
            Some("DeadlineExceeded")
        );
        let running = pod(serde_json::json!({"status": {"phase": "Running"}}));
        assert_eq!(exit_of(&running), None);
        assert_eq!(
            said(Some("ErrImageNeverPull"), Some("")),
            "ErrImageNeverPull"
        );
    }
}
