//! API keys: a name, the SHA-256 of its token, and its ceilings, kept in
//! `keys.json` in the service's state folder (mode 0600, replaced whole).
//!
//! Tokens are 32 random bytes from the kernel: a plain SHA-256 is enough to
//! keep a stolen key file from yielding tokens (a slow hash guards
//! guessable secrets, and these are not). A running service re-reads the
//! file when it changes, so `keys revoke` takes effect on the next request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use autodev::config::{overrides, Limits};

/// Why the key store cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a key file autodev wrote: {why}; move it away and add the keys again")]
    Corrupt { path: PathBuf, why: String },
    #[error("{0}")]
    Usage(String),
}

impl autodev::error::Classify for KeyError {
    fn class(&self) -> autodev::error::ErrorClass {
        match self {
            KeyError::Usage(_) | KeyError::Corrupt { .. } => autodev::error::ErrorClass::Usage,
            KeyError::Io { .. } => autodev::error::ErrorClass::Output,
        }
    }
}

/// One key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) name: String,
    /// SHA-256 of the token, hex.
    pub(crate) hash: String,
    /// Runs of this key at once (`None`: the service's slots).
    #[serde(default)]
    pub(crate) max_concurrent: Option<usize>,
    /// CPU-seconds in any 24 hours.
    #[serde(default)]
    pub(crate) cpu_seconds_per_day: Option<u64>,
    /// Ceilings, in a task line's `limits` form: the key's runs start from
    /// the operator's limits tightened by these, and may only go lower.
    #[serde(default)]
    pub(crate) limits: Map<String, Value>,
}

impl Key {
    /// The limits a request of this key starts from and may not exceed.
    pub(crate) fn ceiling(&self, operator: &Limits) -> Result<Limits, String> {
        overrides::apply(operator, &self.limits, false).map_err(|e| match e {
            overrides::OverrideError::Loosens { key, task, cli } => format!(
                "key {}: its {key} ceiling ({task}) is above the service's ({cli}); the service's applies: lower the key's",
                self.name
            ),
            e => format!("key {}: {e}", self.name),
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<Key>,
}

/// The key file, re-read when it changes.
#[derive(Debug)]
pub(crate) struct KeyStore {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, Arc<Vec<Key>>)>,
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KeyStore {
    /// The store in `state`; read now, so a bad file stops the service at start.
    pub(crate) fn open(state: &Path) -> Result<Self, KeyError> {
        let store = KeyStore {
            path: state.join("keys.json"),
            cached: Mutex::new((None, Arc::new(Vec::new()))),
        };
        store.current()?;
        Ok(store)
    }

    fn read(path: &Path) -> Result<Vec<Key>, KeyError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<KeyFile>(&bytes)
                .map(|f| f.keys)
                .map_err(|e| KeyError::Corrupt {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(KeyError::Io {
                op: "reading",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The keys as the file holds them now.
    pub(crate) fn current(&self) -> Result<Arc<Vec<Key>>, KeyError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0.is_none() || cached.0 != modified {
            *cached = (modified, Arc::new(Self::read(&self.path)?));
        }
        Ok(cached.1.clone())
    }

    /// The key whose token this is. The comparison is of hashes, so its
    /// timing says nothing about the token.
    pub(crate) fn find(&self, token: &str) -> Result<Option<Key>, KeyError> {
        let h = hash(token);
        Ok(self.current()?.iter().find(|k| k.hash == h).cloned())
    }

    fn write(&self, keys: Vec<Key>) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let io = |op, source| KeyError::Io {
            op,
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io("writing", e))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("writing", e))?;
        let text = serde_json::to_vec_pretty(&KeyFile { keys }).map_err(|e| {
            io(
                "writing",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        tmp.write_all(&text).map_err(|e| io("writing", e))?;
        tmp.as_file().sync_all().map_err(|e| io("writing", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io("replacing", e.error))?;
        Ok(())
    }

    /// Adds a key and returns its token (the only time it is seen).
    pub(crate) fn add(&self, mut key: Key, operator: &Limits) -> Result<String, KeyError> {
        let ok_name = !key.name.is_empty()
            && key.name.len() <= 64
            && key
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_name {
            return Err(KeyError::Usage(format!(
                "key name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                key.name
            )));
        }
        if key.max_concurrent == Some(0) {
            return Err(KeyError::Usage(
                "--max-concurrent 0 would never run anything: give at least 1, or revoke the key"
                    .into(),
            ));
        }
        key.ceiling(operator).map_err(KeyError::Usage)?;
        let mut keys = Self::read(&self.path)?;
        if keys.iter().any(|k| k.name == key.name) {
            return Err(KeyError::Usage(format!(
                "a key named {:?} exists: revoke it first, or pick another name",
                key.name
            )));
        }
        let token = new_token().map_err(|source| KeyError::Io {
            op: "reading random bytes from",
            path: "/dev/urandom".into(),
            source,
        })?;
        key.hash = hash(&token);
        keys.push(key);
        self.write(keys)?;
        Ok(token)
    }

    /// Removes the key named `name`.
    pub(crate) fn revoke(&self, name: &str) -> Result<(), KeyError> {
        let mut keys = Self::read(&self.path)?;
        let before = keys.len();
        keys.retain(|k| k.name != name);
        if keys.len() == before {
            return Err(KeyError::Usage(format!(
                "no key named {name:?} (autodev serve keys list shows them)"
            )));
        }
        self.write(keys)
    }
}

fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("adk_{}", hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, limits: Value) -> Key {
        Key {
            name: name.into(),
            hash: String::new(),
            max_concurrent: None,
            cpu_seconds_per_day: None,
            limits: limits.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn tokens_are_found_by_hash_and_revoked_keys_are_not_found() {
        let d = tempfile::tempdir().unwrap();
        let store = KeyStore::open(d.path()).unwrap();
        let ops = Limits::default();
        let t = store.add(key("a", Value::Null), &ops).unwrap();
        assert!(t.starts_with("adk_") && t.len() == 68);
        let text = std::fs::read_to_string(d.path().join("keys.json")).unwrap();
        assert!(!text.contains(&t), "the token itself is not stored");
        assert_eq!(store.find(&t).unwrap().unwrap().name, "a");
        assert!(store.find("adk_wrong").unwrap().is_none());
        assert!(store.add(key("a", Value::Null), &ops).is_err());
        store.revoke("a").unwrap();
        assert!(store.find(&t).unwrap().is_none());
        assert!(store.revoke("a").is_err());
    }

    #[test]
    fn a_keys_ceilings_only_tighten_the_operators() {
        let d = tempfile::tempdir().unwrap();
        let store = KeyStore::open(d.path()).unwrap();
        let ops = Limits::default();
        let e = store
            .add(key("big", serde_json::json!({"memory": "1t"})), &ops)
            .unwrap_err();
        assert!(e.to_string().contains("above the service's"), "{e}");
        let k = key("small", serde_json::json!({"timeout": "3s"}));
        assert_eq!(k.ceiling(&ops).unwrap().timeout.as_secs(), 3);
        assert!(store.add(key("bad name", Value::Null), &ops).is_err());
    }
}
