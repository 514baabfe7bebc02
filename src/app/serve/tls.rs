//! HTTPS for `autodev serve` (`--https-cert`, `--https-key`): what lets it
//! listen beyond loopback. Handshakes run in their own tasks, bounded in
//! number and time, so a client that never finishes one holds nothing but
//! its own slot; the server sees only connections whose handshake is done.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshakes under way at once; more connections wait to be accepted.
const HANDSHAKES: usize = 256;

/// The server's TLS settings from a PEM certificate chain and its key:
/// TLS 1.2 and 1.3, no client certificates (callers prove who they are
/// with their key's token).
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("--https-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--https-cert {}: no certificate in it (PEM, BEGIN CERTIFICATE)",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--https-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--https-cert and --https-key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections come out with their handshake done.
pub(crate) struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, done) = mpsc::channel(64);
        let tls = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(HANDSHAKES));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    // Out of descriptors and the like: wait, as axum does.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    // A failed or slow handshake is the client's problem:
                    // the connection is dropped, nothing else.
                    if let Ok(Ok(s)) = tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await {
                        let _ = tx.send((s, addr)).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            done,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.done.recv().await {
            Some(c) => c,
            // The acceptor ended (the listener is going away): no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_certificate_files_are_one_line_errors_naming_the_flag() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = (d.path().join("c.pem"), d.path().join("k.pem"));
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = server_config(&cert, &key).unwrap_err();
        assert!(e.starts_with("--https-cert") && !e.contains('\n'), "{e}");
        let e = server_config(&d.path().join("missing"), &key).unwrap_err();
        assert!(e.contains("--https-cert"), "{e}");
    }
}
