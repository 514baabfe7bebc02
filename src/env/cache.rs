//! The environment cache: images on the engine, found by tag and checked
//! by key; a lock file per key so one build serves every waiting run; a
//! last-used mark per key for `autodev env prune`.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{CacheUse, EnvError, EnvRecord, KEY_LABEL, RECORD_LABEL};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::SandboxError;

/// `$XDG_CACHE_HOME/autodev/env`, else `~/.cache/autodev/env`, else a
/// folder of this user's under the system's temporary folder.
pub fn dir() -> PathBuf {
    match crate::dirs::autodev_dir(crate::dirs::Base::Cache) {
        Some(d) => d.join("env"),
        // SAFETY: getuid has no failure mode.
        None => std::env::temp_dir().join(format!("autodev-env-{}", unsafe { libc::getuid() })),
    }
}

fn short(key: &str) -> &str {
    &key[..16.min(key.len())]
}

/// Held while one environment is looked up and built; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock for `key`, waiting (for another process's or task's
/// build) at most `wait`.
pub async fn lock(key: &str, wait: Duration, cancel: &CancellationToken) -> Result<Lock, EnvError> {
    let dir = dir().join("locks");
    std::fs::create_dir_all(&dir).map_err(|source| EnvError::Cache {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(format!("{}.lock", short(key)));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| EnvError::Cache {
            path: path.clone(),
            source,
        })?;
    let t0 = Instant::now();
    loop {
        // SAFETY: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Lock { _file: file });
        }
        if t0.elapsed() > wait {
            return Err(EnvError::Usage(format!(
                "another autodev has been building this environment for {}s (lock {}); \
                 wait for it or remove the lock file if no autodev runs",
                wait.as_secs(),
                path.display()
            )));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(EnvError::Sandbox(SandboxError::Interrupted)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Marks `key` as used now (for least-recently-used pruning).
pub fn touch(key: &str) {
    let dir = dir().join("used");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(short(key)), b"");
    }
}

fn last_used(key: &str) -> Option<SystemTime> {
    std::fs::metadata(dir().join("used").join(short(key)))
        .and_then(|m| m.modified())
        .ok()
}

/// Encodes a record for the image label.
pub(super) fn encode(r: &EnvRecord) -> String {
    let mut r = r.clone();
    r.connections.clear();
    crate::workspace::hex(serde_json::to_string(&r).unwrap_or_default().as_bytes())
}

fn decode(hex: &str) -> Option<EnvRecord> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    serde_json::from_slice(&bytes?).ok()
}

/// The environment tagged `tag`, if it exists and was built for `key`.
pub async fn find(
    docker: &DockerSandbox,
    tag: &str,
    key: &str,
) -> Result<Option<EnvRecord>, EnvError> {
    let info = match docker.client().inspect_image(tag).await {
        Ok(i) => i,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => {
            return Err(EnvError::Sandbox(SandboxError::Backend {
                engine: docker.name().to_string(),
                op: "inspect image",
                detail: e.to_string(),
            }))
        }
    };
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    if labels.get(KEY_LABEL).map(String::as_str) != Some(key) {
        return Ok(None);
    }
    Ok(labels
        .get(RECORD_LABEL)
        .and_then(|h| decode(h))
        .map(|mut r| {
            r.cache = CacheUse::Hit;
            r.image_id = info.id.unwrap_or(r.image_id);
            r.image = tag.to_string();
            r
        }))
}

/// One environment image on an engine, for `autodev env list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Its tag.
    pub image: String,
    /// Its record.
    pub record: EnvRecord,
    /// What it adds to its base image, in bytes: what removing it frees
    /// (the base is shared with the profile's runs and other environments).
    pub size_bytes: u64,
    /// The whole image, base included, in bytes.
    pub image_bytes: u64,
    /// When a run last used it (Unix seconds), if this host knows.
    pub last_used: Option<u64>,
}

/// Every environment image on `docker`, least recently used first.
pub async fn list(docker: &DockerSandbox) -> Result<Vec<Listed>, EnvError> {
    let filters = HashMap::from([("label".to_string(), vec![KEY_LABEL.to_string()])]);
    let images = docker
        .client()
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| {
            EnvError::Sandbox(SandboxError::Backend {
                engine: docker.name().to_string(),
                op: "list images",
                detail: e.to_string(),
            })
        })?;
    let mut out = Vec::new();
    // Base images' sizes, each asked once.
    let mut bases: HashMap<String, Option<u64>> = HashMap::new();
    for i in images {
        let Some(record) = i.labels.get(RECORD_LABEL).and_then(|h| decode(h)) else {
            continue;
        };
        // Podman files a short name as `docker.io/NAME` (or
        // `localhost/NAME`); the name autodev gave is the one shown.
        let image = i
            .repo_tags
            .iter()
            .map(|t| {
                ["docker.io/", "localhost/"]
                    .iter()
                    .find_map(|p| t.strip_prefix(p))
                    .unwrap_or(t)
            })
            .find(|t| t.starts_with(super::IMAGE_REPO))
            .map_or_else(|| i.id.clone(), str::to_string);
        let used = last_used(&record.key)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(i.created.max(0) as u64);
        let whole = i.size.max(0) as u64;
        let base = match bases.get(&record.base_image_id) {
            Some(size) => *size,
            None => {
                let size = image_size(docker, &record.base_image_id).await;
                bases.insert(record.base_image_id.clone(), size);
                size
            }
        };
        out.push(Listed {
            image,
            record: EnvRecord {
                image_id: i.id.clone(),
                ..record
            },
            // A base removed since is held by this image alone: all of it
            // is this image's.
            size_bytes: whole.saturating_sub(base.unwrap_or(0)),
            image_bytes: whole,
            last_used: Some(used),
        });
    }
    out.sort_by_key(|l| l.last_used);
    Ok(out)
}

async fn image_size(docker: &DockerSandbox, id: &str) -> Option<u64> {
    let i = docker.client().inspect_image(id).await.ok()?;
    u64::try_from(i.size?).ok()
}

/// The environments of `all` (least recently used first) that must go
/// for those left to take at most `max_bytes`.
fn over(all: Vec<Listed>, max_bytes: u64) -> Vec<Listed> {
    let mut total: u64 = all.iter().map(|l| l.size_bytes).sum();
    all.into_iter()
        .take_while(|l| {
            let go = total > max_bytes;
            total = total.saturating_sub(l.size_bytes);
            go
        })
        .collect()
}

/// Removes environments, least recently used first, until those left take
/// at most `max_bytes`; returns what was removed.
pub async fn prune(docker: &DockerSandbox, max_bytes: u64) -> Result<Vec<Listed>, EnvError> {
    let mut removed = Vec::new();
    for l in over(list(docker).await?, max_bytes) {
        let gone = docker
            .client()
            .remove_image(
                &l.record.image_id,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await;
        if gone.is_ok() {
            removed.push(l);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EnvRecord {
        EnvRecord {
            key: "ab".repeat(32),
            image: "autodev-env/python:abab".into(),
            image_id: "sha256:1".into(),
            base_image_id: "sha256:0".into(),
            profile: "python".into(),
            setup: "pip install -r 'requirements.txt' \"x\"".into(),
            manifests: vec![],
            allow: vec!["*.example.org".into()],
            setup_ms: 5,
            cache: CacheUse::Miss,
            connections: vec![],
            pulled_from: None,
        }
    }

    #[test]
    fn a_record_survives_the_label_round_trip() {
        let r = record();
        assert_eq!(decode(&encode(&r)), Some(r));
        assert_eq!(decode("zz"), None);
    }

    #[test]
    fn pruning_removes_the_least_recently_used_until_the_rest_fit() {
        let l = |name: &str, size: u64, used: u64| Listed {
            image: name.into(),
            record: record(),
            size_bytes: size,
            image_bytes: size + 1000,
            last_used: Some(used),
        };
        let all = vec![l("old", 30, 1), l("mid", 50, 2), l("new", 40, 3)];
        let names = |v: Vec<Listed>| v.into_iter().map(|l| l.image).collect::<Vec<_>>();
        assert_eq!(names(over(all.clone(), 120)), Vec::<String>::new());
        assert_eq!(names(over(all.clone(), 90)), ["old"]);
        assert_eq!(names(over(all.clone(), 89)), ["old", "mid"]);
        assert_eq!(names(over(all, 0)), ["old", "mid", "new"]);
    }

    #[tokio::test]
    async fn the_lock_is_held_by_one_taker_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: tests in this module are the only readers of the variable.
        unsafe { std::env::set_var("XDG_CACHE_HOME", d.path()) };
        let cancel = CancellationToken::new();
        let first = lock("k1", Duration::from_secs(1), &cancel).await.unwrap();
        let second = lock("k1", Duration::from_millis(300), &cancel).await;
        assert!(matches!(second, Err(EnvError::Usage(m)) if m.contains("another autodev")));
        drop(first);
        lock("k1", Duration::from_millis(300), &cancel)
            .await
            .unwrap();
    }
}
