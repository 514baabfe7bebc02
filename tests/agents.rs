//! README's "Using autodev from an agent", each quick start run as it is
//! written there, against the real Docker engine: the MCP snippet's command
//! answers a real MCP handshake; the Python client snippet runs against a
//! real `autodev serve`; and the OpenAI Agents SDK (`openai-agents` from
//! PyPI) uses autodev as its sandbox through `autodev_client.agents`: the
//! SDK's session operations, and the README's agent run (the SDK's scripted
//! model, no network model) whose commands run in autodev.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::service::{add_key, stop_clean, Service};
use common::Sandboxed;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced blocks of `lang` in README's section on agents, in order.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Using autodev from an agent\n")
        .nth(1)
        .expect("README has a section on agents")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split(&format!("```{lang}\n"))
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}

/// Runs `py` with `args`; what it printed, or the test fails with all of it.
fn run_python(py: &Path, args: &[PathBuf], env: &[(&str, &str)]) -> String {
    common::succeeds(
        Command::new(py)
            .args(args)
            .current_dir(root())
            .env("PYTHONPATH", root().join("clients/python"))
            // Nothing of the SDK may reach a service off this host.
            .env("OPENAI_AGENTS_DISABLE_TRACING", "1")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .envs(env.iter().copied()),
    )
}

/// Runs the key `k` has had, from the service's usage route.
async fn runs_of(svc: &Service, k: &str) -> u64 {
    let v: Value = reqwest::Client::new()
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
async fn the_readme_mcp_snippet_starts_a_server_that_answers_an_mcp_handshake() {
    let _sb = require_docker!();
    let label = common::test_label("readme-mcp");
    let block = &readme_blocks("json")[0];
    let conf: Value = serde_json::from_str(block).unwrap();
    let server = &conf["mcpServers"]["autodev"];
    assert_eq!(server["command"], "autodev");
    let ws = common::workspace(&[("test_a.py", "def test_a():\n    assert True\n")]);
    let args: Vec<String> = server["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("/path/to/your/project", &ws.path().to_string_lossy())
        })
        .collect();
    let mut child = common::isolated(ws.path())
        .args(&args)
        .sandboxed(&label)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for (id, method) in [(1, "initialize"), (2, "tools/list")] {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"protocolVersion": "2025-06-18"}});
        writeln!(stdin, "{msg}").unwrap();
        let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["result"].is_object(), "{answer}");
        if method == "tools/list" {
            let tools = answer["result"]["tools"].as_array().unwrap();
            assert!(tools.iter().any(|t| t["name"] == "run_tests"), "{answer}");
        }
    }
    drop(stdin);
    common::wait_until(
        "the server ends with its stdin",
        std::time::Duration::from_secs(60),
        || child.try_wait().unwrap().is_some(),
    );
    assert!(child.wait().unwrap().success());
    common::assert_no_leak(&label);
}

#[test]
fn the_example_mcp_configurations_name_what_autodev_serves() {
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(root().join("examples/agents").join(name)).unwrap(),
        )
        .unwrap()
    };
    let stdio = &read("mcp.json")["mcpServers"]["autodev"];
    assert_eq!(stdio["command"], "autodev");
    assert_eq!(stdio["args"][0], "mcp");
    let http = &read("mcp-http.json")["mcpServers"]["autodev"];
    assert!(http["url"].as_str().unwrap().ends_with("/mcp"), "{http}");
    assert!(http["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .starts_with("Bearer "));
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_python_client_snippet_runs_against_the_service() {
    let _sb = require_docker!();
    let py = common::pypi_python("httpx");
    let label = common::test_label("readme-client");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "prog", &[]);
    let svc = Service::start(dir.path(), &label, &[]);
    let block = &readme_blocks("python")[0];
    let script = dir.path().join("snippet.py");
    let code = block.replace("\"http://127.0.0.1:8844\"", "URL");
    std::fs::write(
        &script,
        format!("import os\nURL, TOKEN = os.environ['URL'], os.environ['TOKEN']\n{code}"),
    )
    .unwrap();
    let out = run_python(&py, &[script], &[("URL", &svc.url), ("TOKEN", &k)]);
    assert_eq!(out.trim(), "passed");
    stop_clean(svc, &label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_agents_sdk_runs_its_session_operations_and_the_readme_agent_through_autodev() {
    let _sb = require_docker!();
    let py = common::pypi_python("agents.sandbox, httpx");
    let label = common::test_label("agents-sdk");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "agent", &[]);
    let svc = Service::start(dir.path(), &label, &[]);

    let ops = root().join("tests/serve/agents_sdk.py");
    let out = run_python(&py, &[ops, svc.url.clone().into(), k.clone().into()], &[]);
    assert!(out.contains("all session operations held"), "{out}");

    // README's command, as written (the service's address from AUTODEV_URL).
    let line = readme_blocks("sh")[0].trim().to_string();
    let words: Vec<PathBuf> = line
        .strip_prefix("python ")
        .expect("README runs the example with python")
        .split_whitespace()
        .map(|w| PathBuf::from(w.replace("$TOKEN", &k)))
        .collect();
    let before = runs_of(&svc, &k).await;
    let out = run_python(&py, &words, &[("AUTODEV_URL", &svc.url)]);
    assert_eq!(
        runs_of(&svc, &k).await - before,
        3,
        "the scripted model's three commands, each a run of this key: {out}"
    );
    let tools: Vec<&str> = out.split("[tool] ").skip(1).collect();
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
        std::fs::read_to_string(root().join("examples/buggy_add/project/calc.py")).unwrap();
    assert!(
        original.contains("return a - b"),
        "the example's own files are untouched"
    );
    stop_clean(svc, &label);
}

/// A process of the test, killed when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_example_runs_with_an_openai_compatible_server() {
    let _sb = require_docker!();
    let py = common::pypi_python("agents.sandbox, httpx");
    let label = common::test_label("agents-chat");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "agent", &[]);
    let svc = Service::start(dir.path(), &label, &[]);
    // A Chat Completions server on loopback answering from the replay.
    let log = dir.path().join("requests.jsonl");
    let mut server = Killed(
        Command::new(&py)
            .arg(root().join("tests/agents/chat_server.py"))
            .arg(root().join("examples/agents/replay.json"))
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let base = format!("http://127.0.0.1:{}/v1", port.trim());
    let args: Vec<PathBuf> = [
        root().join("examples/agents/agent.py"),
        "--url".into(),
        svc.url.clone().into(),
        "--token".into(),
        k.clone().into(),
        "--project".into(),
        root().join("examples/buggy_add/project"),
        "--model".into(),
        "stand-in".into(),
    ]
    .into();
    let out = run_python(
        &py,
        &args,
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "not-a-key")],
    );
    assert!(out.contains("return a + b"), "the fix came back: {out}");
    let requests: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(requests.len(), 4, "three commands and the answer");
    let last = requests.last().unwrap()["body"]["messages"].to_string();
    assert!(
        last.contains("2 failed") && last.contains("2 passed"),
        "the model was sent both test runs' output from the sandbox: {last}"
    );
    stop_clean(svc, &label);
}
