//! The OpenAI Agents SDK (`openai-agents` from PyPI) using autodev as its
//! sandbox through `autodev_client.agents`, against a real `autodev serve`
//! on the real Docker engine: the SDK's session operations, and a sandbox
//! agent run end to end (the SDK's scripted model, no network model) whose
//! commands run in autodev. The run is the README's quick start.

mod common;

use std::path::Path;
use std::process::Command;

use common::service::{add_key, stop_clean, Service};

fn run_python(py: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(py);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd
        .env("PYTHONPATH", root.join("clients/python"))
        // Nothing of the SDK may reach a service off this host.
        .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the key `k` has had, from the service's usage route.
async fn runs_of(svc: &Service, k: &str) -> u64 {
    let v: serde_json::Value = reqwest::Client::new()
        .get(svc.at("/v1/usage"))
        .bearer_auth(k)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["runs"]
        .as_u64()
        .unwrap_or_else(|| panic!("usage without runs: {v}"))
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_agents_sdk_runs_its_session_operations_and_an_agent_through_autodev() {
    let _sb = require_docker!();
    let py = common::pypi_python("agents.sandbox, httpx");
    let label = common::test_label("agents-sdk");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "agent", &[]);
    let svc = Service::start(dir.path(), &label, &[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    let out = run_python(
        &py,
        &[&root.join("tests/serve/agents_sdk.py"), &svc.url, &k],
    );
    assert!(out.contains("all session operations held"), "{out}");

    // The example: a scripted model's three commands, each a run of this key.
    let before = runs_of(&svc, &k).await;
    let out = run_python(
        &py,
        &[
            &root.join("examples/agents/agent.py"),
            &"--url",
            &svc.url,
            &"--token",
            &k,
            &"--project",
            &root.join("examples/buggy_add/project"),
            &"--replay",
            &root.join("examples/agents/replay.json"),
        ],
    );
    assert_eq!(runs_of(&svc, &k).await - before, 3, "{out}");
    let tools: Vec<&str> = out
        .split("[tool] ")
        .skip(1)
        .map(|s| s.split("\n[tool]").next().unwrap_or(s))
        .collect();
    assert_eq!(tools.len(), 3, "{out}");
    assert!(
        tools[0].contains("2 failed") && tools[0].contains("exited with code 1"),
        "the first test run fails in the sandbox: {}",
        tools[0]
    );
    assert!(
        tools[2].contains("2 passed") && tools[2].contains("exited with code 0"),
        "the agent's fix reached the next fresh container: {}",
        tools[2]
    );
    assert!(
        out.contains("--- /workspace/calc.py") && out.contains("return a + b"),
        "the fix came back into the session: {out}"
    );
    let original =
        std::fs::read_to_string(root.join("examples/buggy_add/project/calc.py")).unwrap();
    assert!(
        original.contains("return a - b"),
        "the example's own files are untouched"
    );
    stop_clean(svc, &label);
}
