//! Writes parsed blocks into the workspace, assuming the model is hostile.
//!
//! A path is accepted only if it is relative, made of normal components (no
//! `..`, no Windows separators or drive prefixes, no NUL or control
//! characters), within length limits, and no existing component of it is a
//! symlink, so nothing can be written outside the workspace however the tree
//! looks. No component may name VCS metadata (see [`is_protected`]): a model
//! that can write `.git/config` can get a command run on the host by the
//! user's next `git status` (`core.fsmonitor`), or by a hook. Content over the size cap is refused. Each file is written to a
//! temporary file beside it and renamed into place, so a crash never leaves a
//! half-written file. Refusals are collected, not fatal: the loop reports them
//! to the model.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parser::{Block, Change, ParsedReply, Refusal, RefusalReason};

/// Longest accepted path, in bytes (Linux PATH_MAX is 4096).
const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted component, in bytes (NAME_MAX).
const MAX_COMPONENT_BYTES: usize = 255;

/// Limits for applying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Largest file content accepted, in bytes.
    pub max_file_bytes: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            max_file_bytes: 1024 * 1024,
        }
    }
}

/// What happened to each block of a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Paths written, relative to the workspace.
    pub applied: Vec<String>,
    /// Blocks not written, with reasons.
    pub refused: Vec<Refusal>,
    /// What the model should know about blocks that were written (an edit
    /// matched only when ignoring whitespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Files the reply asked to see (answered in the next prompt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
}

/// Applies every block of `reply` under `root`; parse refusals are carried over.
pub fn apply(root: &Path, reply: &ParsedReply, opts: ApplyOptions) -> ApplyReport {
    let mut report = ApplyReport {
        applied: Vec::new(),
        refused: reply.refused.clone(),
        notes: Vec::new(),
        reads: reply.reads.clone(),
    };
    for block in &reply.blocks {
        match apply_one(root, block, opts, &mut report.notes) {
            Ok(rel) => report.applied.push(rel.to_string_lossy().into_owned()),
            Err((reason, detail)) => report.refused.push(Refusal {
                path: block.path.clone(),
                reason,
                detail,
                line: block.line,
            }),
        }
    }
    report
}

/// A refusal's class and detail.
pub type Refused = (RefusalReason, String);

/// Checks a model-supplied path and returns it as a clean relative path.
pub fn confine(raw: &str) -> Result<PathBuf, Refused> {
    use RefusalReason::*;
    if raw.trim().is_empty() {
        return Err((EmptyPath, "empty path".into()));
    }
    if raw.chars().any(|c| c == '\0' || c.is_control()) {
        return Err((BadCharacter, "path holds a NUL or control character".into()));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err((
            TooLong,
            format!("path is {} bytes, over {MAX_PATH_BYTES}", raw.len()),
        ));
    }
    let b = raw.as_bytes();
    if raw.contains('\\') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()) {
        return Err((
            WindowsPath,
            "use forward slashes and a relative path".into(),
        ));
    }
    if raw.starts_with('/') || raw.starts_with('~') {
        return Err((Absolute, "path must be relative to the workspace".into()));
    }
    let mut clean = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(part) => {
                if part.len() > MAX_COMPONENT_BYTES {
                    return Err((
                        TooLong,
                        format!("a component is over {MAX_COMPONENT_BYTES} bytes"),
                    ));
                }
                if is_protected(&part.to_string_lossy()) {
                    return Err((
                        ProtectedPath,
                        format!(
                            "{:?} is protected: version-control metadata and autodev's marker are never written",
                            part.to_string_lossy()
                        ),
                    ));
                }
                clean.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err((ParentDir, "`..` is not allowed in paths".into())),
            Component::RootDir | Component::Prefix(_) => {
                return Err((Absolute, "path must be relative to the workspace".into()))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err((EmptyPath, "path names the workspace itself".into()));
    }
    Ok(clean)
}

/// Names of VCS metadata folders (a `.git` *file* counts too: it redirects
/// git to another repository), and autodev's own workspace marker, which
/// decides what `--reset` may delete.
const PROTECTED: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".bzr",
    ".jj",
    "_darcs",
    crate::workspace::MARKER,
];

/// Whether a path component names protected metadata, compared the way
/// case-folding file systems would: case-insensitively, ignoring trailing
/// dots and spaces (Windows drops them) and the code points HFS+ ignores,
/// and matching NTFS's short name `GIT~1`.
pub fn is_protected(component: &str) -> bool {
    let folded: String = component
        .chars()
        .filter(|c| !is_hfs_ignorable(*c))
        .collect::<String>()
        .trim_end_matches(['.', ' '])
        .to_lowercase();
    folded == "git~1" || PROTECTED.contains(&folded.as_str())
}

/// Code points HFS+ leaves out when comparing names (as git's own check does).
fn is_hfs_ignorable(c: char) -> bool {
    matches!(c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}')
}

/// Whether writing `content` at `rel` would make its folder a repository
/// git finds on its own: a folder holding a valid `HEAD`, `objects/` and
/// `refs/` is a bare repository to git's discovery, and its `config` (a
/// pager, an editor, a hook path) runs when the user runs git there. A
/// valid `HEAD` is required for that, so that is what is refused.
pub fn plants_git_head(rel: &Path, content: &str) -> bool {
    let named_head = rel.file_name().is_some_and(|n| {
        n.to_string_lossy()
            .trim_end_matches(['.', ' '])
            .eq_ignore_ascii_case("head")
    });
    let c = content.trim_start();
    let first = c.split_whitespace().next().unwrap_or("");
    named_head
        && (c.starts_with("ref:")
            || ((first.len() == 40 || first.len() == 64)
                && first.bytes().all(|b| b.is_ascii_hexdigit())))
}

fn apply_one(
    root: &Path,
    block: &Block,
    opts: ApplyOptions,
    notes: &mut Vec<String>,
) -> Result<PathBuf, Refused> {
    match &block.change {
        Change::Whole(content) => {
            write_file(root, &block.path, content.as_bytes(), opts.max_file_bytes)
        }
        Change::Edits(edits) => {
            let text = match existing_file(root, &block.path)? {
                Some((rel, full)) => {
                    let bytes = fs::read(&full)
                        .map_err(|e| (RefusalReason::Io, format!("{}: {e}", rel.display())))?;
                    Some(String::from_utf8(bytes).map_err(|_| {
                        (
                            RefusalReason::NotAFile,
                            "the file is not UTF-8 text: send it whole".to_string(),
                        )
                    })?)
                }
                None => None,
            };
            let (new, said) = super::edit::apply_edits(text.as_deref(), edits)
                .map_err(|e| (RefusalReason::NoMatch, e))?;
            let rel = write_file(root, &block.path, new.as_bytes(), opts.max_file_bytes)?;
            notes.extend(said.into_iter().map(|n| format!("{}: {n}", block.path)));
            Ok(rel)
        }
        Change::Diff(file) => {
            super::diff::apply(root, std::slice::from_ref(file), opts.max_file_bytes).map_err(
                |e| {
                    let reason = if e.hunk.is_some() {
                        RefusalReason::NoMatch
                    } else {
                        RefusalReason::Malformed
                    };
                    (reason, e.to_string())
                },
            )?;
            confine(&block.path)
        }
    }
}

/// Writes `content` to the path `raw` (checked by [`confine`]) under
/// `root`, making its folders; never through a symlink, never a git HEAD
/// file, never over `max_bytes`. The file is replaced whole (a temporary
/// file renamed over it), keeping the mode of one it replaces.
pub fn write_file(
    root: &Path,
    raw: &str,
    content: &[u8],
    max_bytes: u64,
) -> Result<PathBuf, Refused> {
    use RefusalReason::*;
    let rel = confine(raw)?;
    if plants_git_head(&rel, &String::from_utf8_lossy(content)) {
        return Err((
            ProtectedPath,
            "a git HEAD file would make its folder a repository that git runs config from".into(),
        ));
    }
    if content.len() as u64 > max_bytes {
        return Err((
            TooLarge,
            format!("{} bytes, over the {max_bytes}-byte cap", content.len()),
        ));
    }
    let here = walk(root, &rel, true)?;
    let parent = here.parent().unwrap_or(root);
    let mut tmp = tempfile::Builder::new()
        .prefix(".autodev-tmp-")
        .tempfile_in(parent)
        .map_err(|e| (Io, format!("temporary file in {}: {e}", parent.display())))?;
    tmp.write_all(content)
        .and_then(|_| tmp.as_file().sync_data())
        .map_err(|e| (Io, format!("writing {}: {e}", rel.display())))?;
    // Keep the mode of a file being replaced (an executable script stays executable).
    let mode = fs::metadata(&here).map(|m| m.permissions()).ok();
    let perm = mode.unwrap_or_else(|| {
        use std::os::unix::fs::PermissionsExt;
        fs::Permissions::from_mode(0o644)
    });
    let _ = fs::set_permissions(tmp.path(), perm);
    tmp.persist(&here)
        .map_err(|e| (Io, format!("replacing {}: {}", rel.display(), e.error)))?;
    Ok(rel)
}

/// Gives the file at `rel` under `root` (a clean path [`write_file`] just
/// wrote, so reached through real folders) the executable bit or takes it
/// away, leaving its other mode bits as they were: `chmod +x` in a sandbox
/// comes back, and a private file stays private.
pub fn set_executable(root: &Path, rel: &Path, exec: bool) -> Result<(), Refused> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let full = walk(root, rel, false)?;
    let io = |e: std::io::Error| (RefusalReason::Io, format!("setting its mode: {e}"));
    let md = fs::symlink_metadata(&full).map_err(io)?;
    if !md.is_file() {
        return Err((RefusalReason::NotAFile, "not a file".into()));
    }
    let old = md.mode() & 0o7777;
    let mode = if exec {
        old | ((old & 0o444) >> 2)
    } else {
        old & !0o111
    };
    if mode != old {
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

/// The file at `raw` under `root`, by the same rules as [`write_file`]: a
/// path [`confine`] accepts, reached through real folders only, naming a
/// regular file. Returns the clean relative path and the full one, or
/// `None` when there is no such file.
pub fn existing_file(root: &Path, raw: &str) -> Result<Option<(PathBuf, PathBuf)>, Refused> {
    let rel = confine(raw)?;
    let here = walk(root, &rel, false)?;
    match fs::symlink_metadata(&here) {
        Ok(md) if md.is_file() => Ok(Some((rel, here))),
        Ok(_) => Err((RefusalReason::NotAFile, "not a file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err((RefusalReason::Io, format!("{}: {e}", rel.display()))),
    }
}

/// The full path of the clean relative path `rel` under `root`, its
/// missing folders made, reached through real folders only (as
/// [`write_file`] does), for a caller that writes the file itself.
pub fn make_parents(root: &Path, rel: &Path) -> Result<PathBuf, Refused> {
    walk(root, rel, true)
}

/// Walks `rel` down from `root`: every existing component must be a real
/// folder (the last a real file or nothing), never a symlink. Missing
/// folders are made when `create`.
fn walk(root: &Path, rel: &Path, create: bool) -> Result<PathBuf, Refused> {
    use RefusalReason::*;
    let mut here = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        here.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&here) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err((
                    Symlink,
                    format!(
                        "{} is a symlink",
                        here.strip_prefix(root).unwrap_or(&here).display()
                    ),
                ))
            }
            Ok(md) if !last && !md.is_dir() => {
                return Err((
                    NotAFile,
                    format!("{} is a file, not a folder", here.display()),
                ))
            }
            Ok(md) if last && !md.is_file() => return Err((NotAFile, "target is a folder".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !last && create {
                    fs::create_dir(&here)
                        .map_err(|e| (Io, format!("creating {}: {e}", here.display())))?;
                }
            }
            Err(e) => return Err((Io, format!("{}: {e}", here.display()))),
        }
    }
    Ok(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse;

    fn run(root: &Path, reply: &str) -> ApplyReport {
        apply(root, &parse(reply), ApplyOptions::default())
    }

    fn reason(path: &str) -> Option<RefusalReason> {
        confine(path).err().map(|e| e.0)
    }

    #[test]
    fn writes_files_and_creates_folders() {
        let d = tempfile::tempdir().unwrap();
        let r = run(
            d.path(),
            "PATCH::pkg/sub/a.py\nx = 1\n\n\nENDPATCH\nPATCH::./b.txt\nb\nENDPATCH",
        );
        assert_eq!(r.applied, ["pkg/sub/a.py", "b.txt"]);
        assert_eq!(
            fs::read_to_string(d.path().join("pkg/sub/a.py")).unwrap(),
            "x = 1\n"
        );
        assert!(r.refused.is_empty());
    }

    #[test]
    fn hostile_paths_are_refused() {
        use RefusalReason::*;
        assert_eq!(reason("../x"), Some(ParentDir));
        assert_eq!(reason("a/../../x"), Some(ParentDir));
        assert_eq!(reason("a/../b"), Some(ParentDir));
        assert_eq!(reason("/etc/x"), Some(Absolute));
        assert_eq!(reason("~/x"), Some(Absolute));
        assert_eq!(reason("..\\x"), Some(WindowsPath));
        assert_eq!(reason("C:/x"), Some(WindowsPath));
        assert_eq!(reason("c:\\x"), Some(WindowsPath));
        assert_eq!(reason(""), Some(EmptyPath));
        assert_eq!(reason("."), Some(EmptyPath));
        assert_eq!(reason("a\0b"), Some(BadCharacter));
        assert_eq!(reason("a\nb"), Some(BadCharacter));
        assert_eq!(reason(&"a".repeat(300)), Some(TooLong));
        assert_eq!(reason(&"a/".repeat(600)), Some(TooLong));
        assert_eq!(reason("ok/file.py"), None);
    }

    #[test]
    fn a_bare_repository_cannot_be_planted() {
        let d = tempfile::tempdir().unwrap();
        let r = run(
            d.path(),
            "PATCH::elsewhere/HEAD\nref: refs/heads/main\nENDPATCH\n\
             PATCH::x/head.\n0123456789abcdef0123456789abcdef01234567\nENDPATCH\n\
             PATCH::docs/HEAD\nThe head of the document\nENDPATCH",
        );
        assert_eq!(r.applied, ["docs/HEAD"]);
        assert!(r
            .refused
            .iter()
            .all(|x| x.reason == RefusalReason::ProtectedPath));
        assert_eq!(r.refused.len(), 2);
    }

    #[test]
    fn vcs_metadata_is_protected_in_every_spelling() {
        for p in [
            ".git/config",
            ".git",
            "sub/.git/HEAD",
            "vendor/.GIT/hooks/pre-commit",
            ".Git./config",
            ".git /config",
            ".git. . /x",
            ".g\u{200c}it/config",
            "GIT~1/config",
            ".hg/hgrc",
            ".svn/entries",
            ".bzr/branch.conf",
            ".jj/repo",
            "_DARCS/prefs",
            ".autodev-workspace",
        ] {
            assert_eq!(reason(p), Some(RefusalReason::ProtectedPath), "{p}");
        }
        for p in [
            ".github/workflows/ci.yml",
            ".gitignore",
            "git/x",
            ".gitattributes",
            "a.git",
        ] {
            assert_eq!(reason(p), None, "{p}");
        }
    }

    #[test]
    fn symlinked_folder_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), d.path().join("flink")).unwrap();
        let r = run(
            d.path(),
            "PATCH::link/evil.py\nx\nENDPATCH\nPATCH::flink\ny\nENDPATCH",
        );
        assert!(r.applied.is_empty());
        assert_eq!(r.refused.len(), 2);
        assert!(r.refused.iter().all(|x| x.reason == RefusalReason::Symlink));
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "wrote outside"
        );
    }

    #[test]
    fn oversized_content_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = format!("PATCH::big.txt\n{}\nENDPATCH", "x".repeat(2000));
        let r = apply(
            d.path(),
            &parse(&big),
            ApplyOptions {
                max_file_bytes: 1000,
            },
        );
        assert_eq!(r.refused[0].reason, RefusalReason::TooLarge);
        assert!(!d.path().join("big.txt").exists());
    }

    #[test]
    fn unterminated_block_leaves_file_untouched() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.py"), "old\n").unwrap();
        let r = run(d.path(), "PATCH::a.py\nnew but cut");
        assert_eq!(r.refused[0].reason, RefusalReason::Unterminated);
        assert_eq!(fs::read_to_string(d.path().join("a.py")).unwrap(), "old\n");
    }

    #[test]
    fn file_in_the_way_of_a_folder_is_refused_and_good_blocks_still_apply() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "file").unwrap();
        let r = run(
            d.path(),
            "PATCH::a/b.py\nx\nENDPATCH\nPATCH::c.py\nc\nENDPATCH",
        );
        assert_eq!(r.applied, ["c.py"]);
        assert_eq!(r.refused[0].reason, RefusalReason::NotAFile);
    }

    #[test]
    fn replacing_keeps_the_mode_and_leaves_no_temp_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("run.sh"), "old").unwrap();
        fs::set_permissions(d.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        run(d.path(), "PATCH::run.sh\nnew\nENDPATCH");
        let md = fs::metadata(d.path().join("run.sh")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o755);
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.sh"]);
    }

    #[test]
    fn edit_and_diff_blocks_keep_every_confinement_rule() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.txt"), "old\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        std::fs::write(d.path().join("ok.txt"), "old\n").unwrap();
        let edit = |path: &str| {
            format!("EDIT::{path}\n<<<<<<< SEARCH\nold\n=======\nnew\n>>>>>>> REPLACE\nENDEDIT\n")
        };
        let diff = |path: &str| {
            format!("DIFF::\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-old\n+new\nENDDIFF\n")
        };
        for path in [
            "../x.txt",
            "/etc/hosts",
            ".git/config",
            "link/x.txt",
            "a\\b.txt",
        ] {
            for reply in [edit(path), diff(path)] {
                let r = run(d.path(), &reply);
                assert!(r.applied.is_empty(), "{reply}: {r:?}");
                assert_eq!(r.refused.len(), 1, "{reply}: {r:?}");
            }
        }
        assert_eq!(
            std::fs::read_to_string(outside.path().join("x.txt")).unwrap(),
            "old\n"
        );
        assert!(!d.path().join(".git").exists());
        let r = run(d.path(), &edit("ok.txt"));
        assert_eq!(r.applied, ["ok.txt"]);
        let big = format!(
            "EDIT::ok.txt\n<<<<<<< SEARCH\nnew\n=======\n{}\n>>>>>>> REPLACE\nENDEDIT\n",
            "x".repeat(2 << 20)
        );
        let r = run(d.path(), &big);
        assert_eq!(
            r.refused[0].reason,
            RefusalReason::TooLarge,
            "{:?}",
            r.refused
        );
    }
}
