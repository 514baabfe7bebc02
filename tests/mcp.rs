//! `autodev mcp` with the real third-party MCP client (the `mcp` Python SDK
//! from PyPI) over stdio, and `autodev serve --mcp` with the same client
//! over streamable HTTP, on a real Docker engine.

mod common;

use std::path::Path;
use std::process::Command;

use common::service::{add_key, stop_clean, Service};

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_sdk_client_fixes_a_project_through_the_tools_and_nothing_escapes() {
    let _sb = require_docker!();
    let py = common::pypi_python("mcp.client.stdio");
    let label = common::test_label("mcp");
    let ws = common::workspace(&[
        ("calc.py", "def add(a, b):\n    return a - b\n"),
        (
            "test_calc.py",
            "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        ),
    ]);
    let out = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py"))
        .arg(common::bin())
        .arg(ws.path())
        .arg(common::image())
        .arg(format!("{}={}", label.0, label.1))
        .env("XDG_CONFIG_HOME", ws.path().join(".xdg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ws.path().parent().unwrap().join("escape").exists());
    assert_eq!(
        std::fs::read_to_string(ws.path().join("kept.txt")).unwrap(),
        "kept\n"
    );
    assert!(!ws.path().join("gone.txt").exists());
    common::wait_until(
        "no container is left",
        std::time::Duration::from_secs(30),
        || common::containers_with(&label).is_empty(),
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_sdk_client_uses_a_service_session_over_streamable_http() {
    let _sb = require_docker!();
    let py = common::pypi_python("mcp.client.streamable_http, httpx");
    let label = common::test_label("mcp-http");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "agent", &[]);
    let svc = Service::start(dir.path(), &label, &["--mcp", "--no-setup"]);
    common::succeeds(
        Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/http_client.py"))
            .args([&svc.url, &k]),
    );
    let sessions = dir.path().join("state/sessions");
    let left: Vec<_> = std::fs::read_dir(&sessions).unwrap().collect();
    assert!(
        left.is_empty(),
        "the MCP session ended with its client: {left:?}"
    );
    stop_clean(svc, &label);
}
