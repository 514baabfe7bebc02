//! What a run sends back (`RunSpec::write_back`), written into a host
//! folder: each regular file that is new or changed, through the patch
//! applier's rules (`patch::apply::write_file`); links, FIFOs, devices and
//! VCS metadata are refused one by one, a tree over the cap whole. Given
//! the files that were sent in, those the command deleted are deleted.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::patch::apply;
use crate::sandbox::demux::TreeBack;

/// A file not written back, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// Its path in the workspace.
    pub path: String,
    /// Why.
    pub why: String,
}

/// What was written back, or why nothing was.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteBack {
    /// Files written (new or changed).
    pub written: Vec<String>,
    /// Entries refused.
    pub refused: Vec<Refused>,
    /// Files the command deleted, deleted here too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// Files the command left as they were.
    pub unchanged: u64,
    /// Why nothing was written back, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WriteBack {
    fn failed(why: String) -> Self {
        WriteBack {
            error: Some(why),
            ..WriteBack::default()
        }
    }
}

/// Writes `tree` (what the run sent back, `None` when its backend cannot)
/// into `root`, whose files may add up to `max_bytes`. `sent`: the regular
/// files the run was given; each one the tree no longer holds is removed
/// from `root` (a file the run was not given is never touched, so an
/// excluded one survives).
pub fn write_back(
    root: &Path,
    tree: Option<TreeBack>,
    max_bytes: u64,
    sent: &BTreeSet<String>,
) -> WriteBack {
    let bytes = match tree {
        Some(TreeBack::Received(b)) => b,
        None => return WriteBack::failed("this backend cannot send a workspace back (Docker engines can): nothing was written back".into()),
        Some(TreeBack::NotSent) => return WriteBack::failed("the run ended before its workspace could be sent back (a time, memory or output limit): nothing was written back".into()),
        Some(TreeBack::Cut) => return WriteBack::failed("the workspace the command left is over the write-back cap or was broken off: nothing was written back".into()),
    };
    let read = match compare(root, &bytes, max_bytes) {
        Ok(r) => r,
        Err(why) => return WriteBack::failed(why),
    };
    let mut out = WriteBack {
        refused: read.refused,
        unchanged: read.unchanged,
        ..WriteBack::default()
    };
    write_changed(root, read.changed, max_bytes, &mut out);
    delete_gone(root, sent.difference(&read.seen), &mut out);
    out
}

/// A file the command left different from the folder's: its path, its
/// bytes, whether it is executable.
type Changed = (String, Vec<u8>, bool);

/// The tree sent back, held against the folder.
struct Compared {
    /// New or changed files, not written yet.
    changed: Vec<Changed>,
    /// Every path the tree holds, whatever its kind.
    seen: BTreeSet<String>,
    /// Entries that are no regular file.
    refused: Vec<Refused>,
    unchanged: u64,
}

/// Reads the tree and finds what differs from `root`; nothing is written
/// here, so a tree over the cap or broken changes nothing.
fn compare(root: &Path, bytes: &[u8], max_bytes: u64) -> Result<Compared, String> {
    let no_tar = |e: std::io::Error| format!("the workspace sent back is no tar: {e}");
    let mut c = Compared {
        changed: Vec::new(),
        seen: BTreeSet::new(),
        refused: Vec::new(),
        unchanged: 0,
    };
    let mut total = 0u64;
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(no_tar)? {
        let mut entry = entry.map_err(no_tar)?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw);
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = entry.header().entry_type();
        if path.is_empty() || kind.is_dir() {
            continue;
        }
        // Whatever the entry is, the path is still there: a file replaced
        // by a link is refused, not deleted.
        c.seen.insert(path.clone());
        if !kind.is_file() {
            c.refused.push(Refused {
                path,
                why: format!("a {kind:?}: only regular files are written back"),
            });
            continue;
        }
        let mut buf = Vec::new();
        (&mut entry)
            .take(max_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading {path:?} from the workspace sent back: {e}"))?;
        total += buf.len() as u64;
        let exec = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        if same_as_folder(root, &path, &buf, exec) {
            c.unchanged += 1;
        } else {
            c.changed.push((path, buf, exec));
        }
    }
    if total > max_bytes {
        return Err(format!(
            "the workspace the command left holds {total} bytes, over the cap of {max_bytes}: nothing was written back"
        ));
    }
    Ok(c)
}

/// Whether `root` already holds `path` with these bytes and executable bit.
fn same_as_folder(root: &Path, path: &str, buf: &[u8], exec: bool) -> bool {
    apply::existing_file(root, path)
        .ok()
        .flatten()
        .and_then(|(_, full)| {
            let old_exec = std::fs::metadata(&full).ok()?.mode() & 0o111 != 0;
            Some(old_exec == exec && std::fs::read(full).ok()? == buf)
        })
        .unwrap_or(false)
}

/// Writes each changed file through the patch applier's rules.
fn write_changed(root: &Path, changed: Vec<Changed>, max_bytes: u64, out: &mut WriteBack) {
    for (path, buf, exec) in changed {
        let written = apply::write_file(root, &path, &buf, max_bytes)
            .and_then(|rel| apply::set_executable(root, &rel, exec));
        match written {
            Ok(()) => out.written.push(path),
            Err((_, why)) => out.refused.push(Refused { path, why }),
        }
    }
}

/// Removes the files the run was given and the tree no longer holds.
fn delete_gone<'a>(root: &Path, gone: impl Iterator<Item = &'a String>, out: &mut WriteBack) {
    for path in gone {
        // Through the same rules as a write: a path that now leads through
        // a link is refused, never followed.
        match apply::existing_file(root, path) {
            Ok(Some((_, full))) => match std::fs::remove_file(&full) {
                Ok(()) => out.deleted.push(path.clone()),
                Err(e) => out.refused.push(Refused {
                    path: path.clone(),
                    why: format!("deleting it: {e}"),
                }),
            },
            Ok(None) => {}
            Err((_, why)) => out.refused.push(Refused {
                path: path.clone(),
                why,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn new_and_changed_files_come_back_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("same.txt"), "s").unwrap();
        std::fs::write(d.path().join("old.txt"), "o").unwrap();
        let tree = tar_of(&[
            ("./same.txt", tar::EntryType::Regular, b"s"),
            ("./old.txt", tar::EntryType::Regular, b"new"),
            ("./d/n.txt", tar::EntryType::Regular, b"n"),
            ("./link", tar::EntryType::Symlink, b""),
            ("./.git/config", tar::EntryType::Regular, b"x"),
            ("./../up", tar::EntryType::Regular, b"x"),
        ]);
        std::fs::write(d.path().join("gone.txt"), "g").unwrap();
        std::fs::write(d.path().join("excluded.txt"), "e").unwrap();
        let sent: BTreeSet<String> = ["same.txt", "old.txt", "gone.txt", "link"]
            .map(String::from)
            .into();
        let w = write_back(d.path(), Some(TreeBack::Received(tree)), 1000, &sent);
        assert_eq!(w.written, ["old.txt", "d/n.txt"], "{w:?}");
        assert_eq!(
            w.deleted,
            ["gone.txt"],
            "only what was sent and is gone: {w:?}"
        );
        assert!(!d.path().join("gone.txt").exists() && d.path().join("excluded.txt").exists());
        let refused: Vec<&str> = w.refused.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(refused, ["link", ".git/config", "../up"], "{w:?}");
        assert_eq!(w.unchanged, 1);
        assert_eq!(
            std::fs::read_to_string(d.path().join("old.txt")).unwrap(),
            "new"
        );
        assert!(!d.path().join("link").exists() && !d.path().parent().unwrap().join("up").exists());
        let big = tar_of(&[("./big", tar::EntryType::Regular, &[0u8; 50])]);
        let w = write_back(d.path(), Some(TreeBack::Received(big)), 10, &sent);
        assert!(w.error.unwrap().contains("over the cap") && !d.path().join("big").exists());
        // A tree that did not arrive deletes nothing.
        assert!(write_back(d.path(), None, 10, &sent).error.is_some());
        assert!(write_back(d.path(), Some(TreeBack::Cut), 10, &sent)
            .error
            .is_some());
        assert!(d.path().join("same.txt").exists() && d.path().join("old.txt").exists());
    }

    #[test]
    fn the_executable_bit_comes_back_and_other_mode_bits_stay() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("run.sh");
        std::fs::write(&script, "x").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o755);
        b.append_data(&mut h, "run.sh", &b"x"[..]).unwrap();
        let tree = b.into_inner().unwrap();
        let w = write_back(
            d.path(),
            Some(TreeBack::Received(tree)),
            100,
            &BTreeSet::new(),
        );
        assert_eq!(
            w.written,
            ["run.sh"],
            "a mode-only change is a change: {w:?}"
        );
        let mode = std::fs::metadata(&script).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "executable, and still private");
    }
}
