//! Choosing what of a workspace goes into a sandbox, and packing it.
//!
//! Symlinks are packed as symlinks and never followed on the host, so a link
//! to `/etc/passwd` arrives as a link that resolves inside the container (to
//! the image's file), never as the host's file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_err, CopyOptions, WorkspaceError, MARKER};

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
    /// Files that are not on the host, packed after the entries with mode
    /// 0644 (a set-up's CA bundle), by their path inside the workspace.
    pub added: Vec<(PathBuf, Vec<u8>)>,
}

/// What `opts` leaves out of `root`, as the walker's overrides: the one
/// reading of the copy rules, used by the copy, the zip and the model's
/// context alike.
pub(crate) fn exclusions(
    root: &Path,
    opts: &CopyOptions,
) -> Result<ignore::overrides::Override, WorkspaceError> {
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
    overrides.build().map_err(|e| WorkspaceError::BadExclude {
        pattern: opts.excludes.join(","),
        detail: e.to_string(),
    })
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
    let overrides = exclusions(root, opts)?;
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
        let item = item.map_err(|e| super::walk_err(root, e))?;
        if item.depth() == 0 {
            continue;
        }
        let path = item.path();
        let rel = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        if rel == Path::new(MARKER) {
            continue;
        }
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
        added: Vec::new(),
    })
}

/// GNU tar reads whole records from a pipe; padding to one means it sees the
/// end-of-archive marker without waiting for end of input.
const TAR_RECORD: u64 = 10240;

/// Writes the manifest as a tar archive to `out`. Files are opened with
/// `O_NOFOLLOW` so a file swapped for a link after the walk is refused.
///
/// Returns the tree's hash (hex SHA-256 over each entry's path, kind, mode
/// and content or link target, in manifest order; times and owners left
/// out), so a result records exactly which files it judged.
pub fn write_tar<W: Write>(m: &Manifest, out: W) -> Result<String, WorkspaceError> {
    let mut counted = CountingWriter {
        inner: out,
        count: 0,
    };
    let mut tree = Sha256::new();
    {
        let mut b = tar::Builder::new(&mut counted);
        b.follow_symlinks(false);
        for e in &m.entries {
            let host = m.root.join(&e.rel);
            tree.update(e.rel.as_os_str().as_encoded_bytes());
            tree.update([0]);
            tree.update(e.mode.to_le_bytes());
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_mtime(e.mtime);
            h.set_uid(0);
            h.set_gid(0);
            let tar_io = io_err("packing", &host);
            match &e.kind {
                EntryKind::Dir => {
                    tree.update(b"d");
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &e.rel, io::empty()).map_err(tar_io)?;
                }
                EntryKind::Symlink(target) => {
                    tree.update(b"l");
                    tree.update(target.as_os_str().as_encoded_bytes());
                    tree.update([0]);
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
                    tree.update(b"f");
                    tree.update(size.to_le_bytes());
                    let mut reader = ExactReader {
                        inner: f.take(*size),
                        left: *size,
                        hash: &mut tree,
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
        for (rel, bytes) in &m.added {
            tree.update(rel.as_os_str().as_encoded_bytes());
            tree.update([0]);
            tree.update(b"a");
            tree.update(bytes);
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, rel, bytes.as_slice())
                .map_err(io_err("packing", rel))?;
        }
        b.finish().map_err(io_err("packing", &m.root))?;
    }
    let pad = (TAR_RECORD - counted.count % TAR_RECORD) % TAR_RECORD;
    counted
        .write_all(&vec![0u8; pad as usize])
        .and_then(|_| counted.flush())
        .map_err(io_err("packing", &m.root))?;
    Ok(hex(&tree.finalize()))
}

/// The tree hash [`write_tar`] returns, without packing anything.
pub fn tree_hash(m: &Manifest) -> Result<String, WorkspaceError> {
    write_tar(m, io::sink())
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// Reads exactly `left` bytes or fails, so a shrinking file cannot corrupt
/// the archive; hashes what it reads.
struct ExactReader<'h, R> {
    inner: R,
    left: u64,
    hash: &'h mut Sha256,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.hash.update(&buf[..n]);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn tree() -> tempfile::TempDir {
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
    fn the_tree_hash_follows_content_and_modes_not_times() {
        let d = tree();
        let m = || manifest(d.path(), &CopyOptions::default(), 1 << 20).unwrap();
        let first = tree_hash(&m()).unwrap();
        assert_eq!(first.len(), 64);
        let f = d.path().join("src/pkg/a.py");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            tree_hash(&m()).unwrap(),
            first,
            "a new mtime changed the hash"
        );
        let mut buf = Vec::new();
        assert_eq!(write_tar(&m(), &mut buf).unwrap(), first);
        fs::write(&f, "print(2)\n").unwrap();
        assert_ne!(tree_hash(&m()).unwrap(), first);
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
