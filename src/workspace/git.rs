//! The optional git history of a workspace (`--git`).

use std::io;
use std::path::Path;

use super::{WorkspaceError, MARKER};

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The new commit, or `None` when nothing changed since the last one.
    pub id: Option<String>,
    /// Nested repositories (vendored clones, submodule checkouts) left out.
    pub skipped_repos: Vec<String>,
}

/// Commits the workspace's current state to its own git repository (created
/// on first use), honouring `.gitignore`. Nested repositories are left out
/// (git cannot add them as plain folders), and so is autodev's marker.
pub fn git_commit(root: &Path, message: &str) -> Result<Committed, WorkspaceError> {
    let gerr = |op: &'static str| {
        move |e: git2::Error| WorkspaceError::Io {
            op,
            path: root.to_path_buf(),
            source: io::Error::other(e.message().to_string()),
        }
    };
    // Open the workspace's own repository only: a repository further up (the
    // user's project) must not receive autodev's commits.
    let repo = match git2::Repository::open(root) {
        Ok(r) if r.workdir().and_then(|w| w.canonicalize().ok()) == root.canonicalize().ok() => r,
        _ => {
            let repo = git2::Repository::init(root).map_err(gerr("git init"))?;
            super::reset::note_git(root);
            // `git status` need not list autodev's marker.
            let exclude = repo.path().join("info").join("exclude");
            let _ = std::fs::create_dir_all(repo.path().join("info"));
            let old = std::fs::read_to_string(&exclude).unwrap_or_default();
            let _ = std::fs::write(&exclude, format!("{old}/{MARKER}\n"));
            repo
        }
    };
    let mut index = repo.index().map_err(gerr("git index"))?;
    let mut skipped_repos = Vec::new();
    let mut filter = |path: &Path, _: &[u8]| -> i32 {
        let nested = path.components().count() > 0
            && std::fs::symlink_metadata(root.join(path).join(".git")).is_ok();
        if nested {
            skipped_repos.push(path.to_string_lossy().trim_end_matches('/').to_string());
            1
        } else if path == Path::new(MARKER) {
            1
        } else {
            0
        }
    };
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, Some(&mut filter))
        .map_err(gerr("git add"))?;
    index
        .update_all(["*"], None)
        .and_then(|_| index.write())
        .map_err(gerr("git add"))?;
    skipped_repos.sort();
    skipped_repos.dedup();
    let tree_id = index.write_tree().map_err(gerr("git write-tree"))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
        return Ok(Committed {
            id: None,
            skipped_repos,
        });
    }
    let tree = repo.find_tree(tree_id).map_err(gerr("git tree"))?;
    let sig = repo
        .signature()
        .or_else(|_| git2::Signature::now("autodev", "autodev@localhost"))
        .map_err(gerr("git signature"))?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .map_err(gerr("git commit"))?;
    Ok(Committed {
        id: Some(id.to_string()),
        skipped_repos,
    })
}

/// With `--git` in a repository of the user's, autodev's commits would take
/// whatever is uncommitted (an untracked `.env`, staged work) into history
/// on the user's branch. So such a repository must be clean first: every
/// change committed or stashed, untracked files committed or ignored.
/// A folder that is not a repository, or one autodev made, passes.
pub fn check_clean(root: &Path) -> Result<(), WorkspaceError> {
    let Ok(repo) = git2::Repository::open(root) else {
        return Ok(());
    };
    let own = repo.workdir().and_then(|w| w.canonicalize().ok()) == root.canonicalize().ok();
    if !own || super::reset::observe(root).is_ok_and(|o| o.git_ours) {
        return Ok(());
    }
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(|e| WorkspaceError::Io {
            op: "git status",
            path: root.to_path_buf(),
            source: io::Error::other(e.message().to_string()),
        })?;
    let dirty: Vec<String> = statuses
        .iter()
        .map(|e| String::from_utf8_lossy(e.path_bytes()).into_owned())
        .filter(|p| p != MARKER)
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let more = dirty.len().saturating_sub(3);
    let mut names = dirty.into_iter().take(3).collect::<Vec<_>>().join(", ");
    if more > 0 {
        names.push_str(&format!(" and {more} more"));
    }
    Err(WorkspaceError::Dirty {
        path: root.to_path_buf(),
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn git_commits_only_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.py"), "1").unwrap();
        assert!(git_commit(d.path(), "autodev: initial")
            .unwrap()
            .id
            .is_some());
        assert!(git_commit(d.path(), "autodev: iteration 1")
            .unwrap()
            .id
            .is_none());
        fs::write(d.path().join("a.py"), "2").unwrap();
        assert!(git_commit(d.path(), "autodev: iteration 2")
            .unwrap()
            .id
            .is_some());
        let repo = git2::Repository::open(d.path()).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        let msgs: Vec<String> = walk
            .map(|id| {
                repo.find_commit(id.unwrap())
                    .unwrap()
                    .summary()
                    .unwrap()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(msgs, ["autodev: iteration 2", "autodev: initial"]);
    }

    #[test]
    fn nested_repositories_and_the_marker_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.py"), "1").unwrap();
        fs::write(d.path().join(MARKER), "m").unwrap();
        git2::Repository::init(d.path().join("vendor/lib")).unwrap();
        fs::write(d.path().join("vendor/lib/x.py"), "x").unwrap();
        let c = git_commit(d.path(), "autodev: baseline").unwrap();
        assert!(c.id.is_some());
        assert_eq!(c.skipped_repos, ["vendor/lib"]);
        let repo = git2::Repository::open(d.path()).unwrap();
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree.get_name("a.py").is_some());
        assert!(tree.get_name(MARKER).is_none());
    }
}

#[cfg(test)]
mod clean_tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_users_repository_with_uncommitted_work_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        fs::write(d.path().join("calc.py"), "x").unwrap();
        fs::write(d.path().join(".gitignore"), "secret.txt\n").unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("u", "u@localhost").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        check_clean(d.path()).unwrap();
        // Ignored files are not the user's work to commit.
        fs::write(d.path().join("secret.txt"), "s").unwrap();
        check_clean(d.path()).unwrap();
        fs::write(d.path().join(".env"), "SECRET=1").unwrap();
        let e = check_clean(d.path()).unwrap_err().to_string();
        assert!(e.contains(".env") && e.contains("stash"), "{e}");
        fs::remove_file(d.path().join(".env")).unwrap();
        fs::write(d.path().join("calc.py"), "changed").unwrap();
        assert!(check_clean(d.path()).is_err());
        // Not a repository: nothing to check.
        let plain = tempfile::tempdir().unwrap();
        fs::write(plain.path().join("a"), "1").unwrap();
        check_clean(plain.path()).unwrap();
    }
}
