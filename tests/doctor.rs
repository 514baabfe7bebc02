//! `autodev doctor` through the real binary and engine: every guarantee
//! holds under the defaults, and a loosened setting is caught.

mod common;

use std::process::Command;

use serde_json::Value;

fn doctor(extra: &[&str]) -> (Option<i32>, Value) {
    let label = common::test_label("doctor");
    let out = Command::new(common::bin())
        .env("AUTODEV_DOCTOR_TEST_CANARY", "canary-value-1234")
        .args(["doctor", "--json", "--image", &common::image()])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(extra)
        .output()
        .expect("autodev runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    common::assert_no_leak(&label);
    (out.status.code(), v)
}

fn status<'a>(v: &'a Value, check: &str) -> &'a str {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no finding {check}: {v}"))["status"]
        .as_str()
        .unwrap()
}

#[test]
#[ignore = "needs Docker: run with --include-ignored"]
fn every_guarantee_holds_under_the_defaults() {
    let (code, v) = doctor(&[]);
    for check in [
        "image",
        "memory limit",
        "process limit",
        "wall-clock limit",
        "read-only root",
        "privileges",
        "host environment",
        "output limit",
        "no network",
        "set-up: allowed",
        "set-up: off-list",
        "set-up: private",
        "set-up: fence",
        "no leftovers",
    ] {
        assert_eq!(status(&v, check), "held", "{check}: {v}");
    }
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["broken"], false);
}

#[test]
#[ignore = "needs Docker: run with --include-ignored"]
fn a_loosened_setting_is_caught_and_fails_the_doctor() {
    // A network for the runs: the probe reaches this host, so the
    // guarantee is broken, and the doctor says what to do.
    let (code, v) = doctor(&["--network", "bridge"]);
    assert_eq!(status(&v, "no network"), "broken", "{v}");
    assert_eq!(code, Some(1), "{v}");
    let fix = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "no network")
        .unwrap()["fix"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fix.contains("--network bridge"), "{fix}");
    // The rest still holds.
    assert_eq!(status(&v, "memory limit"), "held", "{v}");
}
