//! The workspace folder on the host: what gets copied into a sandbox
//! ([`copy`]: a tar stream, never a bind mount), the file context shown to
//! the model ([`context`]), export to zip ([`export`]), the optional git
//! history ([`git`]) and what `--reset` may delete ([`reset`]).

pub mod context;
pub mod copy;
pub mod export;
pub mod focus;
pub mod git;
pub mod reset;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use context::{file_context, CONTEXT_MAX_FILE_BYTES};
pub use copy::{copy_tree, hex, manifest, tree_hash, write_tar, Entry, EntryKind, Manifest};
pub use export::export_zip;
pub use focus::{prompt_context, Focus, MAX_READS};
pub use git::git_commit;

/// Folders left out of the copy unless asked for: build output and VCS data
/// are large and rarely needed by tests.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "target/",
    "node_modules/",
    ".git/",
    "__pycache__/",
    ".venv/",
];

/// File autodev keeps in a workspace it created or seeded, so `--reset`
/// knows the folder is its own. Never copied, zipped, committed or shown to
/// the model, and never written by a patch.
pub const MARKER: &str = ".autodev-workspace";

/// Every workspace error is the caller's to fix.
impl crate::error::Classify for WorkspaceError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Usage
    }
}

/// A problem with the workspace folder.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The folder does not exist or is not a folder.
    #[error("workspace {0} is not a folder: create it or pass --workspace DIR")]
    NotADirectory(PathBuf),
    /// A folder to copy from (a seed, a task's workspace) is missing.
    #[error("{what} {path} is not a folder")]
    SourceMissing {
        /// What the folder is for, e.g. "--seed".
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The files add up to more than the copy cap.
    #[error("workspace {path} holds more than the {limit}-byte copy limit (counting stopped at {total} bytes): add --exclude patterns or raise --max-copy")]
    TooLarge {
        /// The workspace.
        path: PathBuf,
        /// Bytes found so far.
        total: u64,
        /// The cap.
        limit: u64,
    },
    /// More files and folders than the sandbox's workspace holds.
    #[error("workspace {path} holds {count} files and folders; the sandbox's /workspace holds fewer than {limit}: leave some out with --exclude (build output, data, dependencies)")]
    TooManyFiles {
        /// The workspace.
        path: PathBuf,
        /// Files and folders to copy.
        count: usize,
        /// The sandbox's cap.
        limit: u32,
    },
    /// An exclude pattern is not a valid glob.
    #[error("invalid exclude pattern {pattern:?}: {detail}")]
    BadExclude {
        /// The pattern.
        pattern: String,
        /// Why.
        detail: String,
    },
    /// A file changed size while it was being packed.
    #[error("{0} changed while it was being copied: try again")]
    Changed(PathBuf),
    /// `--git` in a repository of the user's that has uncommitted work.
    #[error("--git: the repository {path} has uncommitted changes or untracked files ({names}); autodev would commit them with its own: commit, stash or .gitignore them first, or run without --git")]
    Dirty {
        /// The repository.
        path: PathBuf,
        /// The first few paths.
        names: String,
    },
    /// A walk error from the directory walker.
    #[error("walking {path}: {detail}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// What.
        detail: String,
    },
}

/// Puts back the files saved in `saved` (by [`copy_tree`]): everything in
/// `root` but `.git` and autodev's marker is removed first.
pub fn restore(root: &Path, saved: &Path) -> Result<(), WorkspaceError> {
    let entries = std::fs::read_dir(root).map_err(io_err("reading", root))?;
    for e in entries {
        let e = e.map_err(io_err("reading", root))?;
        let name = e.file_name();
        if name == ".git" || name == MARKER {
            continue;
        }
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(io_err("removing", &path))?;
    }
    copy_tree(
        saved,
        root,
        &CopyOptions {
            excludes: vec![],
            include_git: false,
        },
    )?;
    Ok(())
}

/// Whether the folder holds at least one regular file (autodev's marker and
/// `.git` aside), without following links.
pub fn has_files(root: &Path) -> Result<bool, WorkspaceError> {
    let m = copy::manifest(
        root,
        &CopyOptions {
            excludes: vec![],
            include_git: false,
        },
        u64::MAX,
    )?;
    Ok(m.entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::File(_))))
}

/// A walk error, naming the path once: the walker's own message repeats it.
pub(crate) fn walk_err(root: &Path, e: ignore::Error) -> WorkspaceError {
    fn path_of(e: &ignore::Error) -> Option<&Path> {
        match e {
            ignore::Error::WithPath { path, .. } => Some(path),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                path_of(err)
            }
            _ => None,
        }
    }
    let path = path_of(&e).unwrap_or(root).to_path_buf();
    let detail = match e.io_error() {
        Some(io) => io.to_string(),
        None => e.to_string(),
    };
    WorkspaceError::Walk { path, detail }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What to leave out when copying a workspace into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CopyOptions {
    /// Gitignore-style patterns to leave out.
    pub excludes: Vec<String>,
    /// Copy `.git/` too.
    pub include_git: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            excludes: DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
            include_git: false,
        }
    }
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    #[test]
    fn a_walk_error_names_the_path_once() {
        let e = ignore::Error::WithPath {
            path: PathBuf::from("wsp/sub"),
            err: Box::new(ignore::Error::Io(io::Error::from_raw_os_error(13))),
        };
        let text = walk_err(Path::new("wsp"), e).to_string();
        assert_eq!(text.matches("wsp/sub").count(), 1, "{text}");
        assert!(text.contains("Permission denied"), "{text}");
    }
}
