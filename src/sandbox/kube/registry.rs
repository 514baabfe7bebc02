//! The registry a cluster's nodes pull environments from (`--registry`).
//!
//! A cluster cannot see an image on this host's engine: an environment
//! built here is pushed to a registry the nodes can pull from, and the pod
//! names it by digest, so what runs is exactly what was built.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::SandboxError;

/// What the runs of one cluster share for their environments: the
/// registry, this host's engine that builds and pushes (connected once,
/// when first needed: a cluster user may have no engine here), and the
/// digests already pushed, so a batch pushes each environment once.
#[derive(Debug, Clone)]
pub struct EnvRoute {
    registry: Registry,
    builder: Arc<tokio::sync::OnceCell<DockerSandbox>>,
    pushed: Arc<Mutex<HashMap<String, String>>>,
}

impl EnvRoute {
    /// A route through `registry`, nothing connected or pushed yet.
    pub fn new(registry: Registry) -> Self {
        EnvRoute {
            registry,
            builder: Arc::default(),
            pushed: Arc::default(),
        }
    }

    /// Where environments are pushed.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This host's engine (`DOCKER_HOST` or the local socket).
    pub async fn builder(&self) -> Result<&DockerSandbox, SandboxError> {
        self.builder.get_or_try_init(DockerSandbox::connect).await
    }

    /// The digest reference this process pushed image `image_id` as.
    pub fn pushed(&self, image_id: &str) -> Option<String> {
        let map = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(image_id).cloned()
    }

    /// Notes that `image_id` was pushed as `pinned`.
    pub fn remember(&self, image_id: &str, pinned: &str) {
        let mut map = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(image_id.to_string(), pinned.to_string());
    }
}

/// `HOST[:PORT][/PATH]`: where environments are pushed, as the nodes'
/// engines name it (the same name must work for this host's engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    host: String,
    path: String,
}

impl Registry {
    /// Reads `HOST[:PORT][/PATH]`; says what is wrong in one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("--registry {text:?}: {why}"));
        if text.contains("://") {
            return bad("give HOST:PORT, not a URL (the engines choose HTTPS or HTTP themselves)");
        }
        let (host, path) = text.split_once('/').unwrap_or((text, ""));
        let has_path = text.contains('/');
        // A colon before the port: the last one, unless it is inside an
        // IPv6 address's brackets.
        let (name, port) = match host.rfind(':') {
            Some(i) if !host[..i].contains(':') || host[..i].ends_with(']') => {
                (&host[..i], Some(&host[i + 1..]))
            }
            _ => (host, None),
        };
        let ipv6 = name.starts_with('[') && name.ends_with(']');
        let name_ok = !name.is_empty()
            && (ipv6
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        if !name_ok {
            return bad("the host must be a name or an address");
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return bad("the port must be a number from 1 to 65535");
        }
        let path_ok = path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
        if has_path && !path_ok {
            return bad("the path after the host must be lower-case names separated by /");
        }
        Ok(Registry {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The repository `name` (`autodev-env/python`, say) is pushed to.
    pub fn repository(&self, name: &str) -> String {
        match self.path.is_empty() {
            true => format!("{}/{name}", self.host),
            false => format!("{}/{}/{name}", self.host, self.path),
        }
    }

    /// The host (and port) part, as credentials are filed under it.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.is_empty() {
            true => f.write_str(&self.host),
            false => write!(f, "{}/{}", self.host, self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_paths_are_read_and_the_rest_refused() {
        let r = Registry::parse("10.0.0.5:5000").unwrap();
        assert_eq!(
            r.repository("autodev-env/python"),
            "10.0.0.5:5000/autodev-env/python"
        );
        assert_eq!(r.host(), "10.0.0.5:5000");
        let r = Registry::parse("registry.example.org/team/ci").unwrap();
        assert_eq!(
            r.repository("autodev-env/go"),
            "registry.example.org/team/ci/autodev-env/go"
        );
        assert_eq!(r.to_string(), "registry.example.org/team/ci");
        assert!(Registry::parse("[fd00::5]:5000").is_ok());
        for bad in [
            "https://registry.example.org",
            "",
            "host:0",
            "host:99999",
            "host:port",
            "ho st:5000",
            "host/Upper",
            "host//x",
            "host/",
        ] {
            let e = Registry::parse(bad).unwrap_err();
            assert!(e.starts_with("--registry"), "{bad}: {e}");
        }
    }
}
