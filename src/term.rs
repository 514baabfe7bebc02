//! This process's own stdout and stderr, written without ever panicking.
//!
//! `println!` panics when the reader has gone (`autodev exec --json | head`)
//! or the disk is full (`> /dev/full`). Here a closed pipe silences the
//! stream, like other Unix tools, and any other failure is remembered so
//! the process can exit non-zero with a one-line reason ([`failure`]).

use std::io::{self, Write};
use std::sync::Mutex;

/// The first write failure other than a closed pipe, by stream.
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// Writes `bytes` to `stream` and flushes; never panics.
pub fn write(stream: Stream, bytes: &[u8]) {
    let result = match stream {
        Stream::Out => {
            let mut o = io::stdout().lock();
            o.write_all(bytes).and_then(|_| o.flush())
        }
        Stream::Err => {
            let mut e = io::stderr().lock();
            e.write_all(bytes).and_then(|_| e.flush())
        }
    };
    if let Err(e) = result {
        record(stream, &e);
    }
}

fn record(stream: Stream, e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return;
    }
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_none() {
        let name = match stream {
            Stream::Out => "standard output",
            Stream::Err => "standard error",
        };
        *failed = Some(format!("writing to {name} failed: {e}"));
    }
}

/// A line on stdout.
pub fn out_line(text: &str) {
    write(Stream::Out, format!("{text}\n").as_bytes());
}

/// A line on stderr.
pub fn err_line(text: &str) {
    write(Stream::Err, format!("{text}\n").as_bytes());
}

/// Why output was lost, if it was for a reason other than a closed pipe.
pub fn failure() -> Option<String> {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `println!` that never panics.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::term::out_line(&format!($($t)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => { $crate::term::err_line(&format!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_quiet_and_a_full_disk_is_remembered() {
        record(Stream::Out, &io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(failure(), None);
        record(Stream::Out, &io::Error::from_raw_os_error(libc::ENOSPC));
        record(Stream::Err, &io::Error::from_raw_os_error(libc::EIO));
        let f = failure().unwrap();
        assert!(f.starts_with("writing to standard output failed"), "{f}");
    }
}
