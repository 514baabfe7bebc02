//! Scratch copies of task workspaces, and cleaning up after dead processes.

use std::path::{Path, PathBuf};

use super::task::Source;
use crate::agent::AgentError;
use crate::patch;
use crate::workspace::CopyOptions;

/// Prefix of scratch folders; the owner's pid follows, so `autodev clean`
/// can tell the folders of dead processes from those of running ones.
pub const SCRATCH_PREFIX: &str = "autodev-task-";

/// Removes the scratch folders in `dir` whose owner process is gone (a
/// `kill -9` leaves them); returns how many. Folders of live processes,
/// and anything not named like a scratch folder, are left alone.
pub fn clean_scratch(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !process_alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// An I/O error on `path` as a task's workspace error.
pub(super) fn io_error(op: &'static str, path: &Path) -> impl Fn(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| {
        AgentError::Workspace(crate::workspace::WorkspaceError::Io {
            op,
            path: path.clone(),
            source,
        })
    }
}

pub(super) fn scratch_dir(scratch: Option<&Path>) -> std::io::Result<tempfile::TempDir> {
    let prefix = format!("{SCRATCH_PREFIX}{}-", std::process::id());
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    match scratch {
        Some(s) => b.tempdir_in(s),
        None => b.tempdir(),
    }
}

/// Scratch copy of a task's files; the guard deletes it when dropped.
pub(super) fn prepare(
    source: &Source,
    writes: bool,
    scratch: Option<&Path>,
) -> Result<(Option<tempfile::TempDir>, PathBuf), AgentError> {
    if let (Source::Folder(p), false) = (source, writes) {
        return Ok((None, p.clone()));
    }
    let (dir, root) = copy_in(source, scratch)?;
    Ok((Some(dir), root))
}

/// A new scratch folder holding `source`'s files.
pub(super) fn copy_in(
    source: &Source,
    scratch: Option<&Path>,
) -> Result<(tempfile::TempDir, PathBuf), AgentError> {
    let io = io_error;
    let dir = scratch_dir(scratch).map_err(io(
        "creating scratch folder",
        scratch.unwrap_or(Path::new("/tmp")),
    ))?;
    let root = dir.path().to_path_buf();
    match source {
        Source::Empty => {}
        Source::Inline(files) => {
            for (rel, content) in files {
                let rel = patch::apply::confine(rel).map_err(|(_, why)| {
                    AgentError::Workspace(crate::workspace::WorkspaceError::Walk {
                        path: PathBuf::from(rel),
                        detail: why,
                    })
                })?;
                let path = root.join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                std::fs::write(&path, content).map_err(io("writing", &path))?;
            }
        }
        Source::Folder(src) => {
            crate::workspace::copy_tree(src, &root, &CopyOptions::default())?;
        }
        Source::Repo(repo) => super::repo::check_out(repo, &root)?,
    }
    Ok((dir, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_scratch_removes_only_dead_owners_folders() {
        let d = tempfile::tempdir().unwrap();
        let mine = d
            .path()
            .join(format!("{SCRATCH_PREFIX}{}-abc", std::process::id()));
        // pid_max is at most 2^22 on Linux: this pid cannot be alive.
        let dead = d.path().join(format!("{SCRATCH_PREFIX}99999999-abc"));
        let other = d.path().join("autodev-taskish-1-x");
        for p in [&mine, &dead, &other] {
            std::fs::create_dir_all(p.join("sub")).unwrap();
        }
        assert_eq!(clean_scratch(d.path()), 1);
        assert!(mine.exists() && other.exists() && !dead.exists());
    }
}
