//! The regression guard: how good each tested iteration was, which tests
//! it fixed and which it broke, and the best iteration's files, so a worse
//! last iteration can be undone (`--keep best`).
//!
//! Fixed and broken tests are told apart by the names of the failing tests
//! in the JUnit report (the first 50): a name that fails now and did not
//! before broke; one that failed before and does not now was fixed. Without
//! a report on both sides there is no per-test comparison, only the score.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::sandbox::{Outcome, Verdict};

/// How good a test run was: a pass beats everything, then more tests
/// passed, then fewer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    passed: bool,
    tests_passed: u32,
    tests_failing: u32,
}

impl Score {
    /// The score of `o`.
    pub fn of(o: &Outcome) -> Score {
        let t = o.tests.as_ref();
        Score {
            passed: o.verdict == Verdict::Passed,
            tests_passed: t.map_or(0, |t| t.passed),
            tests_failing: t.map_or(0, |t| t.failed + t.errors),
        }
    }

    /// `passed/total` for messages, when there was a report.
    pub fn counts(o: &Outcome) -> String {
        match &o.tests {
            Some(t) => format!(
                "{}/{} tests passed, {} failed",
                t.passed,
                t.total,
                t.failed + t.errors
            ),
            None => o.verdict.to_string(),
        }
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.passed, self.tests_passed, other.tests_failing).cmp(&(
            other.passed,
            other.tests_passed,
            self.tests_failing,
        ))
    }
}

/// What one iteration changed in the tests' results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Failing before, not now.
    pub fixed: Vec<String>,
    /// Not failing before (so passing, or new), failing now.
    pub broke: Vec<String>,
}

/// The per-test change from `before` to `after`, when both have a report.
pub fn compare(before: &Outcome, after: &Outcome) -> Option<Change> {
    let names = |o: &Outcome| -> Option<BTreeSet<String>> {
        o.tests
            .as_ref()
            .map(|t| t.failing.iter().map(|f| f.name.clone()).collect())
    };
    let (b, a) = (names(before)?, names(after)?);
    Some(Change {
        fixed: b.difference(&a).cloned().collect(),
        broke: a.difference(&b).cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::{TestFailure, TestReport};
    use crate::sandbox::fake::outcome;

    fn run(verdict: Verdict, total: u32, failing: &[&str]) -> Outcome {
        let mut o = outcome(verdict, i64::from(verdict != Verdict::Passed), "");
        o.tests = Some(TestReport {
            total,
            passed: total - failing.len() as u32,
            failed: failing.len() as u32,
            failing: failing
                .iter()
                .map(|n| TestFailure {
                    name: n.to_string(),
                    message: "m".into(),
                })
                .collect(),
            ..TestReport::default()
        });
        o
    }

    #[test]
    fn a_patch_that_fixes_one_test_and_breaks_another_is_a_regression() {
        let before = run(Verdict::Failed, 3, &["t.test_add"]);
        let after = run(Verdict::Failed, 3, &["t.test_sub"]);
        let c = compare(&before, &after).unwrap();
        assert_eq!(c.fixed, ["t.test_add"]);
        assert_eq!(c.broke, ["t.test_sub"]);
        // Same counts: not strictly better.
        assert_eq!(Score::of(&after).cmp(&Score::of(&before)), Ordering::Equal);
    }

    #[test]
    fn scores_order_pass_then_more_passed_then_fewer_failing() {
        let pass = run(Verdict::Passed, 3, &[]);
        let two = run(Verdict::Failed, 3, &["a"]);
        let one = run(Verdict::Failed, 3, &["a", "b"]);
        assert!(Score::of(&pass) > Score::of(&two));
        assert!(Score::of(&two) > Score::of(&one));
        let mut no_report = outcome(Verdict::Failed, 1, "");
        no_report.tests = None;
        assert!(Score::of(&one) > Score::of(&no_report));
        assert!(compare(&one, &no_report).is_none());
        assert_eq!(Score::counts(&two), "2/3 tests passed, 1 failed");
    }
}
