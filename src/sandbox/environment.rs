//! What a run record says of the dependency environment a run used
//! (`record.environment`): the shapes only; the `env` module makes them.

use serde::{Deserialize, Serialize};

/// One manifest, by path in the project and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHash {
    /// Path relative to the project root.
    pub path: String,
    /// SHA-256 of its content.
    pub sha256: String,
}

/// Which environment a run used: `record.environment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvRecord {
    /// The cache key (SHA-256).
    pub key: String,
    /// The image's tag.
    pub image: String,
    /// The image's ID.
    pub image_id: String,
    /// The base image's ID.
    pub base_image_id: String,
    /// The profile whose language it serves.
    pub profile: String,
    /// The install step.
    pub setup: String,
    /// The manifests hashed into the key.
    pub manifests: Vec<ManifestHash>,
    /// The hosts the set-up could reach.
    pub allow: Vec<String>,
    /// How long the set-up phase took this run: the build on a miss, the
    /// lookup on a hit.
    pub setup_ms: u64,
    /// `hit` when it came from the cache, `miss` when built for this run.
    pub cache: CacheUse,
    /// Every connection the set-up asked the egress proxy for (on a miss).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<Connection>,
    /// Where a cluster's nodes pulled it from (`--registry`), by digest;
    /// absent on Docker engines, which run it by image ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_from: Option<String>,
}

/// Whether an environment was found or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUse {
    /// Found in the cache.
    Hit,
    /// Built for this run.
    Miss,
}

/// One request the proxy answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The host name asked for.
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// Whether it was let through.
    pub allowed: bool,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Why the egress proxy refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Refusal {
    /// The host is not on the allowlist.
    NotListed,
    /// The name resolved to an address that is never reachable from set-up.
    Address {
        /// The address.
        addr: String,
        /// What kind of address it is.
        kind: String,
    },
    /// The name did not resolve.
    NoAddress,
    /// The request was not one the proxy speaks.
    BadRequest,
}

impl Refusal {
    /// The one-line reason, for the result and the error message.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NotListed => "not on the allowlist".into(),
            Refusal::Address { addr, kind } => format!("it resolves to {addr}, {kind}"),
            Refusal::NoAddress => "the name does not resolve".into(),
            Refusal::BadRequest => "not an HTTP proxy request".into(),
        }
    }
}
