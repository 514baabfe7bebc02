//! What `--reset` may delete, decided by a pure function ([`decide`]) from
//! what was seen on disk ([`observe`]), so the rules are tested without
//! ever pointing a real delete at `/`, a home folder or the checkout.
//!
//! The rule: a folder is reset only if autodev made it or it is empty.
//! `--force-reset` lifts that, but never for `/`, a top-level system folder,
//! the home folder or one of its ancestors, the current folder or one of
//! its ancestors, or a folder holding `.git` that autodev did not make. A
//! symlink is never followed.
//!
//! "autodev made it" is never read from the folder alone: a marker file
//! travels with `cp -r` and a hostile repository can ship one. The marker
//! holds a random token; a record of the same name in autodev's state
//! folder (outside every workspace) binds that token to the folder's device,
//! inode and path, and says whether autodev also made its `.git`. A marker
//! with no matching record is just a file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::MARKER;

/// What is at the workspace path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing: there is nothing to reset.
    Missing,
    /// A symlink (never followed).
    Symlink,
    /// A file or something else that is not a folder.
    NotAFolder,
    /// A real folder.
    Folder,
}

/// Facts about the workspace path, read from disk by [`observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What is there.
    pub kind: Kind,
    /// The absolute path with every ancestor resolved.
    pub abs: PathBuf,
    /// It holds autodev's marker, and autodev's record binds that marker
    /// to this very folder.
    pub marked: bool,
    /// autodev's record says autodev made the folder's `.git`.
    pub git_ours: bool,
    /// It holds nothing at all.
    pub empty: bool,
    /// It holds `.git` (a folder or a file).
    pub has_git: bool,
}

/// Why a reset was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResetRefusal {
    /// The workspace path is a symlink.
    #[error("refusing to --reset {0}: it is a symlink; name the folder itself")]
    Symlink(PathBuf),
    /// The workspace path is a file.
    #[error("refusing to --reset {0}: it is not a folder")]
    NotAFolder(PathBuf),
    /// Never deleted, even with `--force-reset`.
    #[error("refusing to --reset {path}: it is {why}, which is never deleted")]
    Protected {
        /// The folder.
        path: PathBuf,
        /// What it is.
        why: &'static str,
    },
    /// Not made by autodev, and not empty.
    #[error("refusing to --reset {0}: autodev did not create it and it is not empty; delete it yourself, or pass --force-reset")]
    NotOurs(PathBuf),
}

/// Reads what [`decide`] needs. The path itself is not followed if it is a
/// symlink; its ancestors are resolved.
pub fn observe(ws: &Path) -> io::Result<Observed> {
    let abs = std::path::absolute(ws)?;
    let md = match fs::symlink_metadata(&abs) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Observed {
                kind: Kind::Missing,
                abs,
                marked: false,
                git_ours: false,
                empty: true,
                has_git: false,
            })
        }
        Err(e) => return Err(e),
    };
    let kind = if md.file_type().is_symlink() {
        Kind::Symlink
    } else if md.is_dir() {
        Kind::Folder
    } else {
        Kind::NotAFolder
    };
    if kind != Kind::Folder {
        return Ok(Observed {
            kind,
            abs,
            marked: false,
            git_ours: false,
            empty: false,
            has_git: false,
        });
    }
    // The folder itself is not a symlink, so resolving it resolves only its ancestors.
    let abs = abs.canonicalize()?;
    let empty = fs::read_dir(&abs)?.next().is_none();
    let record = fs::symlink_metadata(abs.join(MARKER))
        .is_ok_and(|m| m.is_file())
        .then(|| read_record(&abs))
        .flatten();
    let has_git = fs::symlink_metadata(abs.join(".git")).is_ok();
    Ok(Observed {
        kind,
        abs,
        marked: record.is_some(),
        git_ours: record.is_some_and(|r| r.git),
        empty,
        has_git,
    })
}

/// Whether to delete the observed folder. `home` and `cwd` must be resolved
/// paths. Returns `Ok(false)` when there is nothing to delete.
pub fn decide(
    o: &Observed,
    force: bool,
    home: Option<&Path>,
    cwd: Option<&Path>,
) -> Result<bool, ResetRefusal> {
    let protected = |why| {
        Err(ResetRefusal::Protected {
            path: o.abs.clone(),
            why,
        })
    };
    match o.kind {
        Kind::Missing => return Ok(false),
        Kind::Symlink => return Err(ResetRefusal::Symlink(o.abs.clone())),
        Kind::NotAFolder => return Err(ResetRefusal::NotAFolder(o.abs.clone())),
        Kind::Folder => {}
    }
    match o.abs.parent() {
        None => return protected("the root folder"),
        Some(p) if p.parent().is_none() => return protected("a top-level system folder"),
        Some(_) => {}
    }
    if home.is_some_and(|h| h.starts_with(&o.abs)) {
        return protected("your home folder or one of its ancestors");
    }
    if cwd.is_some_and(|c| c.starts_with(&o.abs)) {
        return protected("the current folder or one of its ancestors");
    }
    // A repository holds history and work; only one autodev made goes.
    if o.has_git && !(o.marked && o.git_ours) {
        return protected("a git repository autodev did not create");
    }
    if o.marked || o.empty {
        return Ok(true);
    }
    if !force {
        return Err(ResetRefusal::NotOurs(o.abs.clone()));
    }
    Ok(true)
}

/// Where autodev keeps its records of the workspaces it made:
/// `$XDG_STATE_HOME/autodev/workspaces`, else `~/.local/state/autodev/workspaces`.
fn records_dir() -> Option<PathBuf> {
    crate::dirs::autodev_dir(crate::dirs::Base::State).map(|d| d.join("workspaces"))
}

/// What autodev's record says of a folder it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    git: bool,
}

fn identity(abs: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(abs)?;
    Ok(format!(
        "dev {}\nino {}\npath {}\n",
        md.dev(),
        md.ino(),
        hex_of(abs.as_os_str().as_encoded_bytes())
    ))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The token in `abs`'s marker, if it is one autodev could have written.
fn token(abs: &Path) -> Option<String> {
    let text = fs::read_to_string(abs.join(MARKER)).ok()?;
    let t = text.lines().find_map(|l| l.strip_prefix("token: "))?.trim();
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_string())
}

fn read_record(abs: &Path) -> Option<Record> {
    let path = records_dir()?.join(token(abs)?);
    let text = fs::read_to_string(path).ok()?;
    let (ident, rest) = text.split_at(text.find("git ")?);
    (ident == identity(abs).ok()?).then(|| Record {
        git: rest.trim() == "git yes",
    })
}

fn write_record(abs: &Path, token: &str, git: bool) -> io::Result<()> {
    let dir =
        records_dir().ok_or_else(|| io::Error::other("no HOME for autodev's state folder"))?;
    fs::create_dir_all(&dir)?;
    let text = format!("{}git {}\n", identity(abs)?, if git { "yes" } else { "no" });
    fs::write(dir.join(token), text)
}

/// Marks `ws` as made by autodev, so a later `--reset` may delete it: a
/// random token in the folder, and the record that binds it to this folder
/// in autodev's state folder. Without a state folder (no HOME) the marker
/// proves nothing, and a later `--reset` needs the folder empty or
/// `--force-reset`.
pub fn mark(ws: &Path) -> io::Result<()> {
    let mut raw = [0u8; 16];
    io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut raw)?;
    let token = hex_of(&raw);
    fs::write(
        ws.join(MARKER),
        format!("This folder was created by autodev; `autodev run --reset` may delete it.\ntoken: {token}\n"),
    )?;
    let abs = ws.canonicalize()?;
    // Best effort: without a record the folder is simply not known as ours.
    let _ = write_record(&abs, &token, false);
    Ok(())
}

/// Notes in autodev's record that autodev made `ws`'s `.git`, so a later
/// `--reset` may delete the repository with the folder. Does nothing for a
/// folder autodev did not make.
pub fn note_git(ws: &Path) {
    let Ok(abs) = ws.canonicalize() else { return };
    if let (Some(t), Some(_)) = (token(&abs), read_record(&abs)) {
        let _ = write_record(&abs, &t, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(abs: &str) -> Observed {
        Observed {
            kind: Kind::Folder,
            abs: abs.into(),
            marked: false,
            git_ours: false,
            empty: false,
            has_git: false,
        }
    }

    fn refused(o: &Observed, force: bool) -> Option<ResetRefusal> {
        decide(
            o,
            force,
            Some(Path::new("/home/alice")),
            Some(Path::new("/work/proj/sub")),
        )
        .err()
    }

    #[test]
    fn system_home_and_current_folders_are_never_deleted() {
        for p in [
            "/",
            "/var",
            "/home",
            "/etc",
            "/tmp",
            "/home/alice",
            "/work",
            "/work/proj",
            "/work/proj/sub",
        ] {
            for (marked, empty) in [(false, false), (true, false), (false, true)] {
                let o = Observed {
                    marked,
                    empty,
                    ..folder(p)
                };
                assert!(
                    matches!(refused(&o, true), Some(ResetRefusal::Protected { .. })),
                    "{p} marked={marked} empty={empty}"
                );
            }
        }
    }

    #[test]
    fn only_marked_or_empty_folders_without_force() {
        let o = folder("/tmp/ws");
        assert_eq!(
            refused(&o, false),
            Some(ResetRefusal::NotOurs("/tmp/ws".into()))
        );
        assert!(refused(&o, false)
            .unwrap()
            .to_string()
            .contains("--force-reset"));
        assert_eq!(refused(&o, true), None);
        for o in [
            Observed {
                marked: true,
                has_git: true,
                git_ours: true,
                ..folder("/tmp/ws")
            },
            Observed {
                empty: true,
                ..folder("/tmp/ws")
            },
        ] {
            assert_eq!(refused(&o, false), None);
        }
    }

    #[test]
    fn a_foreign_git_repository_is_kept_even_with_force_or_a_marker() {
        for marked in [false, true] {
            let o = Observed {
                has_git: true,
                marked,
                ..folder("/tmp/myrepo")
            };
            for force in [false, true] {
                assert!(matches!(
                    refused(&o, force),
                    Some(ResetRefusal::Protected { .. })
                ));
            }
        }
    }

    #[test]
    fn symlinks_and_files_are_refused_and_missing_is_nothing() {
        let mk = |kind| Observed {
            kind,
            marked: true,
            ..folder("/tmp/ws")
        };
        assert!(matches!(
            refused(&mk(Kind::Symlink), true),
            Some(ResetRefusal::Symlink(_))
        ));
        assert!(matches!(
            refused(&mk(Kind::NotAFolder), true),
            Some(ResetRefusal::NotAFolder(_))
        ));
        assert_eq!(decide(&mk(Kind::Missing), false, None, None), Ok(false));
    }

    #[test]
    fn observe_reads_the_marker_and_does_not_follow_a_link() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        fs::create_dir(&ws).unwrap();
        assert!(observe(&ws).unwrap().empty);
        mark(&ws).unwrap();
        let o = observe(&ws).unwrap();
        assert!(o.marked && !o.empty && !o.has_git);
        std::os::unix::fs::symlink(&ws, d.path().join("link")).unwrap();
        assert_eq!(observe(&d.path().join("link")).unwrap().kind, Kind::Symlink);
        assert_eq!(observe(&d.path().join("none")).unwrap().kind, Kind::Missing);
    }

    #[test]
    fn a_marker_without_autodevs_record_proves_nothing() {
        let d = tempfile::tempdir().unwrap();
        // A forged marker: the fixed text of old, an empty file, a token
        // autodev never recorded.
        for text in [
            "".to_string(),
            "This folder was created by autodev\n".into(),
            format!("token: {}\n", "ab".repeat(16)),
        ] {
            let ws = d.path().join("forged");
            fs::create_dir_all(&ws).unwrap();
            fs::write(ws.join(MARKER), text).unwrap();
            fs::write(ws.join("thesis.txt"), "important").unwrap();
            let o = observe(&ws).unwrap();
            assert!(!o.marked);
            assert_eq!(
                refused(&o, false),
                Some(ResetRefusal::NotOurs(o.abs.clone()))
            );
        }
        // A real marker copied with its folder: another inode, not ours.
        let ws = d.path().join("made");
        fs::create_dir(&ws).unwrap();
        mark(&ws).unwrap();
        assert!(observe(&ws).unwrap().marked);
        let copy = d.path().join("copy");
        fs::create_dir(&copy).unwrap();
        fs::copy(ws.join(MARKER), copy.join(MARKER)).unwrap();
        assert!(!observe(&copy).unwrap().marked);
        // The .git autodev makes in its own folder is its own; a .git that
        // appears in it otherwise is not.
        fs::create_dir(ws.join(".git")).unwrap();
        let o = observe(&ws).unwrap();
        assert!(o.marked && o.has_git && !o.git_ours);
        assert!(matches!(
            refused(&o, true),
            Some(ResetRefusal::Protected { .. })
        ));
        note_git(&ws);
        let o = observe(&ws).unwrap();
        assert!(o.git_ours);
        assert_eq!(refused(&o, false), None);
    }
}
