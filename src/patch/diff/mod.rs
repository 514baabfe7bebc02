//! Unified diffs (`diff -u`, `git diff`) applied to a workspace by
//! autodev itself, with the same confinement as whole-file blocks.
//!
//! Grammar read: optional `diff --git a/X b/Y` headers with their extended
//! lines (`new file mode`, `deleted file mode`, `rename from`/`rename to`,
//! `index`, mode changes), then `--- a/X` / `+++ b/Y` and hunks
//! `@@ -l,s +l,s @@` whose lines start with ` `, `-`, `+` or
//! `\ No newline at end of file`. Paths lose their first component (`-p1`,
//! as `git apply` does); `/dev/null` marks a created or deleted file.
//!
//! Not done, on purpose: fuzz (a hunk whose context differs is refused,
//! never fitted), binary patches, symlinks (mode 120000), copies. A hunk
//! may sit at another line than its header says (files drift), searched
//! outwards from there, never before the previous hunk.
//!
//! A diff applies whole or not at all: every file's new content is worked
//! out in memory first, and nothing is written when any hunk fails. Every
//! path goes through [`confine`](super::apply::confine) and is reached
//! through real folders only; a result over the size cap is refused.
//!
//! Reading the grammar is `read.rs`'s; placing hunks and writing files is
//! `write.rs`'s.

mod read;
mod write;

use std::fmt;
use std::path::Path;

pub use read::parse;
pub use write::apply;

/// Largest diff read, in bytes.
pub const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

/// Why a diff was not applied: which file, which hunk, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffError {
    /// The file as the diff names it (empty before any file header).
    pub path: String,
    /// 1-based hunk of that file, when one is to blame.
    pub hunk: Option<usize>,
    /// 1-based line of the diff where the trouble is.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for DiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.hunk, self.path.is_empty()) {
            (Some(h), _) => write!(
                f,
                "{}: hunk {h} (diff line {}): {}",
                self.path, self.line, self.detail
            ),
            (None, false) => write!(
                f,
                "{} (diff line {}): {}",
                self.path, self.line, self.detail
            ),
            (None, true) => write!(f, "diff line {}: {}", self.line, self.detail),
        }
    }
}

impl std::error::Error for DiffError {}

/// One file's part of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path before (`None`: the file is created).
    pub old: Option<String>,
    /// The path after (`None`: the file is deleted).
    pub new: Option<String>,
    /// Mode of a created file (`100755` makes it executable).
    pub new_mode: Option<u32>,
    /// Hunks in order.
    pub hunks: Vec<Hunk>,
    /// 1-based line of the diff where this file starts.
    pub line: usize,
}

/// One `@@` hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based first line of the old side (0 for an empty old side).
    pub old_start: usize,
    /// Old side, lines without their `\n`.
    pub old: Vec<String>,
    /// New side, lines without their `\n`.
    pub new: Vec<String>,
    /// The old side's last line had no newline.
    pub old_no_eol: bool,
    /// The new side's last line has no newline.
    pub new_no_eol: bool,
    /// 1-based line of the `@@` header.
    pub line: usize,
}

/// What applying a diff changed, by path relative to the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written (created or changed).
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
}

impl Applied {
    /// Every path touched.
    pub fn len(&self) -> usize {
        self.written.len() + self.removed.len()
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `text` holds no change at all (empty, or only blank lines).
pub fn is_empty_diff(text: &str) -> bool {
    text.trim().is_empty()
}

/// Parses and applies `text` under `root` (see [`parse`] and [`apply`]).
pub fn apply_text(root: &Path, text: &str, max_bytes: u64) -> Result<Applied, DiffError> {
    apply(root, &parse(text)?, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        d
    }

    fn read(d: &tempfile::TempDir, p: &str) -> String {
        std::fs::read_to_string(d.path().join(p)).unwrap()
    }

    const CAP: u64 = 1 << 20;

    #[test]
    fn a_git_diff_changes_creates_and_deletes() {
        let d = tree(&[
            ("src/a.py", "one\ntwo\nthree\nfour\n"),
            ("old.txt", "bye\n"),
        ]);
        let diff = "diff --git a/src/a.py b/src/a.py\nindex 1..2 100644\n--- a/src/a.py\n+++ b/src/a.py\n@@ -1,4 +1,4 @@\n one\n-two\n+TWO\n three\n four\n\
diff --git a/new.txt b/new.txt\nnew file mode 100755\nindex 0000000..1\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n\
diff --git a/old.txt b/old.txt\ndeleted file mode 100644\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        let done = apply_text(d.path(), diff, CAP).unwrap();
        assert_eq!(read(&d, "src/a.py"), "one\nTWO\nthree\nfour\n");
        assert_eq!(read(&d, "new.txt"), "hello\nworld\n");
        assert!(!d.path().join("old.txt").exists());
        assert_eq!(done.written, vec!["src/a.py", "new.txt"]);
        assert_eq!(done.removed, vec!["old.txt"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("new.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "new file mode 100755 is executable");
    }

    #[test]
    fn a_hunk_that_drifted_is_found_and_later_hunks_follow() {
        let mut body: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
        let d = tree(&[("f.txt", &(body.join("\n") + "\n"))]);
        // Headers say lines 5 and 30, but three lines were added on top since.
        std::fs::write(
            d.path().join("f.txt"),
            format!("x\ny\nz\n{}\n", body.join("\n")),
        )
        .unwrap();
        let diff = "--- a/f.txt\n+++ b/f.txt\n@@ -5,3 +5,3 @@\n line 5\n-line 6\n+LINE 6\n line 7\n@@ -30,2 +30,3 @@\n line 30\n+added\n line 31\n";
        apply_text(d.path(), diff, CAP).unwrap();
        body[5] = "LINE 6".into();
        body.insert(30, "added".into());
        assert_eq!(read(&d, "f.txt"), format!("x\ny\nz\n{}\n", body.join("\n")));
    }

    #[test]
    fn a_hunk_that_does_not_match_names_the_file_the_hunk_and_the_line() {
        let d = tree(&[("a.txt", "a\nb\nc\n"), ("b.txt", "keep\n")]);
        let diff = "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-keep\n+changed\n--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n a\n-B\n+x\n c\n";
        let e = apply_text(d.path(), diff, CAP).unwrap_err();
        assert_eq!((e.path.as_str(), e.hunk, e.line), ("a.txt", Some(1), 8));
        assert!(
            e.detail
                .contains("at line 2 it expects \"B\" but the file has \"b\""),
            "{e}"
        );
        assert_eq!(
            read(&d, "b.txt"),
            "keep\n",
            "nothing is written when a hunk fails"
        );
    }

    #[test]
    fn confinement_holds_for_diffs() {
        let d = tree(&[("in.txt", "x\n")]);
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        for (diff, why) in [
            ("--- /dev/null\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+x\n", "`..`"),
            ("--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+x\n", "protected"),
            ("--- /dev/null\n+++ b/link/x.txt\n@@ -0,0 +1 @@\n+x\n", "symlink"),
            ("--- /dev/null\n+++ /etc/passwd\n@@ -0,0 +1 @@\n+x\n", "relative"),
            ("diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc\n", "symbolic links"),
            ("diff --git a/in.txt b/in.txt\nGIT binary patch\nliteral 1\n", "binary"),
            ("--- a/in.txt\n+++ b/in.txt\n@@ -1 +1,2 @@\n x\n+y\n+z\n", "counts"),
        ] {
            let e = apply_text(d.path(), diff, CAP).unwrap_err();
            assert!(e.to_string().contains(why), "{diff:?}: {e}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!d.path().join(".git").exists());
        let big = format!(
            "--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1 @@\n+{}\n",
            "x".repeat(100)
        );
        let e = apply_text(d.path(), &big, 50).unwrap_err();
        assert!(e.detail.contains("over the 50-byte cap"), "{e}");
    }

    #[test]
    fn crlf_and_missing_final_newlines_are_kept() {
        let d = tree(&[("w.txt", "a\r\nb\r\n"), ("n.txt", "a\nb")]);
        let diff = "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n\
--- a/n.txt\n+++ b/n.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n";
        apply_text(d.path(), diff, CAP).unwrap();
        assert_eq!(read(&d, "w.txt"), "a\r\nc\r\n");
        assert_eq!(read(&d, "n.txt"), "a\nc\n", "the new side has its newline");
        let back =
            "--- a/n.txt\n+++ b/n.txt\n@@ -1,2 +1,2 @@\n a\n-c\n+d\n\\ No newline at end of file\n";
        apply_text(d.path(), back, CAP).unwrap();
        assert_eq!(read(&d, "n.txt"), "a\nd");
    }

    #[test]
    fn renames_and_blank_context_without_its_space() {
        let d = tree(&[("a.txt", "1\n\n3\n")]);
        let diff = "diff --git a/a.txt b/b.txt\nsimilarity index 90%\nrename from a.txt\nrename to b.txt\n--- a/a.txt\n+++ b/b.txt\n@@ -1,3 +1,3 @@\n 1\n\n-3\n+three\n";
        apply_text(d.path(), diff, CAP).unwrap();
        assert!(!d.path().join("a.txt").exists());
        assert_eq!(read(&d, "b.txt"), "1\n\nthree\n");
        let pure = "diff --git a/b.txt b/c.txt\nsimilarity index 100%\nrename from b.txt\nrename to c.txt\n";
        apply_text(d.path(), pure, CAP).unwrap();
        assert_eq!(read(&d, "c.txt"), "1\n\nthree\n");
    }

    #[test]
    fn an_empty_diff_is_told_apart() {
        assert!(is_empty_diff("\n  \n"));
        assert!(!is_empty_diff("--- a/x\n"));
        assert_eq!(parse("just words\n").unwrap(), Vec::new());
    }
}
