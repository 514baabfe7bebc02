//! The loop's unit tests, against a replay model and a fake sandbox.

use super::*;
use crate::events::{NullObserver, Observer, Recorder};
use crate::model::replay::Replay;
use crate::sandbox::fake::{outcome, FakeSandbox};
use std::path::Path;

pub(super) fn cfg(ws: &Path) -> AgentConfig {
    AgentConfig::new(
        "make add work".into(),
        "python3 -m unittest".into(),
        ws.to_path_buf(),
        3,
        RunSpec::new(ws, "", "img"),
    )
}

pub(super) fn replay(replies: &[&str]) -> Replay {
    let text: String = replies
        .iter()
        .map(|r| format!("=== REPLY ===\n{r}\n"))
        .collect();
    Replay::from_text(Path::new("test"), &text)
}

pub(super) async fn go(
    m: &Replay,
    s: &FakeSandbox,
    c: &AgentConfig,
    obs: &mut dyn Observer,
) -> Result<RunSummary, AgentError> {
    run(m, s, c, obs, &CancellationToken::new()).await
}

#[tokio::test]
async fn held_out_tests_decide_and_the_model_never_sees_them() {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path().join("ws");
    let hold = d.path().join("hold");
    std::fs::create_dir_all(&hold).unwrap();
    std::fs::write(hold.join("test_hidden.py"), "SECRET-HOLDOUT-CASE").unwrap();
    // Visible tests pass with any a.py; the held-out one needs "2".
    let s = FakeSandbox::new(|spec, _| {
        let held = spec.workspace.join("test_hidden.py").exists();
        let a = std::fs::read_to_string(spec.workspace.join("a.py")).unwrap_or_default();
        Ok(if !held || a.trim() == "2" {
            outcome(Verdict::Passed, 0, "ok")
        } else {
            outcome(Verdict::Failed, 1, "SECRET-HOLDOUT-CASE failed")
        })
    });
    let m = replay(&["PATCH::a.py\n1\nENDPATCH", "PATCH::a.py\n2\nENDPATCH"]);
    let mut c = cfg(&ws);
    c.holdout = Some(holdout::Holdout {
        dir: hold.clone(),
        final_only: false,
    });
    let mut tr = Recorder::default();
    let sum = go(&m, &s, &c, &mut tr).await.unwrap();
    assert!(sum.passed);
    assert_eq!(sum.model_calls, 2);
    assert!(
        !ws.join("test_hidden.py").exists(),
        "held-out file in the workspace"
    );
    let text = tr.lines();
    let prompts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "prompt")
        .collect();
    assert_eq!(prompts.len(), 2);
    let second = prompts[1].to_string();
    assert!(second.contains("held-out tests"), "{second}");
    assert!(!second.contains("SECRET-HOLDOUT"), "{second}");

    // Final-only: the loop stops on the visible pass; the held-out
    // run at the end gives the verdict.
    let m = replay(&["PATCH::a.py\n1\nENDPATCH"]);
    c.holdout = Some(holdout::Holdout {
        dir: hold,
        final_only: true,
    });
    let ws2 = d.path().join("ws2");
    c.workspace = ws2.clone();
    c.sandbox.workspace = ws2;
    let sum = go(&m, &s, &c, &mut NullObserver).await.unwrap();
    assert!(!sum.passed);
    assert_eq!(sum.verdict, Verdict::Failed);
    assert_eq!(sum.model_calls, 1);
}

#[tokio::test]
async fn fail_patch_pass() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&[
        "PATCH::a.py\nbroken\nENDPATCH",
        "PATCH::a.py\nfixed\nENDPATCH",
    ]);
    let s = FakeSandbox::new(|spec, _| {
        let text = std::fs::read_to_string(spec.workspace.join("a.py")).unwrap_or_default();
        let v = if text == "fixed\n" {
            Verdict::Passed
        } else {
            Verdict::Failed
        };
        Ok(outcome(
            v,
            i64::from(v != Verdict::Passed),
            "FAIL: test_add",
        ))
    });
    let mut tr = NullObserver;
    let sum = go(&m, &s, &cfg(d.path()), &mut tr).await.unwrap();
    assert!(sum.passed);
    assert_eq!(sum.stop_reason, StopReason::Passed);
    assert_eq!(sum.iterations, 2);
    assert_eq!(sum.model_calls, 2);
    // Tests ran twice in the loop; the final check reused the passing run.
    assert_eq!(s.calls().len(), 2);
    assert_eq!(s.calls()[0].command, "python3 -m unittest");
}

#[tokio::test]
async fn a_first_reply_without_patch_is_told_to_the_model_not_tested() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&["Here is my plan, no code yet.", "PATCH::a.py\nx\nENDPATCH"]);
    let s = FakeSandbox::verdicts(vec![Verdict::Passed]);
    let sum = go(&m, &s, &cfg(d.path()), &mut NullObserver).await.unwrap();
    assert!(sum.passed, "{sum:?}");
    assert_eq!(sum.model_calls, 2);
    // One test run: after the second reply, never on the empty workspace.
    assert_eq!(s.calls().len(), 1);
    // Twice without a patch: the run stops, never having tested nothing.
    let d = tempfile::tempdir().unwrap();
    let m = replay(&["no code", "still no code"]);
    let s = FakeSandbox::verdicts(vec![Verdict::Passed]);
    let sum = go(&m, &s, &cfg(d.path()), &mut NullObserver).await.unwrap();
    assert!(!sum.passed);
    assert_eq!(sum.stop_reason, StopReason::NoPatch);
}

#[tokio::test]
async fn a_pass_on_an_empty_workspace_is_no_tests() {
    let d = tempfile::tempdir().unwrap();
    // The only file the model writes is refused: the workspace stays empty.
    let m = replay(&["PATCH::../a.py\nx\nENDPATCH", "PATCH::../b.py\nx\nENDPATCH"]);
    let s = FakeSandbox::verdicts(vec![Verdict::Passed]);
    let mut c = cfg(d.path());
    c.max_iters = 1;
    let sum = go(&m, &s, &c, &mut NullObserver).await.unwrap();
    assert!(!sum.passed);
    assert_eq!(sum.verdict, Verdict::NoTests);
}

#[tokio::test]
async fn no_patch_stops_and_fails() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&["PATCH::a.py\nx\nENDPATCH", "I cannot fix this."]);
    let s = FakeSandbox::verdicts(vec![Verdict::Failed]);
    let sum = go(&m, &s, &cfg(d.path()), &mut NullObserver).await.unwrap();
    assert!(!sum.passed);
    assert_eq!(sum.stop_reason, StopReason::NoPatch);
    assert_eq!(s.calls().len(), 1);
}

#[tokio::test]
async fn max_iters_counts_model_calls() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&[
        "PATCH::a.py\n0\nENDPATCH",
        "PATCH::a.py\n1\nENDPATCH",
        "PATCH::a.py\n2\nENDPATCH",
        "PATCH::a.py\n3\nENDPATCH",
    ]);
    let s = FakeSandbox::verdicts(vec![Verdict::Failed]);
    let sum = go(&m, &s, &cfg(d.path()), &mut NullObserver).await.unwrap();
    assert_eq!(sum.stop_reason, StopReason::MaxIters);
    assert_eq!(sum.iterations, 3);
    assert_eq!(sum.model_calls, 3, "--max-iters 3 is 3 model calls");
    assert_eq!(s.calls().len(), 3, "each reply tested once, no extra check");
    assert_eq!(
        std::fs::read_to_string(d.path().join("a.py")).unwrap(),
        "2\n"
    );
}

#[tokio::test]
async fn a_runner_that_is_not_found_is_a_set_up_error_not_sent_to_the_model() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&["PATCH::a.py\n0\nENDPATCH", "PATCH::a.py\n1\nENDPATCH"]);
    let s = FakeSandbox::new(|_, _| {
        Ok(crate::sandbox::fake::outcome(
            Verdict::Failed,
            127,
            "sh: 1: nosuchrunner: not found\n",
        ))
    });
    let e = go(&m, &s, &cfg(d.path()), &mut NullObserver)
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Setup(_)), "{e}");
    assert_eq!(s.calls().len(), 1);
}

#[tokio::test]
async fn sandbox_error_stops_and_is_not_sent_to_the_model() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&["PATCH::a.py\nx\nENDPATCH", "PATCH::a.py\ny\nENDPATCH"]);
    let s = FakeSandbox::new(|_, _| Err(SandboxError::CopyFailed("tar broke".into())));
    let mut tr = Recorder::default();
    let err = go(&m, &s, &cfg(&d.path().join("ws")), &mut tr)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Sandbox(_)), "{err}");
    let text = tr.lines();
    let prompts = text
        .lines()
        .filter(|l| l.contains("\"event\":\"prompt\""))
        .count();
    assert_eq!(prompts, 1, "only the initial prompt may be sent");
    assert!(text.contains("\"kind\":\"sandbox_error\""));
}

#[tokio::test]
async fn timeout_is_told_in_plain_words_and_refusals_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&[
        "PATCH::../evil.py\nx\nENDPATCH",
        "PATCH::a.py\nok\nENDPATCH",
    ]);
    let s = FakeSandbox::new(|_, n| {
        Ok(if n == 0 {
            Outcome {
                verdict: Verdict::TimedOut,
                exit_code: None,
                ..outcome(Verdict::TimedOut, 0, "")
            }
        } else {
            outcome(Verdict::Passed, 0, "")
        })
    });
    let mut tr = Recorder::default();
    let sum = go(&m, &s, &cfg(&d.path().join("ws")), &mut tr)
        .await
        .unwrap();
    assert!(sum.passed);
    let text = tr.lines();
    let repair = text
        .lines()
        .filter(|l| l.contains("\"event\":\"prompt\""))
        .nth(1)
        .unwrap()
        .to_string();
    assert!(repair.contains("wall-clock limit"), "{repair}");
    assert!(
        repair.contains("NOT applied") && repair.contains("../evil.py"),
        "{repair}"
    );
    assert!(!d.path().join("evil.py").exists());
}

#[tokio::test]
async fn model_error_keeps_the_transcript() {
    let d = tempfile::tempdir().unwrap();
    let m = replay(&[]);
    let s = FakeSandbox::verdicts(vec![Verdict::Passed]);
    let mut tr = Recorder::default();
    let err = go(&m, &s, &cfg(&d.path().join("ws")), &mut tr)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        AgentError::Model(ModelError::ReplayExhausted { .. })
    ));
    let text = tr.lines();
    assert!(text.contains("\"kind\":\"model_error\""));
}

/// A project over the context budget: the first prompt holds the map and
/// the file the task names, not an arbitrary cut; a READ:: request is
/// answered in the next prompt; an EDIT block then fixes one line.
#[tokio::test]
async fn a_large_project_is_mapped_and_read_on_request() {
    let d = tempfile::tempdir().unwrap();
    let ws = d.path().join("ws");
    std::fs::create_dir_all(ws.join("pkg")).unwrap();
    let filler: String = (0..300)
        .map(|i| format!("def f{i}():\n    return {i}\n"))
        .collect();
    std::fs::write(ws.join("pkg/aaa_filler.py"), &filler).unwrap();
    std::fs::write(ws.join("pkg/calc.py"), "def add(a, b):\n    return a - b\n").unwrap();
    std::fs::write(ws.join("pkg/zzz_hidden.py"), "HIDDEN_HELPER = 1\n").unwrap();
    let s = FakeSandbox::new(|spec, _| {
        let c = std::fs::read_to_string(spec.workspace.join("pkg/calc.py")).unwrap_or_default();
        Ok(if c.contains("a + b") {
            outcome(Verdict::Passed, 0, "ok")
        } else {
            outcome(
                Verdict::Failed,
                1,
                "  File \"/workspace/pkg/calc.py\", line 2, in add\nAssertionError",
            )
        })
    });
    let m = replay(&[
        "READ::pkg/zzz_hidden.py",
        "EDIT::pkg/calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\nENDEDIT",
    ]);
    let mut c = cfg(&ws);
    c.task = "fix add in pkg/calc.py".into();
    c.context_chars = 2_000;
    let mut tr = Recorder::default();
    let sum = go(&m, &s, &c, &mut tr).await.unwrap();
    assert!(sum.passed);
    let prompts: Vec<String> = tr
        .lines()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "prompt")
        .map(|e| e.to_string())
        .collect();
    assert!(prompts[0].contains("=== pkg/calc.py ==="), "{}", prompts[0]);
    assert!(
        prompts[0].contains("pkg/aaa_filler.py: f0, f1"),
        "the map: {}",
        prompts[0]
    );
    assert!(!prompts[0].contains("HIDDEN_HELPER"), "{}", prompts[0]);
    assert!(
        prompts[1].contains("=== pkg/zzz_hidden.py ===\\nHIDDEN_HELPER"),
        "{}",
        prompts[1]
    );
}
