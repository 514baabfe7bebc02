//! For unit tests of connecting: an API server that takes connections and
//! answers late or never, over any stream (a unix socket for Docker, TCP
//! for Kubernetes).

use std::io::{Read, Write};
use std::time::Duration;

/// Serves each connection of `incoming` on a thread of its own: after the
/// first request arrives, waits `delay` and sends `body` as a JSON 200, or
/// with `None` never answers. A connection that sends nothing (a
/// reachability probe) is let go; no other is closed.
pub(crate) fn serve<S, I>(incoming: I, delay: Option<Duration>, body: &'static str)
where
    S: Read + Write + Send + 'static,
    I: Iterator<Item = std::io::Result<S>> + Send + 'static,
{
    std::thread::spawn(move || {
        // Until the first failed accept (a test's listener does not fail).
        for conn in incoming {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if !matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                    return;
                }
                if let Some(delay) = delay {
                    std::thread::sleep(delay);
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
                std::thread::sleep(Duration::from_secs(3600));
            });
        }
    });
}
