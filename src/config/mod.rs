//! Limits and sandbox settings, filled once by the CLI, a batch task or a
//! config file, and validated in one place.
//!
//! Everything the executor enforces lives in [`Limits`]; the defaults are the
//! locked-down ones, so forgetting a flag never loosens the sandbox.

pub mod file;
pub mod keys;
pub mod limits;
pub mod overrides;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The default of each limit, as the command line writes it: the flags and
/// [`Limits::default`] both read these.
pub mod defaults {
    /// `--cpus`.
    pub const CPUS: &str = "1";
    /// `--memory`.
    pub const MEMORY: &str = "512m";
    /// `--pids`.
    pub const PIDS: &str = "256";
    /// `--timeout`.
    pub const TIMEOUT: &str = "180s";
    /// `--network`.
    pub const NETWORK: &str = "none";
    /// `--output-limit`.
    pub const OUTPUT_LIMIT: &str = "1MiB";
    /// `--workspace-size`.
    pub const WORKSPACE_SIZE: &str = "256m";
    /// `--tmp-size`.
    pub const TMP_SIZE: &str = "64m";
    /// `--max-copy`.
    pub const MAX_COPY: &str = "64m";
    /// `--user`.
    pub const USER: &str = "1000:1000";
}

/// Every settings error is the caller's to fix.
impl crate::error::Classify for ConfigError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Usage
    }
}

/// A setting that cannot be used, with what to do about it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size such as `512m` could not be read.
    #[error(
        "invalid size {value:?} for {what}: use a number with an optional unit up to 1PiB, e.g. 512m, 1GiB"
    )]
    BadSize {
        /// The flag or key it was given for.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A number of cores such as `0.5` could not be read.
    #[error("invalid {what} {value:?}: use a number of cores, e.g. 0.5 or 2")]
    BadNumber {
        /// The flag or key it was given for.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A duration such as `180s` could not be read.
    #[error("invalid duration {value:?} for {what}: use e.g. 90s, 3m, 1h (at most 7 days)")]
    BadDuration {
        /// The flag or key it was given for.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// A value is outside what the executor accepts.
    #[error("invalid {what}: {reason}")]
    OutOfRange {
        /// The flag or key it was given for.
        what: &'static str,
        /// Why it cannot be used, and the range that can.
        reason: String,
    },
    /// An unknown network mode.
    #[error("invalid network {0:?}: use none (the default) or bridge")]
    BadNetwork(String),
    /// `--env KEY` for a variable this process does not have.
    #[error("environment variable {0} is not set here, so there is nothing to pass: set it, or pass {0}=VALUE")]
    UnsetEnv(String),
    /// An `--env` item that is not `KEY=VALUE` or `KEY`.
    #[error("invalid environment variable {0:?}: use KEY=VALUE, with KEY made of letters, digits and _, not starting with a digit")]
    BadEnv(String),
}

/// Network access granted to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No interface but loopback.
    #[default]
    None,
    /// Docker's default bridge: outbound access. Only on request.
    Bridge,
}

impl Network {
    /// Docker's name for this mode.
    pub fn as_docker(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Network::None),
            "bridge" => Ok(Network::Bridge),
            other => Err(ConfigError::BadNetwork(other.to_string())),
        }
    }
}

/// Resource limits and isolation settings for one sandboxed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU quota in cores (e.g. 1.5).
    pub cpus: f64,
    /// Memory limit in bytes; swap is not added on top.
    pub memory: u64,
    /// Maximum number of processes (and threads) in the container.
    pub pids: u32,
    /// Wall-clock limit for the test command, copy-in included.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept in memory (head and tail).
    pub output_limit: u64,
    /// Network mode.
    pub network: Network,
    /// Size of the writable `/workspace` tmpfs.
    pub workspace_size: u64,
    /// Size of the writable `/tmp` tmpfs.
    pub tmp_size: u64,
    /// Refuse to copy a workspace whose files add up to more than this.
    pub max_copy_bytes: u64,
    /// User (uid:gid) the command runs as; never root by default.
    pub user: String,
    /// OCI runtime, e.g. `runsc` for gVisor; `None` is the daemon's default.
    pub runtime: Option<String>,
    /// CPU time (user and system, all processes together) the run may use;
    /// `None`: only the wall clock limits it.
    #[serde(with = "opt_duration")]
    pub cpu_time: Option<Duration>,
    /// Largest file a process may write, in bytes (`RLIMIT_FSIZE`; a write
    /// past it fails and the writer gets `SIGXFSZ`); `None`: only the
    /// tmpfs sizes bound it.
    #[serde(default)]
    pub file_size: Option<u64>,
}

impl Limits {
    /// Whether runs go to gVisor (a runtime registered under a name
    /// starting with `runsc`, as its documentation names it): its own
    /// kernel answers the code, and its threads count in the cgroup.
    pub fn gvisor(&self) -> bool {
        self.runtime
            .as_deref()
            .is_some_and(|r| r.starts_with("runsc"))
    }
}

const MIB: u64 = 1024 * 1024;

/// Longest accepted wall-clock limit: a week is past any real test run, and
/// keeps every deadline computation far from overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest uid or gid the engines accept.
const MAX_ID: u32 = i32::MAX as u32;
/// Largest process limit: Linux's `PID_MAX_LIMIT` on 64-bit hosts.
const MAX_PIDS: u32 = 4 * 1024 * 1024;
/// Largest accepted size (1 PiB): beyond it a limit means "unlimited" by
/// accident (Docker saturates it), never by design.
pub const MAX_SIZE: u64 = 1 << 50;

impl Limits {
    /// Checks that every value can be enforced; call once after filling.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |what, reason: &str| {
            Err(ConfigError::OutOfRange {
                what,
                reason: reason.to_string(),
            })
        };
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 1024.0) {
            return range("--cpus", "must be between 0.01 and 1024");
        }
        // Docker refuses less than 6 MB; below that a Python interpreter does not start anyway.
        if self.memory < 6 * MIB {
            return range("--memory", "must be at least 6m");
        }
        if self.pids < 8 {
            return range(
                "--pids",
                "must be at least 8 (the shell, init and the command need some)",
            );
        }
        if self.pids > MAX_PIDS {
            return range(
                "--pids",
                "must be at most 4194304 (the kernel's largest process count)",
            );
        }
        // As --cpu-time: below 100ms a run cannot even start its command.
        if self.timeout < Duration::from_millis(100) || self.timeout > MAX_TIMEOUT {
            return range("--timeout", "must be at least 100ms and at most 7 days");
        }
        if self
            .cpu_time
            .is_some_and(|c| c < Duration::from_millis(100) || c > MAX_TIMEOUT)
        {
            return range("--cpu-time", "must be at least 100ms and at most 7 days");
        }
        for (what, v) in [
            ("--memory", self.memory),
            ("--output-limit", self.output_limit),
            ("--workspace-size", self.workspace_size),
            ("--tmp-size", self.tmp_size),
            ("--max-copy", self.max_copy_bytes),
        ] {
            if v > MAX_SIZE {
                return range(what, "must be at most 1PiB");
            }
        }
        if self
            .file_size
            .is_some_and(|n| !(1024..=MAX_SIZE).contains(&n))
        {
            return range("--file-size", "must be at least 1KiB and at most 1PiB");
        }
        if self.output_limit < 1024 {
            return range("--output-limit", "must be at least 1KiB");
        }
        if self.workspace_size < MIB || self.tmp_size < MIB {
            return range("--workspace-size/--tmp-size", "must be at least 1m");
        }
        // Numeric ids: the /workspace tmpfs is mounted with this uid/gid, and
        // a name would need the image's passwd file to mean anything.
        let ids: Vec<&str> = self.user.split(':').collect();
        if ids.len() != 2
            || ids
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return range("--user", "use numeric UID:GID, e.g. 1000:1000");
        }
        if ids.iter().any(|id| id.parse::<u32>().ok() == Some(0)) {
            return range(
                "--user",
                "the sandbox never runs as root, as user or as group (uid and gid must not be 0)",
            );
        }
        // The kernel's ids are 32 bits, but the engines take 31.
        if ids
            .iter()
            .any(|id| id.parse::<u32>().map_or(true, |n| n > MAX_ID))
        {
            return range("--user", "UID and GID must be at most 2147483647");
        }
        Ok(())
    }
}

/// Parses a size like `512m`, `1GiB`, `100k` or `2048` (bytes).
pub fn parse_size(what: &'static str, value: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize {
        what,
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| bad())?;
    // Docker's own flags read `m` as MiB; we follow it so `--memory 512m` means the same here.
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > MAX_SIZE as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses a duration like `180s`, `3m` or a bare number of seconds.
pub fn parse_duration(what: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration {
        what,
        value: value.to_string(),
    };
    let v = value.trim();
    let d = match v.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| bad())?,
        Err(_) => humantime::parse_duration(v).map_err(|_| bad())?,
    };
    if d > MAX_TIMEOUT {
        return Err(bad());
    }
    Ok(d)
}

/// Parses `KEY=VALUE`; a bare `KEY` takes the value from the caller's environment,
/// so a secret never has to appear on the command line.
pub fn parse_env(item: &str) -> Result<(String, String), ConfigError> {
    let bad = || ConfigError::BadEnv(item.to_string());
    match item.split_once('=') {
        Some((k, v)) if valid_env_key(k) => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(bad()),
        // Unset here: passing it empty would look set to the code (the
        // docker CLI leaves it out; a typo is likelier than intent).
        None if valid_env_key(item) => std::env::var(item)
            .map(|v| (item.to_string(), v))
            .map_err(|_| ConfigError::UnsetEnv(item.to_string())),
        None => Err(bad()),
    }
}

/// A POSIX shell variable name: the only names every shell and runtime
/// passes through (others are accepted by Docker and then dropped silently).
pub fn valid_env_key(k: &str) -> bool {
    let mut bytes = k.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Serde adapter for an optional duration, written like `timeout`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde_compat::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::humantime_serde_compat")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// Serde adapter so durations read as "180s" in task files and config.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => super::parse_duration("timeout", &s.to_string()),
            Raw::Text(t) => super::parse_duration("timeout", &t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_docker_units() {
        assert_eq!(parse_size("x", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("x", "1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("x", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("x", "2048").unwrap(), 2048);
        assert!(parse_size("x", "12q").is_err());
        assert!(parse_size("x", "").is_err());
        assert!(parse_size("x", "-1m").is_err());
    }

    #[test]
    fn durations_accept_bare_seconds_and_units() {
        assert_eq!(
            parse_duration("t", "180s").unwrap(),
            Duration::from_secs(180)
        );
        assert_eq!(
            parse_duration("t", "2.5").unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(parse_duration("t", "3m").unwrap(), Duration::from_secs(180));
        assert!(parse_duration("t", "soon").is_err());
        for huge in ["1e30", "-1", "NaN", "inf", "8d", "1e10"] {
            assert!(parse_duration("t", huge).is_err(), "{huge}");
        }
        assert!(serde_json::from_str::<Limits>(r#"{"timeout":1e30}"#).is_err());
    }

    #[test]
    fn sizes_that_would_mean_unlimited_are_refused() {
        assert!(parse_size("--memory", "9000000t").is_err());
        assert!(parse_size("--memory", "1e30").is_err());
        assert!(parse_size("--memory", "1024t").is_ok());
    }

    #[test]
    fn defaults_are_valid_and_locked_down() {
        let l = Limits::default();
        assert_eq!(l.memory, 512 * MIB);
        assert_eq!(l.timeout, Duration::from_secs(180));
        assert_eq!((l.cpus, l.pids, l.output_limit), (1.0, 256, MIB));
        assert_eq!(
            (l.workspace_size, l.tmp_size, l.max_copy_bytes),
            (256 * MIB, 64 * MIB, 64 * MIB)
        );
        l.validate().unwrap();
        assert_eq!(l.network, Network::None);
        assert_ne!(l.user, "0:0");
    }

    #[test]
    fn validation_names_the_flag() {
        let l = Limits {
            memory: 1024,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("--memory"));
        let l = Limits {
            pids: u32::MAX,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("--pids"));
        assert_eq!(parse_size("--memory", "1PiB").unwrap(), MAX_SIZE);
        for user in [
            "0:0",
            "00:5",
            "1000:0",
            "1000:00",
            "root",
            "nobody",
            "1000",
            "1000:",
            "a:b",
            "99999999999:1",
            "4294967295:1",
            "1000:2147483648",
        ] {
            let l = Limits {
                user: user.into(),
                ..Limits::default()
            };
            assert!(
                l.validate().unwrap_err().to_string().contains("--user"),
                "{user}"
            );
        }
    }

    #[test]
    fn limits_read_from_json_with_text_durations() {
        let l: Limits = serde_json::from_str(r#"{"timeout":"5s","memory":100000000}"#).unwrap();
        assert_eq!(l.timeout, Duration::from_secs(5));
        assert_eq!(l.memory, 100_000_000);
        assert_eq!(l.pids, 256);
    }

    #[test]
    fn env_items() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        for bad in ["A B=1", "X-Y=2", "\u{e9}=3", "1A=1", "A.B=1"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_env("_A1=x").unwrap(), ("_A1".into(), "x".into()));
        assert!(parse_env("AUTODEV_SURELY_UNSET_VAR")
            .unwrap_err()
            .to_string()
            .contains("not set here"));
    }
}
