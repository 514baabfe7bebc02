//! Runs carried out by an `autodev pool` process over a Unix socket, so
//! that separate invocations (one `exec` per test, from a script) share
//! containers started ahead.
//!
//! [`SocketSandbox`] is the client, a backend like any other behind
//! [`Sandbox`]; the pool's side is the binary's `app::pool::server`. Each run still gets a fresh
//! container that serves it alone; what the pool saves a client is the
//! create and start. The pool serves its own user only (the socket's mode
//! and a peer check), reads the client's workspace itself (the same user
//! could), and owns the containers: the ownership and dead-man rules are
//! those of any autodev process.

pub mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use self::wire::{Frame, FrameError, Tag, WireError};
use super::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError};

/// How long connecting to the pool may take.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long the pool may take to prepare a run or check a spec (it may
/// have to create a container, bounded by the engine's create timeout).
const ANSWER_WAIT: Duration = Duration::from_secs(300);
/// How long an interrupted or abandoned run may take to be removed.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// A sandbox that an `autodev pool` process provides.
#[derive(Debug, Clone)]
pub struct SocketSandbox {
    socket: PathBuf,
}

/// A run the pool has prepared: its connection, waiting for the start.
#[derive(Debug)]
pub struct SocketPrepared {
    stream: UnixStream,
}

impl SocketSandbox {
    /// The pool listening at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        SocketSandbox {
            socket: socket.into(),
        }
    }

    fn name(&self) -> String {
        self.socket.display().to_string()
    }

    async fn connect(&self) -> Result<UnixStream, SandboxError> {
        let unreachable = |detail: String| SandboxError::Served {
            socket: self.name(),
            message: format!(
                "nothing answers ({detail}): start one with `autodev pool --socket {}`",
                self.name()
            ),
            usage: false,
            transient: true,
        };
        match tokio::time::timeout(CONNECT_WAIT, UnixStream::connect(&self.socket)).await {
            Ok(Ok(s)) => Ok(s),
            // The socket is there and someone else's (it is made 0600).
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(SandboxError::Served {
                    socket: self.name(),
                    message: "the pool there belongs to another user (permission denied): each user runs their own `autodev pool --socket PATH`".into(),
                    usage: true,
                    transient: false,
                })
            }
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable("no answer within 2 s".into())),
        }
    }

    /// The pool went away, or said something this client does not understand.
    fn lost(&self, op: &'static str, e: FrameError) -> SandboxError {
        SandboxError::LostHost {
            engine: format!("autodev pool at {}", self.name()),
            op,
            detail: e.to_string(),
        }
    }

    /// Sends `request` for `spec` and waits for `Ready`.
    async fn ask(&self, tag: Tag, spec: &RunSpec) -> Result<UnixStream, SandboxError> {
        let mut spec = spec.clone();
        // The pool's working folder is not this one.
        spec.workspace = absolute(&spec.workspace)?;
        let mut stream = self.connect().await?;
        wire::write(&mut stream, &Frame::json(tag, &spec))
            .await
            .map_err(|e| self.lost("sending the request", e.into()))?;
        let answer = tokio::time::timeout(ANSWER_WAIT, wire::read(&mut stream, wire::MAX_ANSWER))
            .await
            .map_err(|_| {
                self.lost(
                    "waiting for an answer",
                    FrameError::Malformed("no answer within 300 s".into()),
                )
            })?
            .map_err(|e| self.lost("waiting for an answer", e))?;
        match answer.tag {
            Tag::Ready => Ok(stream),
            Tag::Error => Err(self.error(&answer)),
            other => Err(self.lost(
                "waiting for an answer",
                FrameError::Malformed(format!("a {other:?} frame where Ready was due")),
            )),
        }
    }

    fn error(&self, frame: &Frame) -> SandboxError {
        match frame.parse::<WireError>() {
            Ok(w) => w.into_error(&self.name()),
            Err(e) => self.lost("reading an error", e),
        }
    }

    /// Reads the run's frames to its end, forwarding output to `sink`.
    async fn stream_run(
        &self,
        rd: &mut OwnedReadHalf,
        sink: &mut dyn OutputSink,
    ) -> Result<Outcome, SandboxError> {
        loop {
            let frame = wire::read(rd, wire::MAX_ANSWER)
                .await
                .map_err(|e| self.lost("run", e))?;
            match frame.tag {
                Tag::Stdout => sink.stdout(&frame.body),
                Tag::Stderr => sink.stderr(&frame.body),
                Tag::Done => return frame.parse().map_err(|e| self.lost("run", e)),
                Tag::Error => return Err(self.error(&frame)),
                other => {
                    return Err(self.lost(
                        "run",
                        FrameError::Malformed(format!("a {other:?} frame during a run")),
                    ))
                }
            }
        }
    }
}

/// `path` made absolute against this process's working folder.
fn absolute(path: &Path) -> Result<PathBuf, SandboxError> {
    std::path::absolute(path).map_err(|e| {
        crate::workspace::WorkspaceError::Io {
            op: "resolving",
            path: path.to_path_buf(),
            source: e,
        }
        .into()
    })
}

impl Sandbox for SocketSandbox {
    type Prepared = SocketPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<SocketPrepared, SandboxError> {
        let stream = self.ask(Tag::Prepare, spec).await?;
        Ok(SocketPrepared { stream })
    }

    async fn start(
        &self,
        prepared: SocketPrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        let (mut rd, mut wr) = prepared.stream.into_split();
        wire::write(&mut wr, &Frame::empty(Tag::Start))
            .await
            .map_err(|e| self.lost("starting the run", e.into()))?;
        tokio::select! {
            r = self.stream_run(&mut rd, sink) => r,
            _ = cancel.cancelled() => {
                // Closing this side tells the pool; it kills and removes
                // the container, then answers (or closes).
                drop(wr);
                let _ = tokio::time::timeout(REMOVAL_WAIT, self.stream_run(&mut rd, &mut super::NullSink)).await;
                Err(SandboxError::Interrupted)
            }
        }
    }

    async fn abandon(&self, prepared: SocketPrepared) {
        let (mut rd, wr) = prepared.stream.into_split();
        drop(wr);
        // The pool removes the container, then closes the connection.
        let _ = tokio::time::timeout(REMOVAL_WAIT, wire::read(&mut rd, wire::MAX_ANSWER)).await;
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        self.ask(Tag::Preflight, spec).await.map(drop)
    }

    async fn clean(&self, _labels: &[(String, String)]) -> Result<usize, SandboxError> {
        Err(SandboxError::Settings(
            "a pool's containers are its own: stop the pool (Ctrl-C), or run `autodev clean` on its engine".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Captured, Verdict};
    use tokio::net::UnixListener;

    /// Output a sink got.
    #[derive(Default)]
    struct Seen(Vec<u8>, Vec<u8>);

    impl OutputSink for Seen {
        fn stdout(&mut self, b: &[u8]) {
            self.0.extend_from_slice(b);
        }
        fn stderr(&mut self, b: &[u8]) {
            self.1.extend_from_slice(b);
        }
    }

    /// A pool that reads the request, answers `Ready`, reads the start and
    /// then sends `frames` and closes.
    fn fake_pool(dir: &Path, frames: Vec<Frame>) -> PathBuf {
        let path = dir.join("pool.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let request = wire::read(&mut s, wire::MAX_REQUEST).await.unwrap();
            assert_eq!(request.tag, Tag::Prepare);
            let spec: RunSpec = request.parse().unwrap();
            assert!(spec.workspace.is_absolute(), "{:?}", spec.workspace);
            wire::write(&mut s, &Frame::empty(Tag::Ready))
                .await
                .unwrap();
            let start = wire::read(&mut s, wire::MAX_REQUEST).await.unwrap();
            assert_eq!(start.tag, Tag::Start);
            for f in frames {
                wire::write(&mut s, &f).await.unwrap();
            }
        });
        path
    }

    async fn run(frames: Vec<Frame>) -> (Result<Outcome, SandboxError>, Seen) {
        let dir = tempfile::tempdir().unwrap();
        let socket = fake_pool(dir.path(), frames);
        let mut seen = Seen::default();
        let spec = RunSpec::new("relative/ws", "true", "img");
        let r = SocketSandbox::new(socket)
            .run(&spec, &mut seen, &CancellationToken::new())
            .await;
        (r, seen)
    }

    #[tokio::test]
    async fn output_and_outcome_arrive_as_the_pool_sends_them() {
        let outcome = Outcome::new(
            Verdict::Failed,
            Some(3),
            Captured::default(),
            Captured::default(),
        );
        let (r, seen) = run(vec![
            Frame {
                tag: Tag::Stdout,
                body: b"out".to_vec(),
            },
            Frame {
                tag: Tag::Stderr,
                body: vec![0xff],
            },
            Frame::json(Tag::Done, &outcome),
        ])
        .await;
        assert_eq!(r.unwrap(), outcome);
        assert_eq!((seen.0, seen.1), (b"out".to_vec(), vec![0xff]));
    }

    #[tokio::test]
    async fn a_pool_that_goes_away_or_refuses_is_an_error_of_the_right_kind() {
        // Gone mid-run: the host failed, worth a retry.
        let (r, _) = run(vec![Frame {
            tag: Tag::Stdout,
            body: b"x".to_vec(),
        }])
        .await;
        let e = r.unwrap_err();
        assert!(e.is_transient() && e.is_host_failure(), "{e}");
        // A usage error stays one.
        let refused = WireError {
            message: "bad limits".into(),
            usage: true,
            transient: false,
        };
        let (r, _) = run(vec![Frame::json(Tag::Error, &refused)]).await;
        let e = r.unwrap_err();
        assert!(e.is_usage() && e.to_string().ends_with("bad limits"), "{e}");
        // Something that is not this protocol.
        let (r, _) = run(vec![Frame::empty(Tag::Prepare)]).await;
        assert!(r.unwrap_err().is_transient());
        // Nobody listening: one line that says what to start.
        let dir = tempfile::tempdir().unwrap();
        let e = SocketSandbox::new(dir.path().join("none.sock"))
            .preflight(&RunSpec::new("/", "true", "img"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("autodev pool --socket"), "{e}");
    }
}
