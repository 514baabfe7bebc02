//! The verdict of a repository task: every named test (`FAIL_TO_PASS` and
//! `PASS_TO_PASS`) judged from the run's per-test results, never from its
//! exit code or its log. A test that did not run is missing, and missing
//! is not passing.

use serde::{Deserialize, Serialize};

use super::repo::RepoCheck;
use super::results::TaskVerdict;
use crate::sandbox::junit::{CaseStatus, TestReport};

/// Named tests most listed per group in a result line (the counts are
/// always whole).
const MAX_LISTED: usize = 200;

/// How the named tests of one group ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Passed.
    pub success: Vec<String>,
    /// Failed, erred or were skipped.
    pub failure: Vec<String>,
    /// Not in the report (not collected, not run, or misnamed).
    pub missing: Vec<String>,
    /// How many are listed in each of the three, when more were cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<usize>,
}

impl Tally {
    fn of(ids: &[String], report: Option<&TestReport>) -> Self {
        let mut t = Tally::default();
        for id in ids {
            let into = match report.and_then(|r| r.status_of(id)) {
                Some(CaseStatus::Passed) => &mut t.success,
                Some(_) => &mut t.failure,
                None => &mut t.missing,
            };
            into.push(id.clone());
        }
        let longest = t.success.len().max(t.failure.len()).max(t.missing.len());
        if longest > MAX_LISTED {
            for v in [&mut t.success, &mut t.failure, &mut t.missing] {
                v.truncate(MAX_LISTED);
            }
            t.cut = Some(MAX_LISTED);
        }
        t
    }

    fn all_passed(&self) -> bool {
        self.failure.is_empty() && self.missing.is_empty()
    }
}

/// The named tests of a repository task, as its run ended them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedTests {
    /// The tests the change must make pass.
    pub fail_to_pass: Tally,
    /// The tests that must keep passing.
    pub pass_to_pass: Tally,
}

/// The verdict of a repository task whose test run ended `run` with
/// `report`: `resolved` only when every named test passed. A run that
/// judged nothing about the code (the sandbox failed, the set-up failed)
/// keeps its verdict; one that timed out or ran out of memory is
/// `unresolved` with what its report says (usually: missing).
pub(super) fn grade(
    run: TaskVerdict,
    report: Option<&TestReport>,
    check: &RepoCheck,
) -> (TaskVerdict, NamedTests) {
    let named = NamedTests {
        fail_to_pass: Tally::of(&check.fail_to_pass, report),
        pass_to_pass: Tally::of(&check.pass_to_pass, report),
    };
    let verdict = match run {
        TaskVerdict::SandboxError
        | TaskVerdict::SetupFailed
        | TaskVerdict::InvalidTask
        | TaskVerdict::ModelError => run,
        _ if check.fail_to_pass.is_empty() && check.pass_to_pass.is_empty() => {
            // Nothing named: the run's own verdict decides, as for any task.
            match run {
                TaskVerdict::Passed => TaskVerdict::Resolved,
                _ => TaskVerdict::Unresolved,
            }
        }
        _ if named.fail_to_pass.all_passed() && named.pass_to_pass.all_passed() => {
            TaskVerdict::Resolved
        }
        _ => TaskVerdict::Unresolved,
    };
    (verdict, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cases: &[(&str, CaseStatus)]) -> TestReport {
        let mut r = TestReport::default();
        for (n, s) in cases {
            r.record(n.to_string(), *s, "");
        }
        r
    }

    fn check(f2p: &[&str], p2p: &[&str]) -> RepoCheck {
        RepoCheck {
            patch: String::new(),
            test_patch: String::new(),
            fail_to_pass: f2p.iter().map(|s| s.to_string()).collect(),
            pass_to_pass: p2p.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn resolved_needs_every_named_test_to_have_passed() {
        use CaseStatus::*;
        let c = check(&["t.py::test_fix"], &["t.py::test_old", "t.py::test_other"]);
        let all = report(&[
            ("t.test_fix", Passed),
            ("t.test_old", Passed),
            ("t.test_other", Passed),
        ]);
        // The run failed (an unnamed test failed): the named ones decide.
        let (v, named) = grade(TaskVerdict::Failed, Some(&all), &c);
        assert_eq!(v, TaskVerdict::Resolved);
        assert_eq!(named.pass_to_pass.success.len(), 2);

        let broke = report(&[("t.test_fix", Passed), ("t.test_old", Failed)]);
        let (v, named) = grade(TaskVerdict::Failed, Some(&broke), &c);
        assert_eq!(v, TaskVerdict::Unresolved);
        assert_eq!(named.pass_to_pass.failure, ["t.py::test_old"]);
        assert_eq!(named.pass_to_pass.missing, ["t.py::test_other"]);

        let skipped = report(&[
            ("t.test_fix", Skipped),
            ("t.test_old", Passed),
            ("t.test_other", Passed),
        ]);
        assert_eq!(
            grade(TaskVerdict::Passed, Some(&skipped), &c).0,
            TaskVerdict::Unresolved
        );
        // No report: nothing passed, whatever the exit code said.
        let (v, named) = grade(TaskVerdict::Unverified, None, &c);
        assert_eq!(v, TaskVerdict::Unresolved);
        assert_eq!(named.fail_to_pass.missing, ["t.py::test_fix"]);
        assert_eq!(
            grade(TaskVerdict::SandboxError, Some(&all), &c).0,
            TaskVerdict::SandboxError
        );
        assert_eq!(
            grade(TaskVerdict::TimedOut, Some(&all), &c).0,
            TaskVerdict::Resolved
        );
    }
}
