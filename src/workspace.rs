//! The workspace folder on the host: what gets copied into a sandbox (as a tar
//! stream, never a bind mount), the file context shown to the model, export to
//! zip and the optional git history.
//!
//! Symlinks are packed as symlinks and never followed on the host, so a link
//! to `/etc/passwd` brings a dangling link into the container, not the file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Folders left out of the copy unless asked for: build output and VCS data
/// are large and rarely needed by tests.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "target/",
    "node_modules/",
    ".git/",
    "__pycache__/",
    ".venv/",
];

/// A problem with the workspace folder.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The folder does not exist or is not a folder.
    #[error("workspace {0} is not a folder: create it or pass --workspace DIR")]
    NotADirectory(PathBuf),
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
    #[error("workspace {path} holds {total} bytes, over the {limit}-byte copy limit: add --exclude patterns or raise --max-copy")]
    TooLarge {
        /// The workspace.
        path: PathBuf,
        /// Bytes found so far.
        total: u64,
        /// The cap.
        limit: u64,
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
    /// A walk error from the directory walker.
    #[error("walking {path}: {detail}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// What.
        detail: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WorkspaceError + 'a {
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

/// Kind of a packed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symlink with this target, packed verbatim.
    Symlink(PathBuf),
}

/// One thing to pack, by its path inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the workspace root.
    pub rel: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

/// The files of a workspace chosen for copying, in a stable order.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Workspace root on the host.
    pub root: PathBuf,
    /// Entries, parents before children.
    pub entries: Vec<Entry>,
    /// Sum of regular file sizes.
    pub total_bytes: u64,
    /// Special files (FIFOs, sockets, devices) that were skipped.
    pub skipped: Vec<PathBuf>,
}

/// Walks `root` without following symlinks and without reading `.gitignore`
/// (tests may need ignored files), applying `opts` and the size cap.
pub fn manifest(
    root: &Path,
    opts: &CopyOptions,
    max_bytes: u64,
) -> Result<Manifest, WorkspaceError> {
    let meta = fs::metadata(root).map_err(|_| WorkspaceError::NotADirectory(root.to_path_buf()))?;
    if !meta.is_dir() {
        return Err(WorkspaceError::NotADirectory(root.to_path_buf()));
    }
    let mut overrides = ignore::overrides::OverrideBuilder::new(root);
    let mut patterns: Vec<&str> = opts.excludes.iter().map(String::as_str).collect();
    if !opts.include_git {
        patterns.push(".git/");
    } else {
        patterns.retain(|p| p.trim_end_matches('/') != ".git");
    }
    for p in patterns {
        overrides
            .add(&format!("!{p}"))
            .map_err(|e| WorkspaceError::BadExclude {
                pattern: p.to_string(),
                detail: e.to_string(),
            })?;
    }
    let overrides = overrides.build().map_err(|e| WorkspaceError::BadExclude {
        pattern: opts.excludes.join(","),
        detail: e.to_string(),
    })?;
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .overrides(overrides)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();

    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut total = 0u64;
    for item in walker {
        let item = item.map_err(|e| WorkspaceError::Walk {
            path: root.to_path_buf(),
            detail: e.to_string(),
        })?;
        if item.depth() == 0 {
            continue;
        }
        let path = item.path();
        let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        let md = fs::symlink_metadata(path).map_err(io_err("reading", path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            total += md.len();
            if total > max_bytes {
                return Err(WorkspaceError::TooLarge {
                    path: root.to_path_buf(),
                    total,
                    limit: max_bytes,
                });
            }
            EntryKind::File(md.len())
        } else if ft.is_symlink() {
            EntryKind::Symlink(fs::read_link(path).map_err(io_err("reading link", path))?)
        } else {
            skipped.push(rel);
            continue;
        };
        entries.push(Entry {
            rel,
            kind,
            mode: md.mode() & 0o7777,
            mtime: md.mtime().max(0) as u64,
        });
    }
    Ok(Manifest {
        root: root.to_path_buf(),
        entries,
        total_bytes: total,
        skipped,
    })
}

/// GNU tar reads whole records from a pipe; padding to one means it sees the
/// end-of-archive marker without waiting for end of input.
const TAR_RECORD: u64 = 10240;

/// Writes the manifest as a tar archive to `out`. Files are opened with
/// `O_NOFOLLOW` so a file swapped for a link after the walk is refused.
pub fn write_tar<W: Write>(m: &Manifest, out: W) -> Result<(), WorkspaceError> {
    let mut counted = CountingWriter {
        inner: out,
        count: 0,
    };
    {
        let mut b = tar::Builder::new(&mut counted);
        b.follow_symlinks(false);
        for e in &m.entries {
            let host = m.root.join(&e.rel);
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_mtime(e.mtime);
            h.set_uid(0);
            h.set_gid(0);
            let tar_io = io_err("packing", &host);
            match &e.kind {
                EntryKind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &e.rel, io::empty()).map_err(tar_io)?;
                }
                EntryKind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &e.rel, target).map_err(tar_io)?;
                }
                EntryKind::File(size) => {
                    let f = File::options()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&host)
                        .map_err(io_err("opening", &host))?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    let mut reader = ExactReader {
                        inner: f.take(*size),
                        left: *size,
                    };
                    b.append_data(&mut h, &e.rel, &mut reader).map_err(|err| {
                        if err.kind() == io::ErrorKind::UnexpectedEof {
                            WorkspaceError::Changed(host.clone())
                        } else {
                            WorkspaceError::Io {
                                op: "packing",
                                path: host.clone(),
                                source: err,
                            }
                        }
                    })?;
                }
            }
        }
        b.finish().map_err(io_err("packing", &m.root))?;
    }
    let pad = (TAR_RECORD - counted.count % TAR_RECORD) % TAR_RECORD;
    counted
        .write_all(&vec![0u8; pad as usize])
        .and_then(|_| counted.flush())
        .map_err(io_err("packing", &m.root))?;
    Ok(())
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `left` bytes or fails, so a shrinking file cannot corrupt the archive.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies the tree at `src` into `dst` (created if missing): folders, files
/// with their modes, and symlinks recreated as symlinks, never followed.
/// A symlink already at a destination path is replaced, not written through.
/// Returns the number of files copied.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<usize, WorkspaceError> {
    let m = manifest(src, opts, u64::MAX)?;
    fs::create_dir_all(dst).map_err(io_err("creating", dst))?;
    let mut files = 0;
    for e in &m.entries {
        let to = dst.join(&e.rel);
        let existing = fs::symlink_metadata(&to).ok();
        if existing
            .as_ref()
            .is_some_and(|md| md.file_type().is_symlink())
        {
            fs::remove_file(&to).map_err(io_err("replacing", &to))?;
        }
        match &e.kind {
            EntryKind::Dir => fs::create_dir_all(&to).map_err(io_err("creating", &to))?,
            EntryKind::File(_) => {
                fs::copy(src.join(&e.rel), &to).map_err(io_err("copying", &to))?;
                files += 1;
            }
            EntryKind::Symlink(target) => {
                if existing.is_some_and(|md| !md.file_type().is_symlink()) {
                    continue;
                }
                std::os::unix::fs::symlink(target, &to).map_err(io_err("linking", &to))?
            }
        }
    }
    Ok(files)
}

/// Files above this size are left out of the model's context (as the original tool did).
pub const CONTEXT_MAX_FILE_BYTES: u64 = 80_000;

/// The workspace's text files for the model's prompt: sorted by path, each as
/// `=== path ===` and its text, honouring `.gitignore`, skipping `.git`,
/// symlinks, files over 80 KB and non-UTF-8 files, cut at `budget` characters.
pub fn file_context(root: &Path, budget: usize) -> Result<String, WorkspaceError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for item in walker {
        let item = item.map_err(|e| WorkspaceError::Walk {
            path: root.to_path_buf(),
            detail: e.to_string(),
        })?;
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
    let mut out = String::new();
    for (rel, path) in files {
        let md = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if md.len() > CONTEXT_MAX_FILE_BYTES {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let part = format!("=== {rel} ===\n{text}\n");
        let left = budget.saturating_sub(out.chars().count());
        if part.chars().count() > left {
            out.extend(part.chars().take(left));
            out.push_str("\n[... context cut at the character budget ...]\n");
            break;
        }
        out.push_str(&part);
    }
    Ok(out)
}

/// Writes the workspace to a zip file (via a temporary file, then rename).
/// `.git` and symlinks are left out; modes are kept.
pub fn export_zip(root: &Path, dest: &Path) -> Result<usize, WorkspaceError> {
    let dest_abs = std::path::absolute(dest).map_err(io_err("resolving", dest))?;
    let dir = dest_abs.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".autodev-zip-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    let opts = CopyOptions {
        excludes: vec![],
        include_git: false,
    };
    let m = manifest(root, &opts, u64::MAX)?;
    let mut zip = zip::ZipWriter::new(tmp.as_file());
    let mut count = 0;
    for e in &m.entries {
        let host = root.join(&e.rel);
        if std::path::absolute(&host).ok().as_deref() == Some(dest_abs.as_path()) {
            continue;
        }
        let name = e.rel.to_string_lossy().replace('\\', "/");
        let zopts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(e.mode);
        let zerr = |err: zip::result::ZipError| WorkspaceError::Io {
            op: "zipping",
            path: host.clone(),
            source: io::Error::other(err),
        };
        match e.kind {
            EntryKind::Dir => zip.add_directory(format!("{name}/"), zopts).map_err(zerr)?,
            EntryKind::File(_) => {
                zip.start_file(name, zopts).map_err(zerr)?;
                let mut f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host)
                    .map_err(io_err("opening", &host))?;
                io::copy(&mut f, &mut zip).map_err(io_err("zipping", &host))?;
                count += 1;
            }
            EntryKind::Symlink(_) => {}
        }
    }
    zip.finish().map_err(|err| WorkspaceError::Io {
        op: "finishing",
        path: dest.to_path_buf(),
        source: io::Error::other(err),
    })?;
    tmp.persist(&dest_abs).map_err(|e| WorkspaceError::Io {
        op: "writing",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(count)
}

/// Commits the workspace's current state to its own git repository (created
/// on first use), honouring `.gitignore`. Returns the commit id, or `None`
/// when nothing changed since the last commit.
pub fn git_commit(root: &Path, message: &str) -> Result<Option<String>, WorkspaceError> {
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
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .and_then(|_| index.update_all(["*"], None))
        .and_then(|_| index.write())
        .map_err(gerr("git add"))?;
    let tree_id = index.write_tree().map_err(gerr("git write-tree"))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
        return Ok(None);
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
    Ok(Some(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/pkg")).unwrap();
        fs::create_dir_all(d.path().join("target/debug")).unwrap();
        fs::create_dir_all(d.path().join(".git")).unwrap();
        fs::write(d.path().join("src/pkg/a.py"), "print(1)\n").unwrap();
        fs::write(d.path().join("target/debug/big"), vec![0u8; 1000]).unwrap();
        fs::write(d.path().join(".git/HEAD"), "ref").unwrap();
        fs::write(d.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(d.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("leak")).unwrap();
        d
    }

    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn manifest_skips_default_excludes_and_keeps_links_as_links() {
        let d = tree();
        let m = manifest(d.path(), &CopyOptions::default(), 1 << 20).unwrap();
        let names: Vec<String> = m
            .entries
            .iter()
            .map(|e| e.rel.display().to_string())
            .collect();
        assert_eq!(names, ["leak", "run.sh", "src", "src/pkg", "src/pkg/a.py"]);
        assert_eq!(m.entries[0].kind, EntryKind::Symlink("/etc/passwd".into()));
        assert_eq!(m.entries[1].mode, 0o755);
        assert_eq!(m.total_bytes, 19);
    }

    #[test]
    fn include_git_brings_git_back() {
        let d = tree();
        let opts = CopyOptions {
            include_git: true,
            ..CopyOptions::default()
        };
        let m = manifest(d.path(), &opts, 1 << 20).unwrap();
        assert!(m.entries.iter().any(|e| e.rel == Path::new(".git/HEAD")));
    }

    #[test]
    fn size_cap_is_a_clear_error() {
        let d = tree();
        let err = manifest(
            d.path(),
            &CopyOptions {
                excludes: vec![],
                include_git: false,
            },
            100,
        )
        .unwrap_err();
        assert!(matches!(err, WorkspaceError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("--exclude"));
    }

    #[test]
    fn tar_holds_link_not_target_and_is_record_padded() {
        let d = tree();
        let m = manifest(d.path(), &CopyOptions::default(), 1 << 20).unwrap();
        let mut buf = Vec::new();
        write_tar(&m, &mut buf).unwrap();
        assert_eq!(buf.len() as u64 % TAR_RECORD, 0);
        let mut ar = tar::Archive::new(&buf[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            if path == "leak" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("/etc/passwd"));
                let mut body = String::new();
                e.read_to_string(&mut body).unwrap();
                assert!(body.is_empty(), "link target content leaked: {body}");
            }
            seen.push(path);
        }
        assert!(seen.contains(&"src/pkg/a.py".to_string()));
    }

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
        let c = file_context(d.path(), 20_000).unwrap();
        assert_eq!(
            c,
            "=== .gitignore ===\nsecret.log\n\n=== a.py ===\na\n\n=== b.py ===\nb\n\n"
        );
        let cut = file_context(d.path(), 36).unwrap();
        assert!(
            cut.starts_with("=== .gitignore ===\nsecret.log\n\n=== a"),
            "{cut}"
        );
        assert!(cut.contains("character budget"));
    }

    #[test]
    fn zip_holds_files_not_git_or_links() {
        let d = tree();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("ws.zip");
        let n = export_zip(d.path(), &dest).unwrap();
        let mut z = zip::ZipArchive::new(File::open(&dest).unwrap()).unwrap();
        let mut names: Vec<String> = (0..z.len())
            .map(|i| z.by_index(i).unwrap().name().unwrap().to_string())
            .collect();
        names.sort();
        assert!(names.contains(&"src/pkg/a.py".to_string()));
        assert!(names.contains(&"target/debug/big".to_string()));
        assert!(
            !names.iter().any(|n| n.starts_with(".git") || n == "leak"),
            "{names:?}"
        );
        assert_eq!(n, 3);
    }

    #[test]
    fn git_commits_only_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.py"), "1").unwrap();
        assert!(git_commit(d.path(), "autodev: initial").unwrap().is_some());
        assert!(git_commit(d.path(), "autodev: iteration 1")
            .unwrap()
            .is_none());
        fs::write(d.path().join("a.py"), "2").unwrap();
        assert!(git_commit(d.path(), "autodev: iteration 2")
            .unwrap()
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
    fn copy_tree_keeps_links_as_links_and_never_writes_through_one() {
        let d = tree();
        let outside = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), dst.path().join("run.sh")).unwrap();
        let n = copy_tree(d.path(), dst.path(), &CopyOptions::default()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            fs::read_link(dst.path().join("leak")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(fs::symlink_metadata(dst.path().join("run.sh"))
            .unwrap()
            .is_file());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!dst.path().join("target").exists());
    }

    #[test]
    fn missing_workspace_is_reported() {
        let err = manifest(
            Path::new("/nonexistent/autodev"),
            &CopyOptions::default(),
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a folder"));
    }
}
