//! `autodev serve` as its callers see it: a real service process on
//! loopback over the real Docker engine, asked by reqwest, curl and a
//! Python `requests` script; keys and tenants, streaming and resuming,
//! cancel, quotas, caps, draining, and no container left.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::service::{add_key, stop_clean, Service};
use common::Sandboxed;
use serde_json::{json, Value};

async fn post(c: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = c
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(c: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits until the run is in `state`.
async fn until_state(
    c: &reqwest::Client,
    svc: &Service,
    token: &str,
    id: &str,
    state: &str,
) -> Value {
    let t = Instant::now();
    loop {
        let (s, v) = get(c, &svc.at(&format!("/v1/runs/{id}")), token).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] == state {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "run {id} never became {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn project() -> Value {
    json!({
        "test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        "calc.py": "def add(a, b):\n    return a + b\n",
    })
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn keys_decide_who_runs_and_what_each_sees_and_results_match_exec() {
    let _sb = require_docker!();
    let label = common::test_label("serve-keys");
    let dir = tempfile::tempdir().unwrap();
    let alice = add_key(dir.path(), "alice", &[]);
    let bob = add_key(dir.path(), "bob", &[]);
    let small = add_key(
        dir.path(),
        "small",
        &["--max-timeout", "5s", "--max-memory", "128m"],
    );
    let svc = Service::start(
        dir.path(),
        &label,
        &["--max-body", "100000", "--body-wait", "1s"],
    );
    let c = reqwest::Client::new();
    let runs = svc.at("/v1/runs");

    // No key, or a wrong one: 401, one line.
    let r = c
        .post(&runs)
        .json(&json!({"runner": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, v) = post(&c, &runs, "adk_wrong", json!({"runner": "true"})).await;
    assert_eq!((s, v["error"]["class"].as_str()), (401, Some("auth")));

    // A real run: the result is exec --json's object, plus its id.
    let (s, passed) = post(
        &c,
        &runs,
        &alice,
        json!({"runner": "python3 -m pytest -q", "files": project()}),
    )
    .await;
    assert_eq!(s, 200, "{passed}");
    assert_eq!(passed["verdict"], "passed", "{passed}");
    assert_eq!(passed["tests"]["passed"], 1, "{passed}");
    assert!(passed["resources"]["cpu_ms"].is_u64(), "{passed}");
    let files: Vec<(String, String)> = project()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let ws = common::workspace(&files);
    let out = common::isolated(ws.path())
        .args(["exec", "--json", "--no-setup"])
        .sandboxed(&label)
        .args(["--", "python3", "-m", "pytest", "-q"])
        .output()
        .unwrap();
    let exec: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "id" && *k != "queue_ms")
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&passed),
        keys(&exec),
        "the same result object as exec --json"
    );

    let (_, failed) = post(&c, &runs, &alice, json!({"runner": ["sh", "-c", "exit 3"]})).await;
    assert_eq!(
        (failed["verdict"].as_str(), failed["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );

    // Another key's run is as missing as one that never was.
    let id = passed["id"].as_str().unwrap();
    let (s, v) = get(&c, &svc.at(&format!("/v1/runs/{id}")), &alice).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("done")));
    let (s, _) = get(&c, &svc.at(&format!("/v1/runs/{id}")), &bob).await;
    assert_eq!(s, 404);
    let r = c
        .delete(svc.at(&format!("/v1/runs/{id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .get(svc.at(&format!("/v1/runs/{id}/events")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A key's ceilings: the default for its runs, and a bound.
    let (_, v) = post(&c, &runs, &small, json!({"runner": "true"})).await;
    assert_eq!(v["record"]["limits"]["timeout"], "5s", "{v}");
    assert_eq!(v["record"]["limits"]["memory"], 128 << 20, "{v}");
    let (s, v) = post(
        &c,
        &runs,
        &small,
        json!({"runner": "true", "limits": {"timeout": "60s"}}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ceiling"),
        "{v}"
    );

    // Malformed, host paths, oversized: 400 / 413 with one line.
    let r = c
        .post(&runs)
        .bearer_auth(&alice)
        .body("{\"runner\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (s, v) = post(
        &c,
        &runs,
        &alice,
        json!({"runner": "cat x", "workspace": "/etc"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = post(
        &c,
        &runs,
        &alice,
        json!({"runner": "x", "files": {"../escape": "x"}}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &c,
        &runs,
        &alice,
        json!({"runner": "x", "files": {".git/config": "x"}}),
    )
    .await;
    assert_eq!(s, 400);
    let big = "x".repeat(200_000);
    let r = c
        .post(&runs)
        .bearer_auth(&alice)
        .json(&json!({"runner": "true", "files": {"big": big}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(!v["error"]["message"].as_str().unwrap().contains('\n'));

    // A client that sends its body too slowly is answered 408 and let go.
    let mut slow = tokio::net::TcpStream::connect(svc.url.trim_start_matches("http://"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Length: 100\r\n\r\n{{\"runner\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut answer))
        .await
        .expect("answered, not held open")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Usage: the key's own, and nobody else's.
    let (s, u) = get(&c, &svc.at("/v1/usage"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(
        (u["runs"].as_u64(), u["by_verdict"]["passed"].as_u64()),
        (Some(2), Some(1)),
        "{u}"
    );
    assert!(u["cpu_seconds"].as_f64().unwrap() > 0.0, "{u}");
    let (s, _) = get(&c, &svc.at("/v1/usage?key=bob"), &alice).await;
    assert_eq!(s, 404);

    // Metrics, without per-run labels.
    let m = c
        .get(svc.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("autodev_runs_total{verdict=\"passed\"}"), "{m}");
    assert!(!m.contains(id), "no run ids in metrics");

    // A revoked key is refused from the next request on.
    let out = common::isolated(dir.path())
        .args(["serve", "keys", "revoke", "bob", "--state"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let (s, _) = post(&c, &runs, &bob, json!({"runner": "true"})).await;
    assert_eq!(s, 401);

    // One JSON log line per request, with the key's name.
    let logged = svc.log.lock().unwrap().clone();
    let lines: Vec<Value> = logged
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["key"] == "alice" && l["route"] == "/v1/runs" && l["status"] == 200));
    assert!(
        !logged.iter().any(|l| l.contains(&alice)),
        "tokens are never logged"
    );
    stop_clean(svc, &label);
}

/// Reads a server-sent event stream to its end: (id, event, data).
async fn read_events(r: reqwest::Response) -> Vec<(u64, String, Value)> {
    let text = tokio::time::timeout(Duration::from_secs(60), r.text())
        .await
        .unwrap()
        .unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            };
            Some((
                field("id")?.parse().ok()?,
                field("event")?,
                serde_json::from_str(&field("data")?).ok()?,
            ))
        })
        .collect()
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn events_stream_live_resume_after_the_last_seen_and_cancel_ends_a_run() {
    let _sb = require_docker!();
    let label = common::test_label("serve-events");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "k", &["--max-concurrent", "1"]);
    let svc = Service::start(
        dir.path(),
        &label,
        &["--max-queue", "0", "--jobs", "2", "--warm", "0"],
    );
    let c = reqwest::Client::new();
    let runs = svc.at("/v1/runs");

    let body = json!({"runner": "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo bye >&2"});
    let r = c
        .post(&runs)
        .bearer_auth(&k)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let events = read_events(r).await;
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "numbered from 1, in order"
    );
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.first(), Some(&"queued"));
    assert_eq!(names.last(), Some(&"result"));
    let out: String = events
        .iter()
        .filter(|e| e.1 == "output" && e.2["stream"] == "stdout")
        .map(|e| e.2["text"].as_str().unwrap())
        .collect();
    assert_eq!(out, "line1\nline2\nline3\n");
    let result = &events.last().unwrap().2["result"];
    assert_eq!(result["verdict"], "passed");

    // Reconnecting after event 2 gives exactly what followed it.
    let id = result["id"].as_str().unwrap();
    let again = |h: Option<&str>, q: &str| {
        let mut rq = c
            .get(svc.at(&format!("/v1/runs/{id}/events{q}")))
            .bearer_auth(&k);
        if let Some(h) = h {
            rq = rq.header("last-event-id", h);
        }
        rq.send()
    };
    let resumed = read_events(again(Some("2"), "").await.unwrap()).await;
    assert_eq!(
        resumed.iter().map(|e| e.0).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let resumed = read_events(again(None, "?after=4").await.unwrap()).await;
    assert_eq!(resumed.first().map(|e| e.0), Some(5));

    // The key's one slot is taken and it may queue nothing: 429, Retry-After.
    let r = c
        .post(format!("{runs}?wait=false"))
        .bearer_auth(&k)
        .json(&json!({"runner": "sleep 60"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let long: Value = r.json().await.unwrap();
    let long = long["id"].as_str().unwrap().to_string();
    until_state(&c, &svc, &k, &long, "running").await;
    let r = c
        .post(&runs)
        .bearer_auth(&k)
        .json(&json!({"runner": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // Cancel: the running run ends as interrupted, its container goes.
    let t = Instant::now();
    let r = c
        .delete(svc.at(&format!("/v1/runs/{long}")))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v = until_state(&c, &svc, &k, &long, "done").await;
    assert_eq!(v["result"]["verdict"], "interrupted", "{v}");
    assert!(t.elapsed() < Duration::from_secs(30));
    common::wait_until(
        "the cancelled run's container is gone",
        Duration::from_secs(30),
        || common::containers_with(&label).is_empty(),
    );
    stop_clean(svc, &label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_finishes_the_runs_under_way_cancels_the_queued_and_leaves_nothing() {
    let _sb = require_docker!();
    let label = common::test_label("serve-drain");
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(dir.path(), &label, &["--jobs", "1", "--grace", "60s"]);
    let c = reqwest::Client::new();
    let runs = svc.at("/v1/runs");
    let submit = |cmd: &'static str| {
        let c = c.clone();
        let runs = runs.clone();
        async move {
            let r = c
                .post(format!("{runs}?wait=false"))
                .json(&json!({"runner": cmd}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let first = submit("sleep 3; echo done").await;
    let queued = submit("true").await;
    until_state(&c, &svc, "", &first, "running").await;
    // A watcher holds the first run's stream across the drain.
    let watch = c
        .get(svc.at(&format!("/v1/runs/{first}/events")))
        .send()
        .await
        .unwrap();
    let pid = i32::try_from(svc.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    common::wait_until(
        "the service says it drains",
        Duration::from_secs(10),
        || {
            svc.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("draining"))
        },
    );
    let r = c
        .post(&runs)
        .json(&json!({"runner": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let (_, q) = get(&c, &svc.at(&format!("/v1/runs/{queued}")), "").await;
    assert_eq!(
        q["result"]["verdict"], "interrupted",
        "the queued run is reported cancelled: {q}"
    );
    let events = read_events(watch).await;
    let last = &events.last().expect("events").2;
    assert_eq!(
        last["result"]["verdict"], "passed",
        "the run under way finished: {last}"
    );
    let status = svc.stop();
    assert!(status.success(), "a drained service exits 0: {status:?}");
    common::assert_no_leak(&label);
}

/// The Python with the service's third-party clients (`.ci/run` makes it).
fn python() -> PathBuf {
    common::pypi_python("requests, openapi_spec_validator, httpx")
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn curl_and_python_requests_use_every_route_and_the_openapi_document_validates() {
    let _sb = require_docker!();
    let py = python();
    let label = common::test_label("serve-clients");
    let dir = tempfile::tempdir().unwrap();
    let a = add_key(dir.path(), "a", &[]);
    let b = add_key(dir.path(), "b", &[]);
    let svc = Service::start(dir.path(), &label, &["--mcp"]);

    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-H"])
        .arg(format!("Authorization: Bearer {a}"))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"runner": "echo from-curl", "files": {"a.txt": "x"}}"#)
        .arg(svc.at("/v1/runs"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["verdict"], "passed", "{v}");
    assert_eq!(v["stdout"]["text"], "from-curl\n", "{v}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    common::succeeds(Command::new(&py).arg(&script).args([&svc.url, &a, &b]));
    stop_clean(svc, &label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn session_files_are_confined_and_capped_and_sessions_survive_a_restart() {
    let _sb = require_docker!();
    let label = common::test_label("serve-sessions");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "k", &[]);
    let other = add_key(dir.path(), "other", &[]);
    // A small copy cap is the session cap.
    let mut svc = Service::start(dir.path(), &label, &["--max-copy", "4096", "--warm", "0"]);
    let c = reqwest::Client::new();
    let (s, v) = post(
        &c,
        &svc.at("/v1/sessions"),
        &k,
        json!({"files": {"a.txt": "one"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let file = |p: &str| svc.at(&format!("/v1/sessions/{id}/files/{p}"));
    let put = |p: String, body: Vec<u8>| c.put(p).bearer_auth(&k).body(body).send();
    for (path, why) in [
        ("..%2F..%2Fescape", "traversal"),
        ("d/..%2F..%2Fescape", "traversal through a folder"),
        ("%2Fetc%2Fpasswd", "an absolute path"),
        (".git/config", "VCS metadata"),
        ("sub/.git/hooks/pre-commit", "nested VCS metadata"),
        (".autodev-workspace", "autodev's marker"),
    ] {
        let r = put(file(path), b"x".to_vec()).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{why}: {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["class"], "usage", "{why}: {v}");
    }
    let r = put(file("big.bin"), vec![0u8; 5000]).await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "over the session cap");
    let r = put(file("bin/data"), vec![0, 159, 146, 150]).await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let got = c
        .get(file("bin/data"))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &[0, 159, 146, 150], "binary files round-trip");
    let r = c.get(file("nope")).bearer_auth(&k).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .get(file("a.txt"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "another key's session does not exist for it"
    );
    let r = put(file("x"), b"x".to_vec()).await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let tree: Vec<String> = walk(&dir.path().join("state"));
    assert!(!tree.iter().any(|p| p.ends_with("escape")), "{tree:?}");
    let (s, v) = post(
        &c,
        &svc.at(&format!("/v1/sessions/{id}/runs")),
        &k,
        json!({"runner": "cat a.txt", "write_back": "yes"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    assert!(svc.stop().success());
    let svc = Service::start(dir.path(), &label, &["--max-copy", "4096", "--warm", "0"]);
    let (s, v) = post(
        &c,
        &svc.at(&format!("/v1/sessions/{id}/runs")),
        &k,
        json!({"runner": "cat a.txt"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["stdout"]["text"], "one",
        "the session survived the restart: {v}"
    );
    stop_clean(svc, &label);

    // A key holds at most --max-sessions: the one that survived and one
    // more here; the next is 429 until one is removed.
    let svc = Service::start(dir.path(), &label, &["--max-sessions", "2", "--warm", "0"]);
    let (s, _) = post(&c, &svc.at("/v1/sessions"), &k, json!({})).await;
    assert_eq!(s, 201);
    let r = c
        .post(svc.at("/v1/sessions"))
        .bearer_auth(&k)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["class"], "quota", "{v}");
    let (s, _) = post(&c, &svc.at("/v1/sessions"), &other, json!({})).await;
    assert_eq!(s, 201, "another key has room of its own");
    let r = c
        .delete(svc.at(&format!("/v1/sessions/{id}")))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (s, _) = post(&c, &svc.at("/v1/sessions"), &k, json!({})).await;
    assert_eq!(s, 201, "room again once one is removed");
    stop_clean(svc, &label);
}

/// Every path under `root`.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_runs_each_task_once_through_the_queue_and_resumes_after_a_restart() {
    let _sb = require_docker!();
    let label = common::test_label("serve-batch");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "k", &[]);
    let other = add_key(dir.path(), "other", &[]);
    let args = ["--jobs", "1", "--grace", "0s", "--warm", "0"];
    let mut svc = Service::start(dir.path(), &label, &args);
    let c = reqwest::Client::new();
    // 12 tasks of 0.3 s, every fourth failing; a bad line; a duplicate.
    let mut lines: Vec<String> = (0..12)
        .map(|i| json!({"id": format!("t{i}"), "runner": format!("sleep 0.3; exit {}", u8::from(i % 4 == 0))}).to_string())
        .collect();
    lines.push("{not json".into());
    lines.push(json!({"id": "t1", "runner": "true"}).to_string());
    let r = c
        .post(svc.at("/v1/batches"))
        .bearer_auth(&k)
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let b: Value = r.json().await.unwrap();
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["total"], 14);
    let (s, _) = get(&c, &svc.at(&format!("/v1/batches/{id}")), &other).await;
    assert_eq!(s, 404, "another key's batch does not exist for it");
    // Stop the service part-way: the run under way is cut, and has no result.
    let t = Instant::now();
    loop {
        let (_, v) = get(&c, &svc.at(&format!("/v1/batches/{id}")), &k).await;
        if v["done"].as_u64().unwrap() >= 6 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(svc.stop().success());
    common::assert_no_leak(&label);
    let svc = Service::start(dir.path(), &label, &args);
    let text = c
        .get(svc.at(&format!("/v1/batches/{id}/results?wait=true")))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        results.len(),
        14,
        "one result per task line, none twice: {text}"
    );
    let mut lines_seen: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    lines_seen.sort();
    assert_eq!(lines_seen, (1..=14).collect::<Vec<_>>());
    for r in &results {
        let want = match r["line"].as_u64().unwrap() {
            13 | 14 => "invalid_task",
            n if (n - 1) % 4 == 0 => "failed",
            _ => "passed",
        };
        assert_eq!(r["verdict"], want, "{r}");
    }
    let (_, v) = get(&c, &svc.at(&format!("/v1/batches/{id}")), &k).await;
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["by_verdict"]["passed"], 9, "{v}");
    assert!(svc
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("resuming batch")));
    stop_clean(svc, &label);
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_dependencies_are_installed_once_by_the_set_up_phase_then_cached() {
    let _sb = require_docker!();
    let label = common::test_label("serve-env");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "k", &[]);
    let svc = Service::start(dir.path(), &label, &["--warm", "0"]);
    let c = reqwest::Client::new();
    let nonce = format!("{:x}", fastrand::u64(..));
    let files = json!({
        "requirements.txt": format!("# {nonce}\nsix==1.16.0\n"),
        "test_six.py": "import six\n\ndef test_six():\n    assert six.PY3\n",
    });
    let test = "python3 -m pytest -q -p no:cacheprovider";
    let (s, v) = post(
        &c,
        &svc.at("/v1/runs"),
        &k,
        json!({"runner": test, "files": files, "setup": false}),
    )
    .await;
    assert_eq!(
        (s, v["verdict"].as_str()),
        (200, Some("failed")),
        "without the set-up the import fails: {v}"
    );
    let (_, ses) = post(&c, &svc.at("/v1/sessions"), &k, json!({"files": files})).await;
    let runs = svc.at(&format!(
        "/v1/sessions/{}/runs",
        ses["id"].as_str().unwrap()
    ));
    let (_, first) = post(&c, &runs, &k, json!({"runner": test})).await;
    assert_eq!(first["verdict"], "passed", "{first}");
    let env = &first["record"]["environment"];
    assert_eq!(env["cache"], "miss", "{env}");
    let (_, second) = post(&c, &runs, &k, json!({"runner": test})).await;
    assert_eq!(second["verdict"], "passed", "{second}");
    assert_eq!(second["record"]["environment"]["cache"], "hit", "{second}");
    let _ = Command::new("docker")
        .args(["rmi", "-f", env["image"].as_str().unwrap()])
        .output();
    stop_clean(svc, &label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn exec_pool_socket_clients_are_served_by_the_same_daemon() {
    let _sb = require_docker!();
    let label = common::test_label("serve-pool");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pool.sock");
    let sock = socket.to_str().unwrap().to_string();
    let mut svc = Service::start(dir.path(), &label, &["--pool-socket", &sock]);
    let ws = common::workspace(&[("a.txt", "from the workspace")]);
    let out = common::isolated(ws.path())
        .args(["exec", "--json", "--pool-socket", &sock])
        .sandboxed(&label)
        .args(["--", "cat", "a.txt"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["verdict"], "passed", "{v}");
    assert_eq!(v["stdout"]["text"], "from the workspace", "{v}");
    // The HTTP side answers meanwhile, from the same process, with each
    // engine's last answer (in the metrics too).
    let mut engines = Value::Null;
    for _ in 0..80 {
        let h: Value = reqwest::get(svc.at("/v1/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["status"], "ok");
        engines = h["engines"].clone();
        if engines.as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(engines[0]["up"], true, "{engines}");
    let m = reqwest::get(svc.at("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let name = engines[0]["name"].as_str().unwrap();
    assert!(
        m.contains(&format!("autodev_engine_up{{engine=\"{name}\"}} 1")),
        "{m}"
    );
    assert!(svc.stop().success());
    assert!(!socket.exists(), "the socket goes with the service");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn write_back_copies_what_the_command_changed_through_the_same_rules() {
    let _sb = require_docker!();
    let label = common::test_label("serve-write-back");
    let dir = tempfile::tempdir().unwrap();
    let k = add_key(dir.path(), "k", &[]);
    let svc = Service::start(dir.path(), &label, &["--warm", "0"]);
    let c = reqwest::Client::new();
    let (_, ses) = post(
        &c,
        &svc.at("/v1/sessions"),
        &k,
        json!({"files": {"a.txt": "one\n", "keep.txt": "same\n"}}),
    )
    .await;
    let id = ses["id"].as_str().unwrap().to_string();
    let runs = svc.at(&format!("/v1/sessions/{id}/runs"));
    let read = |p: &str| {
        let url = svc.at(&format!("/v1/sessions/{id}/files/{p}"));
        let (c, k) = (c.clone(), k.clone());
        async move {
            let r = c.get(url).bearer_auth(&k).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Without write_back, what the command changes stays in its container.
    let (_, v) = post(&c, &runs, &k, json!({"runner": "echo zero > a.txt"})).await;
    assert_eq!(v["verdict"], "passed", "{v}");
    assert!(v.get("write_back").is_none());
    assert_eq!(read("a.txt").await.1, "one\n");

    let cmd = "echo two > a.txt; mkdir -p d && echo new > d/n.txt; ln -s /etc/passwd link; \
               mkdir -p .git && echo x > .git/config; mkfifo pipe; \
               (sleep 3; echo late > late.txt) & exit 0";
    let (_, v) = post(&c, &runs, &k, json!({"runner": cmd, "write_back": true})).await;
    assert_eq!(v["verdict"], "passed", "{v}");
    let wb = &v["write_back"];
    let mut written: Vec<&str> = wb["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    written.sort();
    assert_eq!(written, ["a.txt", "d/n.txt"], "{wb}");
    let refused: Vec<&str> = wb["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    for p in ["link", ".git/config", "pipe"] {
        assert!(refused.contains(&p), "{p} must be refused: {wb}");
    }
    assert_eq!(wb["unchanged"], 1, "{wb}");
    assert_eq!(read("a.txt").await, (200, "two\n".to_string()));
    assert_eq!(read("d/n.txt").await, (200, "new\n".to_string()));
    assert_eq!(
        read("late.txt").await.0,
        404,
        "nothing of the command outlives it"
    );
    let tree = walk(&dir.path().join("state"));
    assert!(
        !tree
            .iter()
            .any(|p| p.ends_with("/link") || p.ends_with("/.git")),
        "{tree:?}"
    );

    // A run cut short sends nothing back, and says so.
    let (_, v) = post(&c, &runs, &k, json!({"runner": "echo three > a.txt; sleep 30", "write_back": true, "limits": {"timeout": "2s"}})).await;
    assert_eq!(v["verdict"], "timed_out", "{v}");
    assert!(
        v["write_back"]["error"]
            .as_str()
            .unwrap()
            .contains("before its workspace"),
        "{v}"
    );
    assert_eq!(read("a.txt").await.1, "two\n");
    stop_clean(svc, &label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_drives_every_route_sync_and_async() {
    let _sb = require_docker!();
    let py = python();
    let label = common::test_label("serve-pyclient");
    let dir = tempfile::tempdir().unwrap();
    let a = add_key(dir.path(), "a", &["--max-concurrent", "1"]);
    let b = add_key(dir.path(), "b", &[]);
    // Bodies of 50 MB: the session round trip of 1,000 files.
    let svc = Service::start(
        dir.path(),
        &label,
        &["--max-queue", "0", "--jobs", "2", "--max-body", "67108864"],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::succeeds(
        Command::new(&py)
            .arg(root.join("tests/serve/client_sdk.py"))
            .args([&svc.url, &a, &b])
            .env("PYTHONPATH", root.join("clients/python")),
    );
    stop_clean(svc, &label);
}
