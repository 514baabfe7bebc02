//! The first step of connecting to an engine or a cluster: taking the
//! connection, timed apart from the first answer. Nobody listening must be
//! told at once; a busy server is slow, not gone (Podman's service took
//! over 2 s to answer with 20 runs asked of it at once on 2 cores).

use std::path::Path;
use std::time::Duration;

/// How long a server gets to take the connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a server listens.
pub(crate) enum Endpoint<'a> {
    /// A unix socket.
    Unix(&'a Path),
    /// A TCP `host:port`.
    Tcp(&'a str),
}

/// Opens and closes one connection to `to` within [`CONNECT_TIMEOUT`];
/// the error says what was seen.
pub(crate) async fn reach(to: Endpoint<'_>) -> Result<(), String> {
    let attempt = async {
        match to {
            Endpoint::Unix(p) => tokio::net::UnixStream::connect(p).await.map(drop),
            Endpoint::Tcp(hp) => tokio::net::TcpStream::connect(hp).await.map(drop),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// What a server that took the connection and gave no answer within
/// `limit` is told to be.
pub(crate) fn no_answer(limit: Duration) -> String {
    format!(
        "it took the connection but gave no answer within {}s: busy or hung",
        limit.as_secs()
    )
}
