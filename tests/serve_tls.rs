//! `autodev serve` beyond loopback: it refuses to listen there without TLS
//! and keys, serves HTTPS to real clients (curl, Python `requests`) with a
//! certificate made by openssl, never answers plain HTTP on that port, and
//! serves nobody once its last key is revoked. Clients connect to
//! 127.0.0.1 only: the wildcard bind is reached through loopback.

mod common;

use std::path::Path;
use std::process::Command;

use common::service::{add_key, stop_clean, Service};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    common::succeeds(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

fn refused(dir: &Path, args: &[&str]) -> String {
    let out = common::isolated(dir)
        .args(["serve", "--state"])
        .arg(dir.join("state"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err
}

#[test]
fn beyond_loopback_needs_tls_and_keys_and_bad_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let err = refused(dir.path(), &["--listen", addr]);
        assert!(err.contains("--https-cert"), "{err}");
    }
    let err = refused(dir.path(), &["--listen", "localhost:8844"]);
    assert!(err.contains("--listen"), "{err}");
    let (cert, key) = certificate(dir.path());
    let err = refused(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--https-cert",
            &cert,
            "--https-key",
            &key,
        ],
    );
    assert!(
        err.contains("keys add"),
        "no keys, no service beyond loopback: {err}"
    );
    add_key(dir.path(), "a", &[]);
    let err = refused(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--https-cert",
            &key,
            "--https-key",
            &key,
        ],
    );
    assert!(err.contains("--https-cert"), "{err}");
    let err = refused(dir.path(), &["--https-cert", &cert]);
    assert!(err.contains("--https-key"), "{err}");
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn https_beyond_loopback_serves_real_clients_and_an_empty_key_file_serves_nobody() {
    let _sb = require_docker!();
    let label = common::test_label("serve-tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let token = add_key(dir.path(), "a", &[]);
    let svc = Service::start_on(
        dir.path(),
        &label,
        "0.0.0.0:0",
        &["--https-cert", &cert, "--https-key", &key],
    );
    let port = svc.url.rsplit(':').next().unwrap().to_string();
    assert!(svc.url.starts_with("https://"), "{}", svc.url);
    let at = |path: &str| format!("https://127.0.0.1:{port}{path}");

    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "--cacert", &cert])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    };
    let (body, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-d",
        r#"{"runner": "echo over-tls"}"#,
        &at("/v1/runs"),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["stdout"]["text"], "over-tls\n", "{v}");
    let (body, _) = curl(&["-w", "%{http_code}", "-o", "/dev/null", &at("/v1/usage")]);
    assert_eq!(body, "401", "a key is needed");
    // Plain HTTP on the TLS port gets no answer from the service.
    let (body, code) = curl(&[&format!("http://127.0.0.1:{port}/v1/health")]);
    assert!(code != Some(0) && !body.contains("status"), "{body}");
    // A client that does not trust the certificate is not fooled into trusting it.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", &at("/v1/health")])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Python requests, verifying against the certificate.
    let py = common::pypi_python("requests");
    let script = format!(
        "import requests, sys\nr = requests.post('{}', json={{'runner': 'echo py'}}, headers={{'Authorization': 'Bearer {token}'}}, verify='{cert}', timeout=60)\nassert r.json()['stdout']['text'] == 'py\\n', r.text\nprint('ok')",
        at("/v1/runs")
    );
    common::succeeds(Command::new(py).args(["-c", &script]));

    // The last key revoked: beyond loopback, nobody is served (never everyone).
    common::succeeds(
        common::isolated(dir.path())
            .args(["serve", "keys", "revoke", "a", "--state"])
            .arg(dir.path().join("state")),
    );
    let (body, _) = curl(&[
        "-w",
        "\n%{http_code}",
        "-d",
        r#"{"runner": "true"}"#,
        &at("/v1/runs"),
    ]);
    assert!(
        body.ends_with("\n401") && body.contains("no keys"),
        "{body}"
    );
    stop_clean(svc, &label);
}
