//! Held-out tests (`--holdout DIR`): tests the model never sees, laid over
//! a scratch copy of the workspace at each check, so the verdict comes from
//! tests a reply could not have read, edited or tailored its code to.
//!
//! The model edits the workspace and is shown only what the workspace's own
//! tests print. When those pass, the held-out tests run on a copy of the
//! workspace with DIR's files laid over it at their own paths (a held-out
//! file replaces the workspace's file of the same path); the model is told
//! only how many of them failed, never their names, code or output. With
//! `--holdout-final-only` they run once, at the end.

use std::path::{Path, PathBuf};

use super::{AgentError, Loop};
use crate::events::{RunEvent, TestRun, TestStep};
use crate::model::ModelClient;
use crate::sandbox::{Outcome, Sandbox};
use crate::workspace::{self, CopyOptions, WorkspaceError};

/// Where the held-out tests are, and when they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    /// The folder of held-out files, laid over the workspace's root.
    pub dir: PathBuf,
    /// Run them only at the end, not at every check that the visible tests pass.
    pub final_only: bool,
}

/// A scratch copy of `ws` (as the sandbox would copy it) with `holdout`'s
/// files laid over it; removed when dropped.
pub(super) fn overlay(
    ws: &Path,
    copy: &CopyOptions,
    holdout: &Path,
) -> Result<tempfile::TempDir, WorkspaceError> {
    let dir = tempfile::Builder::new()
        .prefix("autodev-holdout-")
        .tempdir()
        .map_err(|source| WorkspaceError::Io {
            op: "making a scratch folder for the held-out tests in",
            path: std::env::temp_dir(),
            source,
        })?;
    workspace::copy_tree(ws, dir.path(), copy)?;
    // Second, so a held-out file wins over the workspace's, and a link the
    // model planted where a held-out folder goes is replaced, not followed.
    workspace::copy_tree(
        holdout,
        dir.path(),
        &CopyOptions {
            excludes: Vec::new(),
            include_git: false,
        },
    )?;
    Ok(dir)
}

impl<M: ModelClient, S: Sandbox + crate::env::Environments> Loop<'_, M, S> {
    /// A test run of the workspace with the held-out tests laid over it,
    /// in a scratch copy. Its output goes to the transcript (the
    /// operator's), never to the model.
    pub(super) async fn test_holdout(&mut self, iteration: u32) -> Result<Outcome, AgentError> {
        let Some(h) = &self.cfg.holdout else {
            return self.test(iteration, TestStep::Final).await;
        };
        self.obs.on(&RunEvent::Testing {
            step: TestStep::Holdout,
            runner: self.cfg.runner.to_string(),
        });
        let scratch = overlay(&self.cfg.workspace, &self.cfg.sandbox.copy, &h.dir)?;
        let mut spec = self.spec();
        spec.workspace = scratch.path().to_path_buf();
        let outcome = self.run_in_environment(&mut spec, false).await?;
        self.obs
            .on(&RunEvent::Holdout(TestRun::of(iteration, &outcome)));
        Ok(outcome)
    }
}

/// What the model is told of a held-out run: how it ended and how many of
/// its tests failed, nothing that would show the tests themselves.
pub(super) fn told(o: &Outcome) -> String {
    match &o.tests {
        Some(t) => format!(
            "your code passes the visible tests but not the held-out tests, which you cannot see ({} of {} failed or errored). Make the code correct in general, for every input the task allows, not only for the visible tests",
            t.failed + t.errors,
            t.total
        ),
        None => format!(
            "your code passes the visible tests but not the held-out tests, which you cannot see (they ended {}). Make the code correct in general, for every input the task allows, not only for the visible tests",
            o.verdict
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn held_out_files_win_and_a_planted_link_is_replaced_not_followed() {
        let ws = tempfile::tempdir().unwrap();
        let hold = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(ws.path().join("calc.py"), "code").unwrap();
        fs::write(ws.path().join("test_calc.py"), "model's version").unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("hidden")).unwrap();
        fs::write(hold.path().join("test_calc.py"), "held out").unwrap();
        fs::create_dir(hold.path().join("hidden")).unwrap();
        fs::write(hold.path().join("hidden/test_more.py"), "more").unwrap();
        let o = overlay(ws.path(), &CopyOptions::default(), hold.path()).unwrap();
        assert_eq!(
            fs::read_to_string(o.path().join("calc.py")).unwrap(),
            "code"
        );
        assert_eq!(
            fs::read_to_string(o.path().join("test_calc.py")).unwrap(),
            "held out"
        );
        assert!(o.path().join("hidden/test_more.py").is_file());
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
        // The workspace itself is untouched.
        assert_eq!(
            fs::read_to_string(ws.path().join("test_calc.py")).unwrap(),
            "model's version"
        );
    }
}
