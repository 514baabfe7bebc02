//! Repository tasks: a repository at a commit, a candidate patch, the
//! benchmark's test patch and the tests that must pass (SWE-bench's task
//! shape).
//!
//! The repository is a git repository or bare mirror (checked out at
//! `base_commit` into the scratch folder by libgit2: no hook, filter or
//! fsmonitor of the repository runs, its work tree is never touched), a
//! plain folder, or a tarball of the tree (one top-level folder is
//! dropped, as `git archive --prefix` makes). Patches are applied on the
//! host by [`patch::diff`](crate::patch::diff), never by `git apply`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::scratch::io_error;
use super::task::{confine, Kind, Source};
use crate::agent::AgentError;
use crate::patch::{self, diff};
use crate::sandbox::Command;
use crate::workspace::WorkspaceError;

/// Most bytes a repository tarball may unpack to.
const MAX_UNPACKED_BYTES: u64 = 8 << 30;
/// Most entries a repository tarball may hold.
const MAX_ENTRIES: usize = 1_000_000;
/// Largest file a patch may leave (a repository's files are bigger than a
/// model's replies).
pub(super) const MAX_PATCHED_FILE_BYTES: u64 = 64 << 20;

/// Where a repository task's tree comes from.
#[derive(Debug, Clone)]
pub(super) struct RepoSource {
    /// A git repository, bare mirror, plain folder or tarball.
    pub(super) path: PathBuf,
    /// The commit to check out (git only; `HEAD` when absent).
    pub(super) commit: Option<String>,
}

/// What a repository task checks.
#[derive(Debug, Clone)]
pub(super) struct RepoCheck {
    /// The candidate change (unified diff); empty means no candidate.
    pub(super) patch: String,
    /// Tests the benchmark adds, applied after the candidate.
    pub(super) test_patch: String,
    /// Tests that must go from failing to passing.
    pub(super) fail_to_pass: Vec<String>,
    /// Tests that must keep passing.
    pub(super) pass_to_pass: Vec<String>,
}

/// Why a repository task's patches did not apply.
#[derive(Debug)]
pub(super) enum Unapplied {
    /// The candidate: the task's verdict is `patch_failed`.
    Candidate(diff::DiffError),
    /// The candidate changes a file that configures or hooks the test
    /// runner (its path, and why that is refused).
    Hook(String, &'static str),
    /// The benchmark's own test patch, after the candidate.
    TestPatch(diff::DiffError),
}

/// Applies the candidate, then the test patch, on the checkout at `root`.
/// A candidate may not change what hooks or configures the test runner
/// (`conftest.py`, `pytest.ini`, a `.pth` file, a module named like the
/// framework: see `agent::protect`): code there runs inside the runner and
/// could write the report the verdict is read from.
pub(super) fn apply_patches(root: &Path, check: &RepoCheck) -> Result<(), Unapplied> {
    let files = diff::parse(&check.patch).map_err(Unapplied::Candidate)?;
    for f in &files {
        for p in [&f.old, &f.new].into_iter().flatten() {
            if let Some(why) = crate::agent::protect::hooks_tests(Path::new(p)) {
                return Err(Unapplied::Hook(p.clone(), why));
            }
        }
    }
    diff::apply(root, &files, MAX_PATCHED_FILE_BYTES).map_err(Unapplied::Candidate)?;
    if !diff::is_empty_diff(&check.test_patch) {
        diff::apply_text(root, &check.test_patch, MAX_PATCHED_FILE_BYTES)
            .map_err(Unapplied::TestPatch)?;
    }
    Ok(())
}

fn bad(path: &Path, detail: impl Into<String>) -> AgentError {
    AgentError::Workspace(WorkspaceError::Walk {
        path: path.to_path_buf(),
        detail: detail.into(),
    })
}

/// Puts the repository's tree at its commit into the empty folder `root`.
pub(super) fn check_out(src: &RepoSource, root: &Path) -> Result<(), AgentError> {
    let p = &src.path;
    let meta = std::fs::metadata(p).map_err(io_error("reading repository", p))?;
    // A tarball is one tree: a commit given with it is the one it was
    // made at, and is only recorded.
    if meta.is_file() {
        return unpack(p, root);
    }
    match git2::Repository::open(p) {
        Ok(repo) => git_tree(&repo, src, root),
        Err(_) if src.commit.is_none() => {
            crate::workspace::copy_tree(p, root, &crate::workspace::CopyOptions::default())?;
            Ok(())
        }
        Err(e) => Err(bad(
            p,
            format!(
                "base_commit is given but this is not a git repository ({}); give a repository, a bare mirror, or a tarball of the tree",
                e.message()
            ),
        )),
    }
}

/// Writes the tree of `src.commit` (or `HEAD`) into `root` with libgit2's
/// checkout into a separate folder: the repository's index and work tree
/// are left as they are.
fn git_tree(repo: &git2::Repository, src: &RepoSource, root: &Path) -> Result<(), AgentError> {
    let rev = src.commit.as_deref().unwrap_or("HEAD");
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            bad(
                &src.path,
                format!(
                    "commit {rev:?} is not in this repository ({}); fetch it into the mirror first",
                    e.message()
                ),
            )
        })?;
    let tree = commit.tree().map_err(|e| {
        bad(
            &src.path,
            format!("reading the tree of {rev}: {}", e.message()),
        )
    })?;
    // Into an empty folder: `recreate_missing` writes every file of the
    // tree; filters (smudge commands of the repository's attributes) off.
    let mut co = git2::build::CheckoutBuilder::new();
    co.target_dir(root)
        .force()
        .recreate_missing(true)
        .update_index(false)
        .disable_filters(true);
    repo.checkout_tree(tree.as_object(), Some(&mut co))
        .map_err(|e| {
            bad(
                &src.path,
                format!(
                    "checking out {rev} into the scratch folder: {}",
                    e.message()
                ),
            )
        })
}

/// Unpacks a tarball (plain or gzip) into `root`, dropping its one
/// top-level folder: regular files, folders and links only, every path
/// confined like a reply's, never through a link, within size caps.
fn unpack(path: &Path, root: &Path) -> Result<(), AgentError> {
    let file = std::fs::File::open(path).map_err(io_error("opening", path))?;
    let mut head = [0u8; 2];
    let gz = {
        let mut f = &file;
        f.read(&mut head).map_err(io_error("reading", path))? == 2 && head == [0x1f, 0x8b]
    };
    let file = std::fs::File::open(path).map_err(io_error("opening", path))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(path, format!("not a tar archive: {e}")))?;
    let (mut bytes, mut count) = (0u64, 0usize);
    let mut prefix: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(path, format!("reading the archive: {e}")))?;
        count += 1;
        bytes += entry.size();
        if count > MAX_ENTRIES || bytes > MAX_UNPACKED_BYTES {
            return Err(bad(
                path,
                format!("over the caps of {MAX_ENTRIES} entries or {MAX_UNPACKED_BYTES} bytes"),
            ));
        }
        let name = entry
            .path()
            .map_err(|e| bad(path, format!("an entry's name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let name = name.trim_start_matches("./");
        let top = name.split('/').next().unwrap_or("").to_string();
        let prefix = prefix.get_or_insert(top);
        let Some(rel) = name
            .strip_prefix(prefix.as_str())
            .map(|r| r.trim_start_matches('/'))
        else {
            return Err(bad(
                path,
                format!("{name:?} is outside the archive's top-level folder {prefix:?}: a repository tarball holds one folder"),
            ));
        };
        if rel.is_empty() {
            continue;
        }
        let refuse = |detail: String| bad(path, format!("entry {name:?}: {detail}"));
        let clean = patch::apply::confine(rel).map_err(|(_, d)| refuse(d))?;
        let dest = patch::apply::make_parents(root, &clean).map_err(|(_, d)| refuse(d))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(io_error("creating", &dest))?;
        } else if kind.is_file() || kind.is_symlink() {
            // A link is made as it is (the host never follows one: the
            // patch applier refuses to write through links); the sandbox
            // sees the tree as the repository has it.
            entry
                .unpack(&dest)
                .map_err(|e| refuse(format!("unpacking: {e}")))?;
        } else {
            return Err(refuse("only files, folders and links are unpacked".into()));
        }
    }
    Ok(())
}

// What a task line's repository fields become.

/// Test ids as a list, or as a JSON-encoded list (SWE-bench's dataset
/// stores them so).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum TestIds {
    List(Vec<String>),
    Encoded(String),
}

impl TestIds {
    pub(super) fn ids(self, field: &str) -> Result<Vec<String>, String> {
        match self {
            TestIds::List(l) => Ok(l),
            TestIds::Encoded(s) => serde_json::from_str(&s)
                .map_err(|e| format!("{field}: a list of test ids, or one JSON-encoded: {e}")),
        }
    }
}

/// Where a repository task's test command leaves its report: `test_results`,
/// else what the command names; `None` keeps the profile's.
pub(super) fn report_at(
    kind: &Kind,
    test_results: Option<String>,
    runner: &Command,
) -> Result<Option<crate::sandbox::Junit>, String> {
    if !matches!(kind, Kind::Repo(_)) {
        return match test_results {
            Some(_) => Err(
                "test_results is for repository tasks; elsewhere the profile's report is read"
                    .into(),
            ),
            None => Ok(None),
        };
    }
    let Some(p) = test_results.or_else(|| super::repo::report_path(&runner.to_string())) else {
        return Ok(None);
    };
    let rel = patch::apply::confine(&p).map_err(|(_, why)| format!("test_results {p:?}: {why}"))?;
    Ok(Some(crate::sandbox::Junit::At(format!(
        "/workspace/{}",
        rel.display()
    ))))
}

/// A task line's repository fields, before they are checked.
pub(super) struct RepoFields {
    pub(super) repo: Option<PathBuf>,
    pub(super) base_commit: Option<String>,
    pub(super) patch: Option<String>,
    pub(super) test_patch: Option<String>,
    pub(super) fail_to_pass: Option<TestIds>,
    pub(super) pass_to_pass: Option<TestIds>,
}

impl RepoFields {
    pub(super) fn given(&self) -> bool {
        self.repo.is_some()
            || self.base_commit.is_some()
            || self.patch.is_some()
            || self.test_patch.is_some()
            || self.fail_to_pass.is_some()
            || self.pass_to_pass.is_some()
    }

    /// The source and kind of a repository task: the repository confined
    /// like a workspace folder, the test ids read.
    pub(super) fn into_task(self, base: &Path, allow: bool) -> Result<(Source, Kind), String> {
        let Some(repo) = self.repo else {
            return Err(
                "base_commit, patch, test_patch, FAIL_TO_PASS and PASS_TO_PASS need repo: the repository they apply to".into(),
            );
        };
        let path = confine(base, &repo, "repo", allow)?;
        if !path.exists() {
            return Err(format!("repo {} does not exist", path.display()));
        }
        if let Some(c) = &self.base_commit {
            if c.is_empty()
                || c.len() > 256
                || c.starts_with('-')
                || c.chars().any(char::is_control)
            {
                return Err(format!("base_commit {c:?} is not a commit name"));
            }
        }
        let check = super::repo::RepoCheck {
            patch: self.patch.unwrap_or_default(),
            test_patch: self.test_patch.unwrap_or_default(),
            fail_to_pass: self
                .fail_to_pass
                .map(|t| t.ids("FAIL_TO_PASS"))
                .transpose()?
                .unwrap_or_default(),
            pass_to_pass: self
                .pass_to_pass
                .map(|t| t.ids("PASS_TO_PASS"))
                .transpose()?
                .unwrap_or_default(),
        };
        Ok((
            Source::Repo(super::repo::RepoSource {
                path,
                commit: self.base_commit,
            }),
            Kind::Repo(check),
        ))
    }
}

/// Where a test command leaves its per-test report, relative to the
/// workspace: pytest's `--junitxml PATH`, or the file `go test -json` is
/// redirected to. `None` when it names none.
pub(super) fn report_path(cmd: &str) -> Option<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(p) = w
            .strip_prefix("--junitxml=")
            .or_else(|| w.strip_prefix("--junit-xml="))
        {
            return Some(p.to_string());
        }
        if (*w == "--junitxml" || *w == "--junit-xml") && i + 1 < words.len() {
            return Some(words[i + 1].to_string());
        }
    }
    let json = words.contains(&"-json") && words.first().is_some_and(|w| *w == "go");
    if json {
        let at = words.iter().position(|w| *w == ">")?;
        return words.get(at + 1).map(|p| p.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_a_test_command_writes_is_found() {
        assert_eq!(
            report_path("python3 -m pytest -rA --junitxml=test-results.xml tests/x.py").as_deref(),
            Some("test-results.xml")
        );
        assert_eq!(
            report_path("pytest --junitxml out/r.xml").as_deref(),
            Some("out/r.xml")
        );
        assert_eq!(
            report_path("go test -v -count=1 -json ./doc/ > go-test.json").as_deref(),
            Some("go-test.json")
        );
        assert_eq!(report_path("go test ./..."), None);
        assert_eq!(report_path("make test"), None);
    }

    fn tarball(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        if let Some((p, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, p, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tarball_loses_its_top_folder_and_keeps_confinement() {
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("r.tar");
        std::fs::write(
            &tar,
            tarball(
                &[("proj/a.py", b"x = 1\n"), ("proj/pkg/b.py", b"")],
                Some(("proj/l", "/etc")),
            ),
        )
        .unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = RepoSource {
            path: tar.clone(),
            commit: None,
        };
        check_out(&src, &out).unwrap();
        assert_eq!(std::fs::read(out.join("a.py")).unwrap(), b"x = 1\n");
        assert!(out.join("pkg/b.py").is_file());
        assert!(out
            .join("l")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        // Writing through that link is refused by every host-side writer.
        let e = diff::apply_text(
            &out,
            "--- /dev/null\n+++ b/l/passwd\n@@ -0,0 +1 @@\n+x\n",
            1 << 20,
        );
        assert!(e.unwrap_err().detail.contains("symlink"));
        for (entries, why) in [
            (vec![("proj/.git/config", &b"x"[..])], "protected"),
            (
                vec![("proj/a", &b""[..]), ("other/b", &b""[..])],
                "top-level folder",
            ),
        ] {
            std::fs::write(&tar, tarball(&entries, None)).unwrap();
            let out = tempfile::tempdir().unwrap();
            let e = check_out(&src, out.path()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_git_repository_is_checked_out_at_its_commit_without_touching_it() {
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let commit = |text: &str, parent: Option<git2::Oid>| {
            std::fs::write(d.path().join("f.txt"), text).unwrap();
            let mut idx = repo.index().unwrap();
            idx.add_path(Path::new("f.txt")).unwrap();
            idx.write().unwrap();
            let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parent
                .map(|p| repo.find_commit(p).unwrap())
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            repo.commit(Some("HEAD"), &sig, &sig, text, &tree, &refs)
                .unwrap()
        };
        let first = commit("one\n", None);
        commit("two\n", Some(first));
        std::fs::write(d.path().join("f.txt"), "uncommitted\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let src = RepoSource {
            path: d.path().to_path_buf(),
            commit: Some(first.to_string()),
        };
        check_out(&src, out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("f.txt")).unwrap(),
            "one\n"
        );
        assert!(!out.path().join(".git").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("f.txt")).unwrap(),
            "uncommitted\n",
            "the repository's work tree is the user's"
        );
        let missing = RepoSource {
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            ..src
        };
        let e = check_out(&missing, tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(e.to_string().contains("is not in this repository"), "{e}");
    }
}

#[cfg(test)]
mod line_tests {
    use super::super::task::{parse_task, Kind};
    use crate::sandbox::RunSpec;

    #[test]
    fn repository_fields_are_checked_together() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("r")).unwrap();
        let d = RunSpec::new("", "", "img");
        let parse = |l: &str| parse_task(l, root.path(), &d, false).map_err(|e| e.2);
        let err = |l: &str| parse(l).unwrap_err();
        assert!(err(r#"{"id":"a","test_cmd":"t","patch":"x"}"#).contains("need repo"));
        assert!(
            err(r#"{"id":"a","test_cmd":"t","repo":"r","files":{"a":"b"}}"#)
                .contains("files cannot be given with repo")
        );
        assert!(err(r#"{"id":"a","test_cmd":"t","repo":"../r"}"#).contains("repo"));
        assert!(
            err(r#"{"id":"a","test_cmd":"t","repo":"r","FAIL_TO_PASS":"[x"}"#)
                .contains("FAIL_TO_PASS")
        );
        assert!(
            err(r#"{"id":"a","test_cmd":"t","repo":"r","base_commit":"--upload-pack=x"}"#)
                .contains("not a commit name")
        );
        assert!(err(r#"{"id":"a","runner":"t","test_results":"r.xml"}"#)
            .contains("for repository tasks"));
        assert!(
            err(r#"{"id":"a","test_cmd":"t","repo":"r","test_results":"../r.xml"}"#)
                .contains("test_results")
        );
        assert!(
            err(r#"{"id":"a","runner":"t","unusable":"no repository for a"}"#)
                .contains("no repository for a")
        );
        let t = parse(
            r#"{"id":"a","test_cmd":"pytest --junitxml=out/r.xml","repo":"r","patch":"p","FAIL_TO_PASS":"[\"t.py::x\"]","PASS_TO_PASS":["t.py::y"],"profile":"go"}"#,
        )
        .unwrap();
        assert_eq!(
            t.spec.junit,
            crate::sandbox::Junit::At("/workspace/out/r.xml".into())
        );
        assert_eq!(
            (t.profile.as_deref(), t.image_from_profile),
            (Some("go"), true)
        );
        let Kind::Repo(c) = t.kind else {
            panic!("not a repository task")
        };
        assert_eq!(
            (c.fail_to_pass, c.pass_to_pass),
            (vec!["t.py::x".to_string()], vec!["t.py::y".to_string()])
        );
    }
}
