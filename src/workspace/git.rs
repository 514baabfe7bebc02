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
        _ => git2::Repository::init(root).map_err(gerr("git init"))?,
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
