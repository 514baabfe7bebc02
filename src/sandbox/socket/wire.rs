//! What a pool and its clients say to each other on the socket: frames of a
//! one-byte tag, a four-byte big-endian length and that many bytes.
//!
//! A connection carries one exchange. The client sends a request (`Prepare`
//! or `Preflight`, with the run's spec as JSON); the pool answers `Ready` or
//! `Error`. After `Ready` to a `Prepare`, the client
//! sends `Start`, and the pool streams `Stdout` and `Stderr` chunks as the
//! command writes them, then `Done` (the outcome as JSON) or `Error`. A
//! client that goes away (its end of the socket closes) abandons the run:
//! the pool removes its container.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::sandbox::SandboxError;

/// A request from a client is never larger (a spec is a few kB).
pub const MAX_REQUEST: u32 = 1 << 20;
/// An answer from the pool is never larger (an outcome holds the captured
/// output, bounded by the run's own output limit).
pub const MAX_ANSWER: u32 = 1 << 30;
/// Output is forwarded in chunks of at most this many bytes.
pub const MAX_CHUNK: usize = 1 << 16;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Client: take a container for this spec (JSON `RunSpec`).
    Prepare,
    /// Client: start the prepared run.
    Start,
    /// Client: check, once, that runs of this spec can be carried out.
    Preflight,
    /// Pool: done as asked (prepared, checked).
    Ready,
    /// Pool: a chunk of the command's standard output.
    Stdout,
    /// Pool: a chunk of the command's standard error.
    Stderr,
    /// Pool: the run ended (JSON `Outcome`).
    Done,
    /// Pool: it could not (JSON [`WireError`]).
    Error,
}

impl Tag {
    fn byte(self) -> u8 {
        match self {
            Tag::Prepare => b'P',
            Tag::Start => b'S',
            Tag::Preflight => b'F',
            Tag::Ready => b'R',
            Tag::Stdout => b'o',
            Tag::Stderr => b'e',
            Tag::Done => b'D',
            Tag::Error => b'X',
        }
    }

    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            b'P' => Tag::Prepare,
            b'S' => Tag::Start,
            b'F' => Tag::Preflight,
            b'R' => Tag::Ready,
            b'o' => Tag::Stdout,
            b'e' => Tag::Stderr,
            b'D' => Tag::Done,
            b'X' => Tag::Error,
            _ => return None,
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other end closed the connection between frames.
    #[error("the connection closed")]
    Closed,
    /// Reading failed, or the connection closed inside a frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a frame of this protocol.
    #[error("{0}")]
    Malformed(String),
}

/// One frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub tag: Tag,
    /// Its bytes.
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame whose body is `value` as JSON.
    pub fn json(tag: Tag, value: &impl Serialize) -> Frame {
        Frame {
            tag,
            // Specs, outcomes and errors are plain data: always serializable.
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// A frame with no body.
    pub fn empty(tag: Tag) -> Frame {
        Frame {
            tag,
            body: Vec::new(),
        }
    }

    /// The body as JSON of type `T`.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| FrameError::Malformed(format!("a {:?} frame: {e}", self.tag)))
    }
}

/// Writes one frame.
pub async fn write(w: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> std::io::Result<()> {
    let len = u32::try_from(frame.body.len())
        .map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    let mut head = [0u8; 5];
    head[0] = frame.tag.byte();
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(&frame.body).await?;
    w.flush().await
}

/// Reads one frame of at most `max` bytes.
pub async fn read(r: &mut (impl AsyncRead + Unpin), max: u32) -> Result<Frame, FrameError> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag).await? == 0 {
        return Err(FrameError::Closed);
    }
    let tag = Tag::from_byte(tag[0])
        .ok_or_else(|| FrameError::Malformed(format!("unknown frame tag {:#04x}", tag[0])))?;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::Malformed(format!(
            "a {tag:?} frame of {len} bytes (at most {max})"
        )));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(Frame { tag, body })
}

/// A [`SandboxError`] as it crosses the socket: its words and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The error's message.
    pub message: String,
    /// In what the user asked for.
    pub usage: bool,
    /// Trying again may succeed.
    pub transient: bool,
}

impl From<&SandboxError> for WireError {
    fn from(e: &SandboxError) -> Self {
        WireError {
            message: e.to_string(),
            usage: e.is_usage(),
            // A pool that stops mid-run is a host going away.
            transient: e.is_transient() || matches!(e, SandboxError::Interrupted),
        }
    }
}

impl WireError {
    /// The error a client reports, naming the pool it came from.
    pub fn into_error(self, socket: &str) -> SandboxError {
        SandboxError::Served {
            socket: socket.to_string(),
            message: self.message,
            usage: self.usage,
            transient: self.transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &Frame::empty(Tag::Start)).await.unwrap();
        write(
            &mut a,
            &Frame {
                tag: Tag::Stdout,
                body: vec![0xff, 0, 1],
            },
        )
        .await
        .unwrap();
        assert_eq!(read(&mut b, 10).await.unwrap(), Frame::empty(Tag::Start));
        let f = read(&mut b, 10).await.unwrap();
        assert_eq!((f.tag, f.body), (Tag::Stdout, vec![0xff, 0, 1]));

        // Too long for the reader's bound.
        write(
            &mut a,
            &Frame {
                tag: Tag::Done,
                body: vec![b'x'; 11],
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            read(&mut b, 10).await,
            Err(FrameError::Malformed(_))
        ));

        // An unknown tag.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"Z\0\0\0\0").await.unwrap();
        assert!(matches!(
            read(&mut b, 10).await,
            Err(FrameError::Malformed(_))
        ));

        // Closed between frames, and inside one.
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(matches!(read(&mut b, 10).await, Err(FrameError::Closed)));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"o\0\0\0\x05ab").await.unwrap();
        drop(a);
        assert!(matches!(read(&mut b, 10).await, Err(FrameError::Io(_))));
    }

    #[test]
    fn an_error_keeps_its_kind_across_the_socket() {
        let usage = WireError::from(&SandboxError::Settings("bad".into())).into_error("/s");
        assert!(usage.is_usage() && !usage.is_transient());
        assert_eq!(usage.to_string(), "the pool at /s: bad");
        let lost = WireError::from(&SandboxError::LostHost {
            engine: "e".into(),
            op: "run",
            detail: "d".into(),
        })
        .into_error("/s");
        assert!(lost.is_transient() && !lost.is_usage());
        let stopped = WireError::from(&SandboxError::Interrupted).into_error("/s");
        assert!(
            stopped.is_transient(),
            "a pool that stops is a host going away"
        );
    }
}
