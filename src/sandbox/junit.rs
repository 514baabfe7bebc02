//! Per-test results read from a JUnit XML report (pytest `--junitxml`,
//! `go-junit-report`, cargo-nextest, node's junit reporter all write it).
//!
//! The report comes out of the sandbox as untrusted bytes, capped in size
//! before it is parsed; anything unreadable gives no result and a reason,
//! never a guess.

use serde::{Deserialize, Serialize};

/// Largest report read, in bytes; a bigger one is not parsed.
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;
/// Failing tests listed by name (the counts cover all of them).
const MAX_LISTED: usize = 50;
/// Test names kept for comparing runs.
const MAX_NAMED: usize = 20_000;
/// Characters kept of a failure's first line.
const MAX_MESSAGE_CHARS: usize = 300;

/// Counts of a report, and the tests that did not pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestReport {
    /// Test cases in the report.
    pub total: u32,
    /// Passed.
    pub passed: u32,
    /// Failed an assertion.
    pub failed: u32,
    /// Ended in an error.
    pub errors: u32,
    /// Skipped.
    pub skipped: u32,
    /// The first failing or erroring tests, with the first line of their message.
    pub failing: Vec<TestFailure>,
    /// The names of the tests in the report (up to a bound), so that a
    /// test that disappears is told from one that was fixed. Kept in
    /// memory only.
    #[serde(skip)]
    pub names: std::collections::BTreeSet<String>,
    /// How each named test ended (as many as [`names`](Self::names)); a
    /// verdict on named tests (`FAIL_TO_PASS`) reads it. Kept in memory only.
    #[serde(skip)]
    pub outcomes: std::collections::BTreeMap<String, CaseStatus>,
}

/// One test that did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    /// `class.name` (or the name alone).
    pub name: String,
    /// The first line of the failure message.
    pub message: String,
}

/// Reads a JUnit XML report, or `go test -json`'s event stream (a report
/// that starts with `{`).
pub fn parse(xml: &[u8]) -> Result<TestReport, String> {
    if xml.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "the report is over the {MAX_REPORT_BYTES}-byte cap; it was not read"
        ));
    }
    let text = std::str::from_utf8(xml).map_err(|_| "the report is not UTF-8".to_string())?;
    if text.trim_start().starts_with('{') {
        return super::gotest::parse(text);
    }
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| format!("the report is not valid XML: {e}"))?;
    let root = doc.root_element().tag_name().name();
    if root != "testsuites" && root != "testsuite" {
        return Err(format!(
            "the report's root is <{root}>, not <testsuites> or <testsuite>"
        ));
    }
    let mut r = TestReport::default();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = match (case.attribute("classname"), case.attribute("name")) {
            (Some(c), Some(n)) if !c.is_empty() => format!("{c}.{n}"),
            (_, Some(n)) => n.to_string(),
            _ => "(unnamed)".to_string(),
        };
        let child = |tag: &str| case.children().find(|c| c.has_tag_name(tag));
        let (status, node) = if let Some(n) = child("failure") {
            (CaseStatus::Failed, Some(n))
        } else if let Some(n) = child("error") {
            (CaseStatus::Error, Some(n))
        } else if child("skipped").is_some() {
            (CaseStatus::Skipped, None)
        } else {
            (CaseStatus::Passed, None)
        };
        let message = node
            .and_then(|n| {
                n.attribute("message")
                    .filter(|m| !m.trim().is_empty())
                    .or_else(|| n.text())
            })
            .unwrap_or("");
        r.record(name, status, message);
    }
    Ok(r)
}

/// How one test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Passed.
    Passed,
    /// Skipped.
    Skipped,
    /// Failed an assertion.
    Failed,
    /// Ended in an error.
    Error,
}

impl TestReport {
    /// Counts one test case; a failing one is listed with the first line
    /// of `message`. A name seen twice (a rerun) keeps its worse status.
    pub fn record(&mut self, name: String, status: CaseStatus, message: &str) {
        self.total += 1;
        match status {
            CaseStatus::Passed => self.passed += 1,
            CaseStatus::Skipped => self.skipped += 1,
            CaseStatus::Failed => self.failed += 1,
            CaseStatus::Error => self.errors += 1,
        }
        if self.names.len() < MAX_NAMED {
            self.names.insert(name.clone());
            let worst = self
                .outcomes
                .get(&name)
                .map_or(status, |s| (*s).max(status));
            self.outcomes.insert(name.clone(), worst);
        }
        if matches!(status, CaseStatus::Failed | CaseStatus::Error)
            && self.failing.len() < MAX_LISTED
        {
            let message = message
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            self.failing.push(TestFailure { name, message });
        }
    }

    /// How the test named `id` ended: by its report name (`class.name`),
    /// by a pytest id (`path/to/test_x.py::Class::test`, as pytest's JUnit
    /// report names it `path.to.test_x.Class.test`), or by the one report
    /// name that ends in `.id` (a Go test named without its package).
    /// `None` when the report has no such test, or several match.
    pub fn status_of(&self, id: &str) -> Option<CaseStatus> {
        if let Some(s) = self.outcomes.get(id) {
            return Some(*s);
        }
        let key = pytest_key(id);
        if let Some(s) = key.as_ref().and_then(|k| self.outcomes.get(k)) {
            return Some(*s);
        }
        // `pkg/TestName` (Go's package path and the test) or a bare name.
        let tail = match id.rsplit_once('/') {
            Some((pkg, t)) if !id.contains("::") && t.starts_with("Test") => {
                let pkg = pkg.trim_start_matches("./");
                let exact = self
                    .outcomes
                    .iter()
                    .filter(|(n, _)| n.ends_with(&format!("{pkg}.{t}")))
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>();
                if exact.len() == 1 {
                    return exact.first().copied();
                }
                t.to_string()
            }
            _ => id.to_string(),
        };
        let suffix = format!(".{tail}");
        let mut found = self.outcomes.iter().filter(|(n, _)| n.ends_with(&suffix));
        match (found.next(), found.next()) {
            (Some((_, s)), None) => Some(*s),
            _ => None,
        }
    }
}

/// A pytest node id as pytest's JUnit report names it: the file's path
/// without `.py`, dots for slashes, then the classes and the test, dotted
/// (`tests/test_a.py::TestX::test_y[1-2]` → `tests.test_a.TestX.test_y[1-2]`).
fn pytest_key(id: &str) -> Option<String> {
    let (path, rest) = id.split_once("::")?;
    let module = path.strip_suffix(".py").unwrap_or(path).replace('/', ".");
    Some(format!("{module}.{}", rest.replace("::", ".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="test_calc" name="test_add" time="0.001"/>
<testcase classname="test_calc" name="test_sub" time="0.001">
  <failure message="AssertionError: assert -1 == 5&#10;+  where -1 = add(2, 3)">def test_sub(): ...</failure>
</testcase>
<testcase classname="test_calc" name="test_div"><error message="">ZeroDivisionError: division by zero
more</error></testcase>
<testcase classname="test_calc" name="test_skip"><skipped message="later"/></testcase>
<testcase classname="" name="test_plain"/>
</testsuite></testsuites>"#;

    #[test]
    fn pytest_report_counts_and_names_the_failures() {
        let r = parse(PYTEST.as_bytes()).unwrap();
        assert_eq!(
            (r.total, r.passed, r.failed, r.errors, r.skipped),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(
            r.failing,
            [
                TestFailure {
                    name: "test_calc.test_sub".into(),
                    message: "AssertionError: assert -1 == 5".into()
                },
                TestFailure {
                    name: "test_calc.test_div".into(),
                    message: "ZeroDivisionError: division by zero".into()
                },
            ]
        );
    }

    #[test]
    fn an_empty_suite_is_zero_tests_not_an_error() {
        let r = parse(br#"<testsuite name="x" tests="0"></testsuite>"#).unwrap();
        assert_eq!(r.total, 0);
    }

    #[test]
    fn bad_reports_are_reasons_never_panics() {
        assert!(parse(b"<testsuite><testcase")
            .unwrap_err()
            .contains("not valid XML"));
        assert!(parse(b"\xff\xfe").unwrap_err().contains("UTF-8"));
        assert!(parse(b"<html/>").unwrap_err().contains("<html>"));
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(parse(&huge).unwrap_err().contains("cap"));
        // An entity bomb is refused by the parser, not expanded.
        let bomb = br#"<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]><testsuite><testcase name="&f;&f;&f;&f;&f;&f;&f;&f;"/></testsuite>"#;
        let _ = parse(bomb);
    }

    #[test]
    fn listed_failures_are_capped_but_counted() {
        let cases: String = (0..200)
            .map(|i| format!(r#"<testcase name="t{i}"><failure message="m"/></testcase>"#))
            .collect();
        let r = parse(format!("<testsuite>{cases}</testsuite>").as_bytes()).unwrap();
        assert_eq!(r.failed, 200);
        assert_eq!(r.failing.len(), MAX_LISTED);
    }

    #[test]
    fn named_tests_are_found_by_pytest_id_and_by_report_name() {
        let xml = r#"<testsuites><testsuite>
<testcase classname="tests.test_basic" name="test_vary"/>
<testcase classname="test.TestSlugify" name="test_pre[a.b-c]"><failure message="no"/></testcase>
<testcase classname="tests.test_basic" name="test_rerun"/>
<testcase classname="tests.test_basic" name="test_rerun"><error message="flaky"/></testcase>
</testsuite></testsuites>"#;
        let r = parse(xml.as_bytes()).unwrap();
        assert_eq!(
            r.status_of("tests/test_basic.py::test_vary"),
            Some(CaseStatus::Passed)
        );
        assert_eq!(
            r.status_of("tests.test_basic.test_vary"),
            Some(CaseStatus::Passed)
        );
        assert_eq!(
            r.status_of("test.py::TestSlugify::test_pre[a.b-c]"),
            Some(CaseStatus::Failed)
        );
        assert_eq!(
            r.status_of("tests/test_basic.py::test_rerun"),
            Some(CaseStatus::Error),
            "a rerun keeps the worse status"
        );
        assert_eq!(r.status_of("tests/test_other.py::test_vary"), None);
    }
}
