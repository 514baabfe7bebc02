//! The workspace's files as text for the model's prompt.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, CopyOptions, WorkspaceError, MARKER};

/// Files above this size are left out of the model's context (as the original tool did).
pub const CONTEXT_MAX_FILE_BYTES: u64 = 80_000;

/// One file the model may be shown.
pub(crate) struct ContextFile {
    /// Path relative to the workspace.
    pub(crate) rel: String,
    /// Its text.
    pub(crate) text: String,
}

/// The files the model may be shown, sorted by path: honouring
/// `.gitignore` and leaving out all that the copy leaves out (`copy`:
/// `--exclude` and the default excludes), skipping `.git`, symlinks, files
/// over 80 KB and non-UTF-8 files.
pub(crate) fn context_files(
    root: &Path,
    copy: &CopyOptions,
) -> Result<Vec<ContextFile>, WorkspaceError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .overrides(super::copy::exclusions(root, copy)?)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git" && e.file_name() != MARKER)
        .build();
    for item in walker {
        let item = item.map_err(|e| super::walk_err(root, e))?;
        if !item.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let rel = item.path().strip_prefix(root).unwrap_or(item.path());
        files.push((
            rel.to_string_lossy().into_owned(),
            item.path().to_path_buf(),
        ));
    }
    files.sort();
    let mut out = Vec::new();
    for (rel, path) in files {
        let md = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if md.len() > CONTEXT_MAX_FILE_BYTES {
            continue;
        }
        if let Ok(text) = fs::read_to_string(&path) {
            out.push(ContextFile { rel, text });
        }
    }
    Ok(out)
}

/// The workspace's text files for the model's prompt (see
/// `context_files`), each as `=== path ===` and its text, cut at
/// `budget` characters.
pub fn file_context(
    root: &Path,
    copy: &CopyOptions,
    budget: usize,
) -> Result<String, WorkspaceError> {
    Ok(whole(&context_files(root, copy)?, budget))
}

/// `files` as `=== path ===` and their text, cut at `budget` characters.
pub(crate) fn whole(files: &[ContextFile], budget: usize) -> String {
    let mut out = String::new();
    for f in files {
        let part = format!("=== {} ===\n{}\n", f.rel, f.text);
        let left = budget.saturating_sub(out.chars().count());
        if part.chars().count() > left {
            out.extend(part.chars().take(left));
            out.push_str("\n[... context cut at the character budget ...]\n");
            break;
        }
        out.push_str(&part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_sorted_skips_big_binary_ignored_and_is_cut() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("b.py"), "b\n").unwrap();
        fs::write(d.path().join("a.py"), "a\n").unwrap();
        fs::write(d.path().join("big.txt"), "x".repeat(90_000)).unwrap();
        fs::write(d.path().join("bin.dat"), [0xff, 0xfe, 0x00]).unwrap();
        fs::write(d.path().join(".gitignore"), "secret.log\n").unwrap();
        fs::write(d.path().join("secret.log"), "ignored").unwrap();
        fs::create_dir(d.path().join(".git")).unwrap();
        fs::write(d.path().join(".git/config"), "x").unwrap();
        let copy = CopyOptions::default();
        let c = file_context(d.path(), &copy, 20_000).unwrap();
        assert_eq!(
            c,
            "=== .gitignore ===\nsecret.log\n\n=== a.py ===\na\n\n=== b.py ===\nb\n\n"
        );
        let cut = file_context(d.path(), &copy, 36).unwrap();
        assert!(
            cut.starts_with("=== .gitignore ===\nsecret.log\n\n=== a"),
            "{cut}"
        );
        assert!(cut.contains("character budget"));
    }
}

#[cfg(test)]
mod exclude_tests {
    use super::*;

    #[test]
    fn what_the_copy_leaves_out_the_prompt_leaves_out() {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in [
            ("node_modules/x.js", "NODE"),
            ("target/t.py", "TARGET"),
            (".venv/v.py", "VENV"),
            ("notes.md", "NOTES"),
            ("keys/secret.pem", "PEM"),
            ("main.py", "MAIN"),
        ] {
            let f = d.path().join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, text).unwrap();
        }
        let mut copy = CopyOptions::default();
        copy.excludes
            .extend(["notes.md".to_string(), "keys/".into()]);
        let c = file_context(d.path(), &copy, 20_000).unwrap();
        assert!(c.contains("MAIN"), "{c}");
        for gone in ["NODE", "TARGET", "VENV", "NOTES", "PEM"] {
            assert!(!c.contains(gone), "{gone} reached the prompt: {c}");
        }
    }
}
