//! Per-test results from `go test -json` (test2json's event stream): the
//! Go toolchain's own machine-readable output, so a Go project needs no
//! JUnit converter in its image. Read like a JUnit report: untrusted,
//! capped, a line that is not an event is passed over.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::junit::{CaseStatus, TestReport};

/// Output lines kept per test for its failure message.
const MAX_OUTPUT_LINES: usize = 200;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Package", default)]
    package: String,
    #[serde(rename = "Test", default)]
    test: Option<String>,
    #[serde(rename = "Output", default)]
    output: Option<String>,
}

/// Reads `go test -json` output. Tests are named `package.TestName` (as
/// JUnit converters name them); a package that failed without running a
/// test (it did not build) counts as one erroring case named after it.
pub(crate) fn parse(text: &str) -> Result<TestReport, String> {
    let mut output: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut ended: Vec<(String, String, CaseStatus)> = Vec::new();
    let mut packages: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    let mut events = 0;
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        events += 1;
        let status = match e.action.as_str() {
            "pass" => Some(CaseStatus::Passed),
            "fail" => Some(CaseStatus::Failed),
            "skip" => Some(CaseStatus::Skipped),
            _ => None,
        };
        match e.test {
            Some(test) => {
                if let Some(o) = e.output.filter(|_| e.action == "output") {
                    let kept = output.entry((e.package.clone(), test.clone())).or_default();
                    if kept.len() < MAX_OUTPUT_LINES {
                        kept.push(o);
                    }
                }
                if let Some(s) = status {
                    ended.push((e.package.clone(), test, s));
                }
                packages.entry(e.package).or_default().0 = true;
            }
            None => {
                let p = packages.entry(e.package).or_default();
                if let Some(o) = e.output.filter(|_| e.action == "output") {
                    if p.1.len() < MAX_OUTPUT_LINES {
                        p.1.push(o);
                    }
                }
                if status == Some(CaseStatus::Failed) && !p.0 {
                    p.1.push("\u{0}failed".into());
                }
            }
        }
    }
    if events == 0 {
        return Err("the report holds no `go test -json` event".into());
    }
    let mut r = TestReport::default();
    for (pkg, test, status) in ended {
        let lines = output
            .remove(&(pkg.clone(), test.clone()))
            .unwrap_or_default();
        r.record(format!("{pkg}.{test}"), status, &message(&lines));
    }
    for (pkg, (had_tests, lines)) in packages {
        if !had_tests && lines.iter().any(|l| l == "\u{0}failed") {
            let text: Vec<String> = lines.into_iter().filter(|l| l != "\u{0}failed").collect();
            r.record(pkg, CaseStatus::Error, &message(&text));
        }
    }
    Ok(r)
}

/// The line a reader wants from a test's output: its first `file.go:N:`
/// message, else its first line that is not the framework's own.
fn message(lines: &[String]) -> String {
    let own = |l: &&String| {
        let t = l.trim();
        !t.is_empty()
            && !t.starts_with("=== ")
            && !t.starts_with("--- ")
            && t != "FAIL"
            && t != "PASS"
    };
    lines
        .iter()
        .find(|l| {
            l.trim()
                .split(':')
                .next()
                .is_some_and(|f| f.ends_with(".go"))
        })
        .or_else(|| lines.iter().find(own))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"Action":"start","Package":"example.com/m/doc"}
{"Action":"run","Package":"example.com/m/doc","Test":"TestGood"}
{"Action":"output","Package":"example.com/m/doc","Test":"TestGood","Output":"=== RUN   TestGood\n"}
{"Action":"pass","Package":"example.com/m/doc","Test":"TestGood","Elapsed":0}
{"Action":"run","Package":"example.com/m/doc","Test":"TestBad"}
{"Action":"output","Package":"example.com/m/doc","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"example.com/m/doc","Test":"TestBad","Output":"    doc_test.go:12: want 2, got 3\n"}
{"Action":"output","Package":"example.com/m/doc","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"example.com/m/doc","Test":"TestBad","Elapsed":0}
{"Action":"skip","Package":"example.com/m/doc","Test":"TestLater","Elapsed":0}
{"Action":"fail","Package":"example.com/m/doc","Elapsed":0.01}
not json: a line the build printed
{"Action":"output","Package":"example.com/m/broken","Output":"doc.go:3:1: syntax error\n"}
{"Action":"fail","Package":"example.com/m/broken","Elapsed":0}
"#;

    #[test]
    fn events_become_named_cases_and_a_package_that_did_not_build_an_error() {
        let r = crate::sandbox::junit::parse(RUN.as_bytes()).unwrap();
        assert_eq!(
            (r.total, r.passed, r.failed, r.errors, r.skipped),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(r.failing[0].name, "example.com/m/doc.TestBad");
        assert_eq!(r.failing[0].message, "doc_test.go:12: want 2, got 3");
        assert_eq!(r.failing[1].name, "example.com/m/broken");
        assert_eq!(r.failing[1].message, "doc.go:3:1: syntax error");
        assert_eq!(r.status_of("TestGood"), Some(CaseStatus::Passed));
        assert_eq!(r.status_of("./doc/TestBad"), Some(CaseStatus::Failed));
        assert_eq!(r.status_of("doc/TestLater"), Some(CaseStatus::Skipped));
        assert_eq!(r.status_of("TestMissing"), None);
        assert!(parse("plain text\n").is_err());
    }
}
