//! The pool's side of the socket (`autodev pool`): a long-lived process
//! that keeps containers started ahead and carries out runs for other
//! autodev processes of the same user.
//!
//! The containers are this process's, exactly as a `run`'s warm pool is
//! `run`'s: they carry its PID as owner, each serves one run and is removed
//! after it, idle ones are replaced before their idle deadline, and if this
//! process dies they end by themselves (the dead-man's switch in
//! README.md). A client that goes away mid-run ends its run: the container
//! is killed and removed, as on Ctrl-C in `exec`.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use autodev::config::Limits;
use autodev::sandbox::socket::wire::{self, Frame, Tag, WireError};
use autodev::sandbox::{with_tag, AnySandbox, Command, OutputSink, RunSpec, Sandbox, SandboxError};

/// How long a new connection may take to say what it wants.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How long a prepared run waits for its start: a waiting container is
/// thrown away after this anyway (see `docker::warm::MAX_IDLE`).
const START_WAIT: Duration = Duration::from_secs(120);
/// How often the pool tops itself up, replacing containers that waited too long.
const REFRESH: Duration = Duration::from_secs(20);
/// Settings besides the pool's own that it keeps containers ahead for.
const MAX_KEYS: usize = 4;
/// Settings no run used for this long are not warmed any more.
const KEY_IDLE: Duration = Duration::from_secs(600);
/// How long, at shutdown, runs under way get to end and remove their containers.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// Live output queued for a slow client beyond this is not forwarded live
/// (the outcome still holds what the output limit keeps): a client that
/// stops reading must not grow the pool's memory.
const MAX_QUEUED: usize = 8 << 20;

/// The pool's listening socket; the file is removed when it is dropped.
#[derive(Debug)]
pub struct PoolSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The user the socket belongs to: the only one served.
    uid: u32,
}

impl PoolSocket {
    /// Listens at `path`, readable and writable by this user only. A stale
    /// socket there (its pool is gone) is replaced; a live one, or a file
    /// that is not a socket, is an error.
    pub fn bind(path: &Path) -> Result<Self, SandboxError> {
        let settings =
            |why: String| SandboxError::Settings(format!("--socket {}: {why}", path.display()));
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(settings(
                    "exists and is not a socket; pick another path".into(),
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(settings(
                    "a pool already serves it; stop that one or pick another path".into(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| settings(format!("removing the stale socket: {e}")))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| settings(e.to_string()))?;
        let mut socket = PoolSocket {
            listener,
            path: path.to_path_buf(),
            uid: 0,
        };
        // Other users are refused twice: by the file's mode, and by the
        // peer check on each connection (the mode is set after the bind).
        // On an error here the drop removes the file.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| settings(e.to_string()))?;
        socket.uid = std::fs::metadata(path)
            .map_err(|e| settings(e.to_string()))?
            .uid();
        Ok(socket)
    }
}

impl Drop for PoolSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A spec of what defines a container (image, limits, labels) and nothing
/// of a run: the settings containers are started ahead for.
pub fn settings(image: &str, limits: &Limits, labels: &[(String, String)]) -> RunSpec {
    let mut spec = RunSpec::new("/", Command::Shell("true".into()), image);
    spec.limits = limits.clone();
    spec.labels = labels.to_vec();
    spec
}

/// The settings the pool keeps containers started ahead for: its own (from
/// its command line), and each other set its clients ran with lately.
#[derive(Debug)]
struct Warmed {
    own: RunSpec,
    recent: Mutex<Vec<(RunSpec, Instant)>>,
}

impl Warmed {
    /// Whether runs of `a` and `b` use containers of one definition.
    fn same(a: &RunSpec, b: &RunSpec) -> bool {
        with_tag(&a.image) == with_tag(&b.image) && a.limits == b.limits && a.labels == b.labels
    }

    /// Notes a run of `spec`; returns the settings that are no longer
    /// warmed (the least recently used beyond [`MAX_KEYS`]).
    fn used(&self, spec: &RunSpec) -> Vec<RunSpec> {
        if Self::same(spec, &self.own) {
            return Vec::new();
        }
        // Not the client's environment values, command or workspace.
        let kept = settings(&spec.image, &spec.limits, &spec.labels);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|(s, _)| !Self::same(s, spec));
        recent.push((kept, Instant::now()));
        let over = recent.len().saturating_sub(MAX_KEYS);
        recent.drain(..over).map(|(s, _)| s).collect()
    }

    /// Drops the settings no run used for [`KEY_IDLE`]; returns them, and
    /// those still warmed.
    fn sweep(&self) -> (Vec<RunSpec>, Vec<RunSpec>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (idle, kept): (Vec<_>, Vec<_>) = recent
            .drain(..)
            .partition(|(_, at)| at.elapsed() >= KEY_IDLE);
        *recent = kept;
        let mut warm = vec![self.own.clone()];
        warm.extend(recent.iter().map(|(s, _)| s.clone()));
        (idle.into_iter().map(|(s, _)| s).collect(), warm)
    }
}

/// Serves runs on `socket` until `cancel` fires, keeping containers for
/// runs of `warm`, and of the settings clients use, started ahead. Then it
/// stops taking connections, lets the runs under way end (they are
/// interrupted, and their containers removed), removes the containers
/// still waiting, and returns.
pub async fn serve(
    sandbox: AnySandbox,
    socket: PoolSocket,
    warm: &RunSpec,
    cancel: &CancellationToken,
) {
    let warmed = Arc::new(Warmed {
        own: warm.clone(),
        recent: Mutex::default(),
    });
    let mut conns = JoinSet::new();
    let mut refresh = tokio::time::interval(REFRESH);
    let uid = socket.uid;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Replaces waiting containers that are about to expire, and
            // stops warming settings nobody uses any more.
            _ = refresh.tick() => {
                let (idle, warm) = warmed.sweep();
                for spec in idle {
                    sandbox.retire(&spec).await;
                }
                for spec in &warm {
                    sandbox.warm(spec);
                }
            }
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let client = Client { sandbox: sandbox.clone(), uid, warmed: warmed.clone() };
                    conns.spawn(client.serve(stream, cancel.clone()));
                }
                // Out of file descriptors, say: the next accept may do.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(socket);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    // Every settings it still holds containers for, idle or not.
    let (idle, warm) = warmed.sweep();
    join_all(idle.iter().chain(&warm).map(|spec| sandbox.retire(spec))).await;
}

/// What serving one client needs.
struct Client {
    sandbox: AnySandbox,
    uid: u32,
    warmed: Arc<Warmed>,
}

/// The uid of the process at the other end; `u32::MAX` (no one's) when
/// the kernel did not say, which is refused like another user.
fn peer_uid(wr: &OwnedWriteHalf) -> u32 {
    wr.as_ref().peer_cred().map_or(u32::MAX, |c| c.uid())
}

impl Client {
    /// One client's exchange.
    async fn serve(self, stream: UnixStream, cancel: CancellationToken) {
        let (sandbox, uid) = (&self.sandbox, self.uid);
        let (mut rd, mut wr) = stream.into_split();
        let Ok(Ok(request)) =
            tokio::time::timeout(REQUEST_WAIT, wire::read(&mut rd, wire::MAX_REQUEST)).await
        else {
            return;
        };
        let other = peer_uid(&wr);
        if other != uid {
            // Told to the client (after its request is read, so that it is
            // listening) and logged, not a silent reset.
            autodev::errln!(
                "autodev pool: refused a client of uid {other}: this pool serves uid {uid} only"
            );
            let e = SandboxError::Refused {
                detail: format!("this pool belongs to uid {uid} and serves only it; run your own `autodev pool --socket PATH`"),
            };
            let _ = wire::write(&mut wr, &error_frame(&e)).await;
            return;
        }
        let spec: RunSpec = match request.parse() {
            Ok(s) => s,
            Err(e) => {
                let e = SandboxError::Settings(format!("the pool could not read the request: {e}"));
                let _ = wire::write(&mut wr, &error_frame(&e)).await;
                return;
            }
        };
        let answer = match request.tag {
            Tag::Preflight => sandbox.preflight(&spec).await,
            Tag::Prepare => return self.prepared_run(&spec, rd, wr, &cancel).await,
            other => Err(SandboxError::Settings(format!(
                "the pool takes no {other:?} request here"
            ))),
        };
        let frame = match answer {
            Ok(()) => Frame::empty(Tag::Ready),
            Err(e) => error_frame(&e),
        };
        let _ = wire::write(&mut wr, &frame).await;
    }

    /// The next run of these settings finds a container started. The
    /// settings let go are retired in the background: their removal
    /// (which waits for a start under way) is not this run's.
    fn rewarm(&self, spec: &RunSpec) {
        let dropped = self.warmed.used(spec);
        if !dropped.is_empty() {
            let sandbox = self.sandbox.clone();
            tokio::spawn(async move {
                join_all(dropped.iter().map(|s| sandbox.retire(s))).await;
            });
        }
        self.sandbox.warm(spec);
    }

    /// Prepares a run, waits for the client's start, runs it and streams it back.
    async fn prepared_run(
        &self,
        spec: &RunSpec,
        mut rd: OwnedReadHalf,
        mut wr: OwnedWriteHalf,
        cancel: &CancellationToken,
    ) {
        // Not raced against `cancel`: a create abandoned mid-request would
        // still be carried out by the engine (see `DockerSandbox::prepare`).
        let sandbox = &self.sandbox;
        let prepared = match sandbox.check_limits(spec).await {
            Ok(()) => sandbox.prepare(spec).await,
            Err(e) => Err(e),
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = wire::write(&mut wr, &error_frame(&e)).await;
                return;
            }
        };
        self.rewarm(spec);
        if wire::write(&mut wr, &Frame::empty(Tag::Ready))
            .await
            .is_err()
        {
            return sandbox.abandon(prepared).await;
        }
        if !started(&mut rd, cancel).await {
            sandbox.abandon(prepared).await;
            if cancel.is_cancelled() {
                let _ = wire::write(&mut wr, &error_frame(&SandboxError::Interrupted)).await;
            }
            return;
        }

        let run_cancel = cancel.child_token();
        // The client says nothing more: any byte or the end of its stream
        // means it is gone, and so is the run.
        let watcher = tokio::spawn({
            let gone = run_cancel.clone();
            async move {
                let mut byte = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut rd, &mut byte).await;
                gone.cancel();
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn({
            let gone = run_cancel.clone();
            let queued = queued.clone();
            async move {
                let mut open = true;
                while let Some(frame) = rx.recv().await {
                    queued.fetch_sub(frame.body.len(), Ordering::SeqCst);
                    if open && wire::write(&mut wr, &frame).await.is_err() {
                        open = false;
                        gone.cancel();
                    }
                }
            }
        });
        let mut sink = ChannelSink {
            tx,
            queued,
            dropped: 0,
        };
        let result = sandbox.start(prepared, &mut sink, &run_cancel).await;
        if sink.dropped > 0 {
            let note = format!(
            "\nautodev pool: {} bytes of live output were not forwarded (the client read too slowly); the result holds what --output-limit keeps\n",
            sink.dropped
        );
            sink.push(Frame {
                tag: Tag::Stderr,
                body: note.into_bytes(),
            });
        }
        sink.push(match &result {
            Ok(outcome) => Frame::json(Tag::Done, outcome),
            Err(e) => error_frame(e),
        });
        drop(sink);
        let _ = writer.await;
        watcher.abort();
    }
}

/// Whether the client asks to start within [`START_WAIT`].
async fn started(rd: &mut OwnedReadHalf, cancel: &CancellationToken) -> bool {
    tokio::select! {
        f = wire::read(rd, wire::MAX_REQUEST) => matches!(f, Ok(Frame { tag: Tag::Start, .. })),
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(START_WAIT) => false,
    }
}

fn error_frame(e: &SandboxError) -> Frame {
    Frame::json(Tag::Error, &WireError::from(e))
}

/// Forwards live output to the client's connection, without ever waiting
/// for it (the run's own output stream must not stall on a slow client).
struct ChannelSink {
    tx: mpsc::UnboundedSender<Frame>,
    queued: Arc<AtomicUsize>,
    dropped: u64,
}

impl ChannelSink {
    fn send(&mut self, tag: Tag, bytes: &[u8]) {
        for chunk in bytes.chunks(wire::MAX_CHUNK) {
            if self.queued.load(Ordering::SeqCst) + chunk.len() > MAX_QUEUED {
                self.dropped += chunk.len() as u64;
                continue;
            }
            self.push(Frame {
                tag,
                body: chunk.to_vec(),
            });
        }
    }

    /// Queues a frame, whatever its size (the writer counts it off).
    fn push(&mut self, frame: Frame) {
        self.queued.fetch_add(frame.body.len(), Ordering::SeqCst);
        let _ = self.tx.send(frame);
    }
}

impl OutputSink for ChannelSink {
    fn stdout(&mut self, bytes: &[u8]) {
        self.send(Tag::Stdout, bytes);
    }
    fn stderr(&mut self, bytes: &[u8]) {
        self.send(Tag::Stderr, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_refuses_a_live_pool_and_other_files_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.sock");
        let first = PoolSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "only this user may connect");
        let e = PoolSocket::bind(&path).unwrap_err().to_string();
        assert!(e.contains("already serves"), "{e}");
        drop(first);
        assert!(!path.exists(), "the socket file goes with the pool");
        // A pool that died without removing its socket: nobody listens,
        // the file stays.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let stale = PoolSocket::bind(&path);
        assert!(stale.is_ok(), "{stale:?}");

        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "mine").unwrap();
        let e = PoolSocket::bind(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }

    #[test]
    fn the_pool_warms_its_own_settings_and_the_last_few_clients_used() {
        let spec = |image: &str| RunSpec::new("/", "true", image);
        let warmed = Warmed {
            own: spec("autodev/python"),
            recent: Mutex::default(),
        };
        // Its own settings, however the image is spelled, are never let go.
        assert!(warmed.used(&spec("autodev/python:latest")).is_empty());
        for i in 0..MAX_KEYS {
            assert!(warmed.used(&spec(&format!("img{i}"))).is_empty());
        }
        // Used again: the most recent now.
        assert!(warmed.used(&spec("img0")).is_empty());
        let dropped = warmed.used(&spec("new"));
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].image, "img1", "the least recently used goes");
        let (idle, warm) = warmed.sweep();
        assert!(idle.is_empty());
        assert_eq!(warm.len(), MAX_KEYS + 1);
        assert_eq!(warm[0].image, "autodev/python");
        // Unused for long: let go at the next sweep.
        warmed.recent.lock().unwrap()[0].1 = Instant::now() - KEY_IDLE;
        let (idle, warm) = warmed.sweep();
        assert_eq!(idle.len(), 1);
        assert_eq!(warm.len(), MAX_KEYS);
    }

    #[tokio::test]
    async fn a_slow_client_costs_forwarded_output_not_memory() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sink = ChannelSink {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: 0,
        };
        let chunk = vec![b'x'; wire::MAX_CHUNK];
        for _ in 0..(MAX_QUEUED / wire::MAX_CHUNK + 10) {
            sink.stdout(&chunk);
        }
        assert_eq!(sink.dropped, 10 * wire::MAX_CHUNK as u64);
        let mut got = 0;
        while let Ok(f) = rx.try_recv() {
            assert_eq!(f.tag, Tag::Stdout);
            got += f.body.len();
        }
        assert_eq!(got, MAX_QUEUED);
    }
}
