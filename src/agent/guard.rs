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

use super::{AgentError, Loop};
use crate::events::RunEvent;
use crate::model::ModelClient;
use crate::sandbox::{Outcome, Sandbox, Verdict};
use crate::workspace::{self, WorkspaceError};

/// How good a test run was: a pass beats everything, then more tests
/// passed, then fewer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Score {
    passed: bool,
    tests_passed: u32,
    tests_failing: u32,
}

impl Score {
    /// The score of `o`.
    pub(super) fn of(o: &Outcome) -> Score {
        let t = o.tests.as_ref();
        Score {
            passed: o.verdict == Verdict::Passed,
            tests_passed: t.map_or(0, |t| t.passed),
            tests_failing: t.map_or(0, |t| t.failed + t.errors),
        }
    }

    /// `passed/total` for messages, when there was a report.
    pub(super) fn counts(o: &Outcome) -> String {
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
pub(super) struct Change {
    /// Failing before, still there and not failing now.
    pub fixed: Vec<String>,
    /// Not failing before (so passing, or new), failing now.
    pub broke: Vec<String>,
    /// In the report before, absent from it now (deleted, renamed, or
    /// hidden by an error that stopped their collection): never "fixed".
    pub missing: Vec<String>,
}

impl Change {
    /// Whether the iteration lost ground: a test broke or went missing.
    pub(super) fn regressed(&self) -> bool {
        !self.broke.is_empty() || !self.missing.is_empty()
    }
}

/// The per-test change from `before` to `after`, when both have a report.
pub(super) fn compare(before: &Outcome, after: &Outcome) -> Option<Change> {
    let failing = |o: &Outcome| -> Option<BTreeSet<String>> {
        o.tests
            .as_ref()
            .map(|t| t.failing.iter().map(|f| f.name.clone()).collect())
    };
    let (b, a) = (failing(before)?, failing(after)?);
    let (names_before, names_after) = (&before.tests.as_ref()?.names, &after.tests.as_ref()?.names);
    // Without names (a report that came through the pool) a test that is
    // gone cannot be told from one that passes.
    let gone = |n: &String| !names_after.is_empty() && !names_after.contains(n);
    Some(Change {
        fixed: b.difference(&a).filter(|n| !gone(n)).cloned().collect(),
        broke: a.difference(&b).cloned().collect(),
        missing: if names_after.is_empty() {
            Vec::new()
        } else {
            names_before.difference(names_after).cloned().collect()
        },
    })
}

/// What the guard keeps between iterations.
#[derive(Default)]
pub(super) struct Guard {
    /// The commit message of changes not tested yet.
    pub(super) pending: Option<String>,
    /// The score of the last commit.
    pub(super) committed: Option<Score>,
    /// The last tested run.
    pub(super) prev: Option<Outcome>,
    /// What the last tested iteration changed.
    pub(super) change: Option<Change>,
    /// The best tested iteration: score, iteration, its files, its outcome.
    pub(super) best: Option<(Score, u32, tempfile::TempDir, Outcome)>,
}

impl<M: ModelClient, S: Sandbox + crate::env::Environments> Loop<'_, M, S> {
    /// After a test run: tell what it fixed and broke, commit the changes
    /// it tested (with their counts; with `--git-only-improving` only when
    /// strictly better than the last commit), and keep the best iteration's
    /// files for `--keep best`.
    pub(super) fn after_test(
        &mut self,
        i: u32,
        o: &Outcome,
        g: &mut Guard,
    ) -> Result<(), AgentError> {
        let score = Score::of(o);
        g.change = g.prev.as_ref().and_then(|prev| compare(prev, o));
        if let Some(c) = &g.change {
            self.obs.on(&RunEvent::Progress {
                iteration: i,
                fixed: c.fixed.clone(),
                broke: c.broke.clone(),
                missing: c.missing.clone(),
                regression: c.regressed(),
            });
        }
        if let Some(msg) = g.pending.take() {
            if !self.cfg.git_only_improving || g.committed.is_none_or(|c| score > c) {
                let mut counts = Score::counts(o);
                if let Some(c) = &g.change {
                    counts.push_str(&format!(
                        ", fixed {}, broke {}",
                        c.fixed.len(),
                        c.broke.len()
                    ));
                }
                self.commit(i, &format!("{msg} ({counts})"))?;
                g.committed = Some(score);
            } else if self.cfg.git {
                self.note(&format!(
                    "git: not committing iteration {i}: not better than the last commit"
                ));
            }
        }
        if self.cfg.keep_best && g.best.as_ref().is_none_or(|b| score > b.0) {
            let files = tempfile::Builder::new()
                .prefix("autodev-best-")
                .tempdir()
                .map_err(|source| WorkspaceError::Io {
                    op: "keeping the best iteration in",
                    path: std::env::temp_dir(),
                    source,
                })?;
            workspace::copy_tree(
                &self.cfg.workspace,
                files.path(),
                &workspace::CopyOptions {
                    excludes: vec![],
                    include_git: false,
                },
            )?;
            g.best = Some((score, i, files, o.clone()));
        }
        g.prev = Some(o.clone());
        Ok(())
    }

    /// With `--keep best`: when the last tested files are worse than the
    /// best iteration's, puts the best back (and commits it) and returns
    /// its outcome and iteration instead.
    pub(super) fn keep_best(
        &mut self,
        g: &mut Guard,
        fin: Outcome,
    ) -> Result<(Outcome, Option<u32>), AgentError> {
        let Some((score, at, files, outcome)) = g.best.take() else {
            return Ok((fin, None));
        };
        if !self.cfg.keep_best || score <= Score::of(&fin) {
            return Ok((fin, None));
        }
        workspace::restore(&self.cfg.workspace, files.path())?;
        self.obs.on(&RunEvent::KeepBest {
            iteration: at,
            best: Score::counts(&outcome),
            last: Score::counts(&fin),
        });
        self.commit(at, &format!("autodev: back to iteration {at}, the best"))?;
        Ok((outcome, Some(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, go, replay};
    use super::*;
    use crate::events::Recorder;
    use crate::sandbox::fake::{outcome, FakeSandbox};
    use crate::sandbox::junit::{TestFailure, TestReport};

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
    fn tests_hidden_by_a_collection_error_are_missing_not_fixed() {
        let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect();
        let mut before = run(Verdict::Failed, 3, &["t.test_add"]);
        before.tests.as_mut().unwrap().names = names(&["t.test_add", "t.test_mul", "t.test_sub"]);
        // A SyntaxError: pytest reports one error for the module, no test.
        let mut after = run(Verdict::Failed, 1, &["t"]);
        after.tests.as_mut().unwrap().names = names(&["t"]);
        let c = compare(&before, &after).unwrap();
        assert!(c.fixed.is_empty(), "{c:?}");
        assert_eq!(c.broke, ["t"]);
        assert_eq!(c.missing, ["t.test_add", "t.test_mul", "t.test_sub"]);
        assert!(c.regressed());
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

    fn with_tests(v: Verdict, total: u32, failing: &[&str]) -> Outcome {
        let mut o = outcome(v, i64::from(v != Verdict::Passed), "");
        o.tests = Some(crate::sandbox::junit::TestReport {
            total,
            passed: total - failing.len() as u32,
            failed: failing.len() as u32,
            failing: failing
                .iter()
                .map(|n| crate::sandbox::junit::TestFailure {
                    name: n.to_string(),
                    message: "assert".into(),
                })
                .collect(),
            ..Default::default()
        });
        o
    }

    #[tokio::test]
    async fn a_regression_is_told_not_committed_when_only_improving_and_undone_with_keep_best() {
        let d = tempfile::tempdir().unwrap();
        // v1 fails test_add; v2 fixes it but breaks test_sub (and one more);
        // v3 is as bad. The best files are v1's... then v2's, by score.
        let m = replay(&[
            "PATCH::calc.py\nv1\nENDPATCH",
            "PATCH::calc.py\nv2\nENDPATCH",
            "PATCH::calc.py\nv3\nENDPATCH",
        ]);
        let s = FakeSandbox::new(|spec, _| {
            let v = std::fs::read_to_string(spec.workspace.join("calc.py")).unwrap_or_default();
            Ok(match v.trim() {
                "v1" => with_tests(Verdict::Failed, 4, &["t.test_add"]),
                "v2" => with_tests(Verdict::Failed, 4, &["t.test_sub", "t.test_mul"]),
                _ => with_tests(
                    Verdict::Failed,
                    4,
                    &["t.test_sub", "t.test_mul", "t.test_div"],
                ),
            })
        });
        let mut c = cfg(d.path());
        c.max_iters = 3;
        c.git = true;
        c.git_only_improving = true;
        c.keep_best = true;
        let mut tr = Recorder::default();
        let sum = go(&m, &s, &c, &mut tr).await.unwrap();
        assert!(!sum.passed);
        // The last files (v3) were worse than v1's: v1's are back.
        assert_eq!(sum.kept_iteration, Some(1));
        assert_eq!(
            std::fs::read_to_string(d.path().join("calc.py")).unwrap(),
            "v1\n"
        );
        let text = tr.lines();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let progress: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["event"] == "progress").collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(!progress.is_empty(), "{kinds:?}");
        assert_eq!(progress[0]["regression"], true, "{progress:?}");
        assert_eq!(
            progress[0]["broke"],
            serde_json::json!(["t.test_mul", "t.test_sub"])
        );
        assert_eq!(progress[0]["fixed"], serde_json::json!(["t.test_add"]));
        // The repair prompt after v2 names the broken tests first.
        let prompts: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["event"] == "prompt").collect();
        let p2 = prompts[2]["messages"][1]["content"].as_str().unwrap();
        assert!(
            p2.contains("REGRESSION") && p2.contains("t.test_sub"),
            "{p2}"
        );
        // Only improving commits: the baseline and v1 (v2 and v3 were not
        // better); going back to v1 changes nothing committed.
        let repo = git2::Repository::open(d.path()).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        let msgs: Vec<String> = walk
            .map(|id| {
                let c = repo.find_commit(id.unwrap()).unwrap();
                c.summary().unwrap().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            msgs,
            [
                "autodev: initial generation (3/4 tests passed, 1 failed)",
                "autodev: baseline (before the model)"
            ]
        );
    }
}
