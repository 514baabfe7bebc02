//! Sessions: a workspace on the service's host that a key's runs share,
//! while every run still gets a fresh container (hydrated from it). Kept in
//! `sessions/ID/` in the state folder (`meta.json` and `ws/`), so they
//! survive a restart; removed after `idle` without use.
//!
//! Every file goes through the patch applier's rules (`patch::apply`): a
//! clean relative path, no VCS metadata, no git HEAD, through real folders
//! only. Sessions hold regular files and folders, nothing else: an archive
//! with a link or a device in it is refused whole.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::usage::now;
use super::{read_json, write_json};
use autodev::patch::apply;
use autodev::sandbox::demux::TreeBack;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    key: String,
    created: u64,
    last_used: u64,
}

/// One session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) key: String,
    dir: PathBuf,
    /// Held by a run from its copy-in to its end, and by each file change:
    /// a run sees the workspace as it was when it started.
    pub(crate) lock: tokio::sync::Mutex<()>,
    meta: Mutex<Meta>,
}

/// How a session's workspace is filled.
pub(crate) enum Init<'a> {
    Empty,
    Files(&'a serde_json::Map<String, serde_json::Value>),
    Tar(&'a [u8]),
}

/// Why a session was not made.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The key holds this many sessions, its most (`--max-sessions`).
    Full(usize),
    /// Its files could not be written (a bad archive, say).
    Failed(String),
}

/// One file of a session, as its listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Listed {
    /// Relative to the workspace.
    pub(crate) path: String,
    pub(crate) bytes: u64,
    /// The one mode bit a session keeps.
    pub(crate) executable: bool,
}

/// A session's files, sorted by path.
pub(crate) type Listing = Vec<Listed>;

impl Session {
    pub(crate) fn ws(&self) -> PathBuf {
        self.dir.join("ws")
    }

    fn touch(&self) {
        let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        m.last_used = now();
        // Best effort: a lost write costs only an earlier expiry after a restart.
        let _ = write_json(&self.dir.join("meta.json"), &*m);
    }

    pub(crate) fn info(&self) -> serde_json::Value {
        let m = self.meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let files = list(&self.ws()).unwrap_or_default();
        serde_json::json!({
            "id": m.id, "created": m.created, "last_used": m.last_used,
            "files": files.len(), "bytes": files.iter().map(|f| f.bytes).sum::<u64>(),
        })
    }
}

/// Every regular file under `root`, sorted, with its size and whether it
/// is executable (one `stat` each: the one the walk makes).
pub(crate) fn list(root: &Path) -> std::io::Result<Listing> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap_or(&e.path())
                    .to_path_buf();
                let md = e.metadata()?;
                out.push(Listed {
                    path: rel.to_string_lossy().into_owned(),
                    bytes: md.len(),
                    executable: md.mode() & 0o111 != 0,
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The regular files a run of `spec` is given (its workspace as the copy
/// walks it, exclusions applied): write-back may delete only these.
pub(crate) async fn sent(spec: &autodev::sandbox::RunSpec) -> Result<BTreeSet<String>, String> {
    let (root, copy, cap) = (
        spec.workspace.clone(),
        spec.copy.clone(),
        spec.limits.max_copy_bytes,
    );
    let m = tokio::task::spawn_blocking(move || autodev::workspace::manifest(&root, &copy, cap))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(m.entries
        .into_iter()
        .filter(|e| matches!(e.kind, autodev::workspace::EntryKind::File(_)))
        .map(|e| e.rel.to_string_lossy().into_owned())
        .collect())
}

/// The sessions of this service.
#[derive(Debug)]
pub(crate) struct Sessions {
    root: PathBuf,
    idle: Duration,
    /// Bytes a session's files may add up to.
    pub(crate) max_bytes: u64,
    /// Sessions one key may hold at once (`--max-sessions`).
    max_per_key: usize,
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// The sessions under `root`, those a previous run of the service left
    /// included (expired ones are removed).
    pub(crate) fn open(
        root: PathBuf,
        idle: Duration,
        max_bytes: u64,
        max_per_key: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let mut map = HashMap::new();
        for e in std::fs::read_dir(&root)? {
            let dir = e?.path();
            let meta: Option<Meta> = read_json(&dir.join("meta.json"));
            if !dir.join("ws").exists() && dir.join("ws.old").is_dir() {
                // Stopped in the middle of a replace: the files before it.
                std::fs::rename(dir.join("ws.old"), dir.join("ws"))?;
            }
            match meta {
                Some(m) if m.last_used + idle.as_secs() >= now() && dir.ends_with(&m.id) => {
                    let s = Session {
                        id: m.id.clone(),
                        key: m.key.clone(),
                        dir,
                        lock: tokio::sync::Mutex::new(()),
                        meta: Mutex::new(m),
                    };
                    map.insert(s.id.clone(), Arc::new(s));
                }
                // Expired, or half made when the service stopped.
                _ => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(Sessions {
            root,
            idle,
            max_bytes,
            max_per_key,
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` may make another session: `Err` with how many it
    /// holds when it is at `max_per_key` (each one is a folder on this
    /// host until it is removed or idles out).
    fn room_for(&self, key: &str) -> Result<(), usize> {
        let held = self.lock().values().filter(|s| s.key == key).count();
        if held >= self.max_per_key {
            Err(held)
        } else {
            Ok(())
        }
    }

    /// Makes a session of `key`'s, filled from `init`, unless the key
    /// holds its most already (checked before the files are written, and
    /// again as the session is entered, so callers at once cannot pass it).
    pub(crate) fn create(&self, key: &str, init: Init<'_>) -> Result<Arc<Session>, CreateError> {
        self.room_for(key).map_err(CreateError::Full)?;
        let id = format!("ses_{:016x}", fastrand::u64(..));
        let dir = self.root.join(&id);
        let made = std::fs::create_dir_all(dir.join("ws"))
            .map_err(|e| format!("creating the session: {e}"));
        let filled = made.and_then(|()| self.fill(&dir.join("ws"), init));
        let t = now();
        let meta = Meta {
            id: id.clone(),
            key: key.to_string(),
            created: t,
            last_used: t,
        };
        if let Err(e) = filled
            .and_then(|()| write_json(&dir.join("meta.json"), &meta).map_err(|e| e.to_string()))
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(CreateError::Failed(e));
        }
        let s = Arc::new(Session {
            id: id.clone(),
            key: key.to_string(),
            dir,
            lock: tokio::sync::Mutex::new(()),
            meta: Mutex::new(meta),
        });
        let mut map = self.lock();
        let held = map.values().filter(|s| s.key == key).count();
        if held >= self.max_per_key {
            drop(map);
            let _ = std::fs::remove_dir_all(&s.dir);
            return Err(CreateError::Full(held));
        }
        map.insert(id, s.clone());
        Ok(s)
    }

    fn fill(&self, ws: &Path, init: Init<'_>) -> Result<(), String> {
        let mut total = 0u64;
        let mut put = |path: &str, bytes: &[u8]| {
            total += bytes.len() as u64;
            if total > self.max_bytes {
                return Err(format!(
                    "the files add up to more than the session cap ({} bytes)",
                    self.max_bytes
                ));
            }
            apply::write_file(ws, path, bytes, self.max_bytes)
                .map_err(|(_, why)| format!("file {path:?}: {why}"))
        };
        match init {
            Init::Empty => Ok(()),
            Init::Files(files) => {
                for (path, v) in files {
                    let text = v
                        .as_str()
                        .ok_or_else(|| format!("file {path:?}: give its content as a string"))?;
                    put(path, text.as_bytes())?;
                }
                Ok(())
            }
            Init::Tar(bytes) => {
                let mut archive = tar::Archive::new(bytes);
                let entries = archive.entries().map_err(|e| format!("archive: {e}"))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| format!("archive: {e}"))?;
                    let path = entry
                        .path()
                        .map_err(|e| format!("archive: {e}"))?
                        .to_string_lossy()
                        .into_owned();
                    let kind = entry.header().entry_type();
                    if kind.is_dir() {
                        continue;
                    }
                    if !kind.is_file() {
                        return Err(format!(
                            "archive entry {path:?} is a {kind:?}: a session holds regular files and folders only"
                        ));
                    }
                    // The header's size is the archive's word: read at most
                    // the cap, so a lying header cannot make us hold more.
                    let mut buf = Vec::new();
                    (&mut entry)
                        .take(self.max_bytes + 1)
                        .read_to_end(&mut buf)
                        .map_err(|e| format!("archive entry {path:?}: {e}"))?;
                    let rel = put(&path, &buf)?;
                    let h = entry.header();
                    let exec = h.mode().is_ok_and(|m| m & 0o111 != 0);
                    apply::set_executable(ws, &rel, exec)
                        .map_err(|(_, why)| format!("archive entry {path:?}: {why}"))?;
                    // A folder of our own, just filled: nothing else writes in it.
                    keep_time(&ws.join(rel), h.mtime().unwrap_or(0))
                        .map_err(|e| format!("archive entry {path:?}: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// Replaces a session's files with an archive's, whole or not at all
    /// (the same rules and cap as a session made from a tar). The caller
    /// holds the session's lock.
    pub(crate) fn replace(&self, s: &Session, tar: &[u8]) -> Result<(), String> {
        let (ws, new, old) = (s.ws(), s.dir.join("ws.new"), s.dir.join("ws.old"));
        for stale in [&new, &old] {
            let _ = std::fs::remove_dir_all(stale);
        }
        let made = std::fs::create_dir(&new).map_err(|e| format!("replacing the files: {e}"));
        if let Err(e) = made.and_then(|()| self.fill(&new, Init::Tar(tar))) {
            let _ = std::fs::remove_dir_all(&new);
            return Err(e);
        }
        // Two renames: a stop between them leaves `ws.old`, which `open` puts back.
        std::fs::rename(&ws, &old)
            .and_then(|()| std::fs::rename(&new, &ws))
            .map_err(|e| format!("replacing the files: {e}"))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// The session `id` if `key` owns it (another key's is as missing as
    /// one that never was); its idle clock restarts.
    pub(crate) fn get(&self, id: &str, key: &str) -> Option<Arc<Session>> {
        let s = self.lock().get(id).filter(|s| s.key == key).cloned()?;
        s.touch();
        Some(s)
    }

    /// Removes the session `id` of `key`'s; false if there is none.
    pub(crate) async fn remove(&self, id: &str, key: &str) -> bool {
        let Some(s) = self.lock().get(id).filter(|s| s.key == key).cloned() else {
            return false;
        };
        // A run under way keeps its workspace until it ends.
        let _held = s.lock.lock().await;
        self.lock().remove(id);
        let _ = std::fs::remove_dir_all(&s.dir);
        true
    }

    /// Removes the sessions idle for longer than the limit (none that a
    /// run or a file change holds); returns how many.
    pub(crate) fn expire(&self) -> usize {
        let cutoff = now().saturating_sub(self.idle.as_secs());
        let idle: Vec<Arc<Session>> = self
            .lock()
            .values()
            .filter(|s| s.meta.lock().unwrap_or_else(|p| p.into_inner()).last_used < cutoff)
            .cloned()
            .collect();
        let mut n = 0;
        for s in idle {
            if let Ok(_held) = s.lock.try_lock() {
                self.lock().remove(&s.id);
                let _ = std::fs::remove_dir_all(&s.dir);
                n += 1;
            }
        }
        n
    }

    /// Writes one file of a session, within its cap.
    /// `exec`: make the file executable or not (else a new file is not,
    /// and a replaced one keeps its mode).
    pub(crate) fn put(
        &self,
        s: &Session,
        path: &str,
        bytes: &[u8],
        exec: Option<bool>,
    ) -> Result<(), String> {
        let ws = s.ws();
        let files = list(&ws).map_err(|e| e.to_string())?;
        let clean = apply::confine(path).map_err(|(_, why)| why)?;
        let others: u64 = files
            .iter()
            .filter(|f| Path::new(&f.path) != clean)
            .map(|f| f.bytes)
            .sum();
        if others + bytes.len() as u64 > self.max_bytes {
            return Err(format!(
                "the session's files would add up to more than its cap ({} bytes)",
                self.max_bytes
            ));
        }
        let rel = apply::write_file(&ws, path, bytes, self.max_bytes).map_err(|(_, why)| why)?;
        match exec {
            Some(x) => apply::set_executable(&ws, &rel, x).map_err(|(_, why)| why),
            None => Ok(()),
        }
    }

    /// The largest tar a run sends back for write-back: the session's cap
    /// plus room for the archive's headers.
    pub(crate) fn tree_cap(&self) -> u64 {
        self.max_bytes.saturating_mul(2).saturating_add(1 << 20)
    }

    /// Copies what a run changed back into the session, through the same
    /// rules as `PUT` (`workspace::write_back`); `sent`: the files it was
    /// given ([`sent`]), of which those it deleted are deleted.
    pub(crate) fn write_back(
        &self,
        s: &Session,
        tree: Option<TreeBack>,
        sent: &BTreeSet<String>,
    ) -> serde_json::Value {
        let w = autodev::patch::write_back::write_back(&s.ws(), tree, self.max_bytes, sent);
        serde_json::to_value(w).unwrap_or_default()
    }

    /// The workspace as a tar archive: regular files only, each with its
    /// time and whether it is executable (nothing of the service's host:
    /// no owner, no other mode bits), so that replacing the files with an
    /// archive and taking it again gives the same bytes.
    pub(crate) fn archive(&self, s: &Session) -> std::io::Result<Vec<u8>> {
        let ws = s.ws();
        let mut b = tar::Builder::new(Vec::new());
        for Listed { path: rel, .. } in list(&ws)? {
            let mut f = std::fs::File::open(ws.join(&rel))?;
            let md = f.metadata()?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            h.set_mode(stamp_mode(md.mode()));
            h.set_mtime(md.mtime().max(0) as u64);
            b.append_data(&mut h, &rel, &mut f)?;
        }
        b.into_inner()
    }
}

/// The mode a session file's archive entry has: executable or not,
/// readable by all (nothing else of the host's mode).
fn stamp_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// Gives a file written from an archive the entry's time.
fn keep_time(full: &Path, mtime: u64) -> std::io::Result<()> {
    let when = std::time::UNIX_EPOCH + Duration::from_secs(mtime);
    std::fs::File::options()
        .write(true)
        .open(full)?
        .set_modified(when)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths_and_sizes(ws: &Path) -> Vec<(String, u64)> {
        list(ws)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.bytes))
            .collect()
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            // Raw bytes: the tar crate's own path check would refuse `..`.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_session_holds_confined_regular_files_within_its_cap_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("sessions");
        let s = Sessions::open(root.clone(), Duration::from_secs(3600), 100, usize::MAX).unwrap();
        let ok = tar_with(&[("a/b.txt", tar::EntryType::Regular, b"hi")]);
        let ses = s.create("k", Init::Tar(&ok)).unwrap();
        assert_eq!(paths_and_sizes(&ses.ws()), [("a/b.txt".to_string(), 2)]);
        for (bad, says) in [
            (tar_with(&[("../x", tar::EntryType::Regular, b"x")]), ".."),
            (tar_with(&[("l", tar::EntryType::Symlink, b"")]), "Symlink"),
            (
                tar_with(&[(".git/config", tar::EntryType::Regular, b"x")]),
                "protected",
            ),
            (
                tar_with(&[("big", tar::EntryType::Regular, &[0u8; 101])]),
                "cap",
            ),
        ] {
            let e = match s.create("k", Init::Tar(&bad)).unwrap_err() {
                CreateError::Failed(why) => why,
                full => panic!("{full:?}"),
            };
            assert!(e.contains(says), "{e}");
        }
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            1,
            "refused sessions leave nothing"
        );
        assert!(s
            .put(&ses, "c.txt", &[1u8; 99], None)
            .unwrap_err()
            .contains("cap"));
        s.put(&ses, "a/b.txt", &[1u8; 90], Some(true)).unwrap();
        let md = std::fs::metadata(ses.ws().join("a/b.txt")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
            0o755
        );
        std::os::unix::fs::symlink("/etc", ses.ws().join("out")).unwrap();
        assert!(s
            .put(&ses, "out/x", b"x", None)
            .unwrap_err()
            .contains("symlink"));
        assert!(s.get(&ses.id, "other").is_none());
        let again = Sessions::open(root, Duration::from_secs(3600), 100, usize::MAX).unwrap();
        assert!(
            again.get(&ses.id, "k").is_some(),
            "sessions survive a restart"
        );
        let bad = tar_with(&[
            ("z.txt", tar::EntryType::Regular, b"z"),
            ("l", tar::EntryType::Symlink, b""),
        ]);
        let before = list(&ses.ws()).unwrap();
        assert!(again.replace(&ses, &bad).unwrap_err().contains("Symlink"));
        assert_eq!(
            list(&ses.ws()).unwrap(),
            before,
            "a refused replace changes nothing"
        );
        again
            .replace(
                &ses,
                &tar_with(&[("a/b.txt", tar::EntryType::Regular, b"hi")]),
            )
            .unwrap();
        assert_eq!(paths_and_sizes(&ses.ws()), [("a/b.txt".to_string(), 2)]);
        let tar = again.archive(&ses).unwrap();
        again.replace(&ses, &tar).unwrap();
        assert_eq!(
            again.archive(&ses).unwrap(),
            tar,
            "an archive survives a replace byte for byte"
        );
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a/b.txt"], "links are not archived");
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_removed_ones_are_gone() {
        let d = tempfile::tempdir().unwrap();
        let s = Sessions::open(d.path().to_path_buf(), Duration::ZERO, 100, usize::MAX).unwrap();
        let a = s.create("k", Init::Empty).unwrap();
        let b = s.create("k", Init::Empty).unwrap();
        let capped = Sessions::open(d.path().join("capped"), Duration::ZERO, 100, 1).unwrap();
        assert!(capped.room_for("k").is_ok());
        capped.create("k", Init::Empty).unwrap();
        assert_eq!(capped.room_for("k"), Err(1), "one key at its cap");
        assert!(matches!(
            capped.create("k", Init::Empty),
            Err(CreateError::Full(1))
        ));
        assert!(capped.room_for("other").is_ok(), "another key is not");
        assert!(!s.remove(&a.id, "other").await);
        assert!(s.remove(&a.id, "k").await);
        assert!(!a.dir.exists());
        {
            let mut m = b.meta.lock().unwrap();
            m.last_used = 0;
        }
        assert_eq!(s.expire(), 1);
        assert!(!b.dir.exists());
    }
}
