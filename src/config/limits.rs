//! Every sandbox limit, described once.
//!
//! A row of [`LIMITS`] says what a limit is called (the flag, the settings
//! file's key, a task line's key), its unit, its default, what a project
//! file may do with it, and what "looser" means for it. The command line's
//! flags, [`Limits::default`], a task line's `limits` (`overrides`), the
//! floor a task may not go under, and `config show` all read the table, so
//! a new limit is one row, one field of [`Limits`] (with its range in
//! [`Limits::validate`]) and the backends' lines that enforce it.

use std::time::Duration;

use super::keys::{Measure, Project};
use super::{defaults, parse_duration, parse_size, ConfigError, Limits, Network};

/// What kind of quantity a limit is, and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A number of cores, e.g. `0.5`.
    Cores,
    /// Bytes, written like `512m`.
    Bytes,
    /// A whole number.
    Count,
    /// A time, written like `180s`.
    Duration,
    /// A time, or none (no limit).
    OptionalDuration,
    /// Bytes, or none (no limit).
    OptionalBytes,
    /// `none` or `bridge`.
    Network,
    /// Text, e.g. `1000:1000`.
    Text,
    /// Text, or none (the engine's default).
    OptionalText,
}

/// A limit's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Cores.
    Cores(f64),
    /// Bytes.
    Bytes(u64),
    /// A whole number.
    Count(u32),
    /// A time.
    Duration(Duration),
    /// A time, or no limit.
    OptionalDuration(Option<Duration>),
    /// Bytes, or no limit.
    OptionalBytes(Option<u64>),
    /// A network mode.
    Network(Network),
    /// Text.
    Text(String),
    /// Text, or none.
    OptionalText(Option<String>),
}

/// What makes a task's value looser than the operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// A larger value (none, for an optional one, is the largest).
    Larger,
    /// Any network but none.
    Network,
    /// Any other value: nobody can tell which runtime or user is stronger.
    Same,
}

/// One limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Its name: the flag's without `--` and with `_` for `-` (clap's id),
    /// a task line's key, and the key in a settings file's `[sandbox]`.
    pub name: &'static str,
    /// Its key in a settings file: `sandbox.` and the name.
    pub file_key: &'static str,
    /// Another key a task line may use for it (older spelling).
    pub task_alias: Option<&'static str>,
    /// Another flag for it.
    pub flag_alias: Option<&'static str>,
    /// The flag's help.
    pub help: &'static str,
    /// Its default, as a flag would give it; `None`: no limit.
    pub default: Option<&'static str>,
    /// Its kind of quantity.
    pub unit: Unit,
    /// What a project file may do with it.
    pub project: Project,
    /// What is looser.
    pub floor: Floor,
    /// Reads it from a set of limits.
    pub get: fn(&Limits) -> Value,
    /// Writes it into a set of limits (a value of its own unit).
    pub set: fn(&mut Limits, Value),
}

impl Limit {
    /// The flag, `--name`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }

    /// Whether a task line's `key` names this limit.
    pub fn is_task_key(&self, key: &str) -> bool {
        self.name == key || self.task_alias == Some(key)
    }
}

const RUNTIME_FORBIDDEN: &str = "the isolation runtime is yours to choose";

/// Every limit, in the order `--help` and `config show` list them.
pub const LIMITS: &[Limit] = &[
    Limit {
        name: "cpus",
        file_key: "sandbox.cpus",
        task_alias: None,
        flag_alias: None,
        help: "CPU quota in cores.",
        default: Some(defaults::CPUS),
        unit: Unit::Cores,
        project: Project::Tighten(Measure::Number),
        floor: Floor::Larger,
        get: |l| Value::Cores(l.cpus),
        set: |l, v| {
            if let Value::Cores(x) = v {
                l.cpus = x;
            }
        },
    },
    Limit {
        name: "memory",
        file_key: "sandbox.memory",
        task_alias: None,
        flag_alias: None,
        help: "Memory limit (no swap on top), e.g. 512m.",
        default: Some(defaults::MEMORY),
        unit: Unit::Bytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::Bytes(l.memory),
        set: |l, v| {
            if let Value::Bytes(x) = v {
                l.memory = x;
            }
        },
    },
    Limit {
        name: "pids",
        file_key: "sandbox.pids",
        task_alias: None,
        flag_alias: None,
        help: "Maximum number of processes and threads.",
        default: Some(defaults::PIDS),
        unit: Unit::Count,
        project: Project::Tighten(Measure::Number),
        floor: Floor::Larger,
        get: |l| Value::Count(l.pids),
        set: |l, v| {
            if let Value::Count(x) = v {
                l.pids = x;
            }
        },
    },
    Limit {
        name: "timeout",
        file_key: "sandbox.timeout",
        task_alias: None,
        flag_alias: None,
        help: "Wall-clock limit, e.g. 180s or 3m.",
        default: Some(defaults::TIMEOUT),
        unit: Unit::Duration,
        project: Project::Tighten(Measure::Duration),
        floor: Floor::Larger,
        get: |l| Value::Duration(l.timeout),
        set: |l, v| {
            if let Value::Duration(x) = v {
                l.timeout = x;
            }
        },
    },
    Limit {
        name: "cpu_time",
        file_key: "sandbox.cpu_time",
        task_alias: None,
        flag_alias: None,
        help: "CPU time the run may use, all processes together (e.g. 60s); the wall clock still applies.",
        default: None,
        unit: Unit::OptionalDuration,
        project: Project::Tighten(Measure::Duration),
        floor: Floor::Larger,
        get: |l| Value::OptionalDuration(l.cpu_time),
        set: |l, v| {
            if let Value::OptionalDuration(x) = v {
                l.cpu_time = x;
            }
        },
    },
    Limit {
        name: "network",
        file_key: "sandbox.network",
        task_alias: None,
        flag_alias: None,
        help: "Network: none (default) or bridge.",
        default: Some(defaults::NETWORK),
        unit: Unit::Network,
        project: Project::Only("none"),
        floor: Floor::Network,
        get: |l| Value::Network(l.network),
        set: |l, v| {
            if let Value::Network(x) = v {
                l.network = x;
            }
        },
    },
    Limit {
        name: "output_limit",
        file_key: "sandbox.output_limit",
        task_alias: None,
        flag_alias: None,
        help: "Bytes of stdout and of stderr kept (head and tail), e.g. 1MiB.",
        default: Some(defaults::OUTPUT_LIMIT),
        unit: Unit::Bytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::Bytes(l.output_limit),
        set: |l, v| {
            if let Value::Bytes(x) = v {
                l.output_limit = x;
            }
        },
    },
    Limit {
        name: "workspace_size",
        file_key: "sandbox.workspace_size",
        task_alias: None,
        flag_alias: None,
        help: "Size of the writable /workspace tmpfs.",
        default: Some(defaults::WORKSPACE_SIZE),
        unit: Unit::Bytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::Bytes(l.workspace_size),
        set: |l, v| {
            if let Value::Bytes(x) = v {
                l.workspace_size = x;
            }
        },
    },
    Limit {
        name: "tmp_size",
        file_key: "sandbox.tmp_size",
        task_alias: None,
        flag_alias: None,
        help: "Size of the writable /tmp tmpfs.",
        default: Some(defaults::TMP_SIZE),
        unit: Unit::Bytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::Bytes(l.tmp_size),
        set: |l, v| {
            if let Value::Bytes(x) = v {
                l.tmp_size = x;
            }
        },
    },
    Limit {
        name: "max_copy",
        file_key: "sandbox.max_copy",
        task_alias: Some("max_copy_bytes"),
        flag_alias: None,
        help: "Refuse to copy a workspace larger than this.",
        default: Some(defaults::MAX_COPY),
        unit: Unit::Bytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::Bytes(l.max_copy_bytes),
        set: |l, v| {
            if let Value::Bytes(x) = v {
                l.max_copy_bytes = x;
            }
        },
    },
    Limit {
        name: "runtime",
        file_key: "sandbox.runtime",
        task_alias: None,
        flag_alias: Some("runtime-class"),
        help: "OCI runtime, e.g. runsc (gVisor) for stronger isolation; with --backend kubernetes, the pods' RuntimeClass (also --runtime-class).",
        default: None,
        unit: Unit::OptionalText,
        project: Project::Forbidden(RUNTIME_FORBIDDEN),
        floor: Floor::Same,
        get: |l| Value::OptionalText(l.runtime.clone()),
        set: |l, v| {
            if let Value::OptionalText(x) = v {
                l.runtime = x;
            }
        },
    },
    Limit {
        name: "user",
        file_key: "sandbox.user",
        task_alias: None,
        flag_alias: None,
        help: "User inside the container, UID:GID (never root).",
        default: Some(defaults::USER),
        unit: Unit::Text,
        project: Project::Allowed,
        floor: Floor::Same,
        get: |l| Value::Text(l.user.clone()),
        set: |l, v| {
            if let Value::Text(x) = v {
                l.user = x;
            }
        },
    },
    Limit {
        name: "file_size",
        file_key: "sandbox.file_size",
        task_alias: None,
        flag_alias: None,
        help: "Largest file a process may write, e.g. 16m (a write past it fails); Docker engines only.",
        default: None,
        unit: Unit::OptionalBytes,
        project: Project::Tighten(Measure::Size),
        floor: Floor::Larger,
        get: |l| Value::OptionalBytes(l.file_size),
        set: |l, v| {
            if let Value::OptionalBytes(x) = v {
                l.file_size = x;
            }
        },
    },
];

/// The limit a task line's `key` names.
pub fn for_task_key(key: &str) -> Option<&'static Limit> {
    LIMITS.iter().find(|l| l.is_task_key(key))
}

impl Unit {
    /// Reads `text` (a flag's or a file's value) for the limit `what`.
    pub fn parse(self, what: &'static str, text: &str) -> Result<Value, ConfigError> {
        let none = |t: &str| matches!(t.trim(), "none" | "off");
        Ok(match self {
            Unit::Cores => Value::Cores(
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| ConfigError::BadNumber {
                        what,
                        value: text.to_string(),
                    })?,
            ),
            Unit::Bytes => Value::Bytes(parse_size(what, text)?),
            Unit::OptionalBytes if none(text) => Value::OptionalBytes(None),
            Unit::OptionalBytes => Value::OptionalBytes(Some(parse_size(what, text)?)),
            Unit::Count => Value::Count(
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX))
                    .map(|n| n as u32)
                    .ok_or_else(|| ConfigError::OutOfRange {
                        what,
                        reason: format!("{text:?} is not a whole number"),
                    })?,
            ),
            Unit::Duration => Value::Duration(parse_duration(what, text)?),
            Unit::OptionalDuration if none(text) => Value::OptionalDuration(None),
            Unit::OptionalDuration => Value::OptionalDuration(Some(parse_duration(what, text)?)),
            Unit::Network => Value::Network(text.parse()?),
            Unit::Text => Value::Text(text.to_string()),
            Unit::OptionalText => Value::OptionalText(Some(text.to_string())),
        })
    }

    /// How a task line's JSON value is written, for its error.
    pub fn hint(self) -> &'static str {
        match self {
            Unit::Cores => "use a number of cores, e.g. 0.5",
            Unit::Count => "use a whole number",
            Unit::Bytes => "use a size, e.g. \"256m\" or 268435456",
            Unit::OptionalBytes => "use a size, e.g. \"256m\" or 268435456, or null",
            Unit::Duration => "use e.g. \"30s\" or 30",
            Unit::OptionalDuration => "use e.g. \"30s\", 30 or null",
            Unit::Network => "use \"none\" or \"bridge\"",
            Unit::Text => "use text, e.g. \"1000:1000\"",
            Unit::OptionalText => "use a name or null",
        }
    }

    /// Reads a task line's JSON value: a string in the flag's form, a plain
    /// number (bytes, cores, seconds), or null for "none" where a limit
    /// may be off. `Ok(None)`: a value of the wrong type.
    pub fn from_json(
        self,
        what: &'static str,
        v: &serde_json::Value,
    ) -> Result<Option<Value>, ConfigError> {
        use serde_json::Value as J;
        let text = match (v, self) {
            (J::Null, Unit::OptionalDuration) => return Ok(Some(Value::OptionalDuration(None))),
            (J::Null, Unit::OptionalBytes) => return Ok(Some(Value::OptionalBytes(None))),
            (J::Null, Unit::OptionalText) => return Ok(Some(Value::OptionalText(None))),
            (J::String(s), _) => s.clone(),
            // Plain numbers are bytes, cores or seconds; text is text.
            (J::Number(_), Unit::Text | Unit::OptionalText | Unit::Network) => return Ok(None),
            (J::Number(n), _) => n.to_string(),
            _ => return Ok(None),
        };
        self.parse(what, &text).map(Some)
    }
}

impl Value {
    /// The value as a user would write it.
    pub fn show(&self) -> String {
        let time = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Value::Cores(x) => x.to_string(),
            Value::Bytes(x) => x.to_string(),
            Value::Count(x) => x.to_string(),
            Value::Duration(d) => time(d),
            Value::OptionalDuration(d) => d.as_ref().map_or("none".into(), time),
            Value::OptionalBytes(b) => b.map_or("none".into(), |b| b.to_string()),
            Value::Network(n) => n.as_docker().to_string(),
            Value::Text(t) => t.clone(),
            Value::OptionalText(t) => t.clone().unwrap_or_else(|| "the engine's default".into()),
        }
    }

    /// Whether this value (a task's) is looser than `base` (the operator's)
    /// under `floor`.
    pub fn looser_than(&self, base: &Value, floor: Floor) -> bool {
        match floor {
            Floor::Same => self != base,
            Floor::Network => {
                *base == Value::Network(Network::None) && *self != Value::Network(Network::None)
            }
            Floor::Larger => match (self, base) {
                (Value::Cores(a), Value::Cores(b)) => a > b,
                (Value::Bytes(a), Value::Bytes(b)) => a > b,
                (Value::Count(a), Value::Count(b)) => a > b,
                (Value::Duration(a), Value::Duration(b)) => a > b,
                (Value::OptionalDuration(a), Value::OptionalDuration(b)) => larger(a, b),
                (Value::OptionalBytes(a), Value::OptionalBytes(b)) => larger(a, b),
                _ => self != base,
            },
        }
    }
}

/// `a > b` where none is no limit, larger than any.
fn larger<T: PartialOrd>(a: &Option<T>, b: &Option<T>) -> bool {
    match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
    }
}

impl Default for Limits {
    fn default() -> Self {
        let mut l = Limits {
            cpus: 0.0,
            memory: 0,
            pids: 0,
            timeout: Duration::ZERO,
            output_limit: 0,
            network: Network::None,
            workspace_size: 0,
            tmp_size: 0,
            max_copy_bytes: 0,
            user: String::new(),
            runtime: None,
            cpu_time: None,
            file_size: None,
        };
        for row in LIMITS {
            // The texts are constants, proven to parse by a unit test.
            if let Some(Ok(v)) = row.default.map(|d| row.unit.parse(row.name, d)) {
                (row.set)(&mut l, v);
            }
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_reads_its_default_and_writes_its_own_field() {
        let d = Limits::default();
        for row in LIMITS {
            if let Some(text) = row.default {
                let v = row.unit.parse(row.name, text).unwrap();
                assert_eq!((row.get)(&d), v, "{}", row.name);
            }
            assert_eq!(row.file_key, format!("sandbox.{}", row.name));
            // set writes the row's field and no other.
            let probe = match row.unit {
                Unit::Cores => Value::Cores(3.5),
                Unit::Bytes => Value::Bytes(12345),
                Unit::OptionalBytes => Value::OptionalBytes(Some(12345)),
                Unit::Count => Value::Count(77),
                Unit::Duration => Value::Duration(Duration::from_secs(77)),
                Unit::OptionalDuration => Value::OptionalDuration(Some(Duration::from_secs(77))),
                Unit::Network => Value::Network(Network::Bridge),
                Unit::Text => Value::Text("77:77".into()),
                Unit::OptionalText => Value::OptionalText(Some("x".into())),
            };
            let mut l = d.clone();
            (row.set)(&mut l, probe.clone());
            assert_eq!((row.get)(&l), probe, "{}", row.name);
            for other in LIMITS.iter().filter(|o| o.name != row.name) {
                assert_eq!(
                    (other.get)(&l),
                    (other.get)(&d),
                    "{} wrote {}",
                    row.name,
                    other.name
                );
            }
        }
        d.validate().unwrap();
    }

    #[test]
    fn looser_means_larger_or_on_or_different() {
        let t = |s: Option<u64>| Value::OptionalDuration(s.map(Duration::from_secs));
        assert!(t(None).looser_than(&t(Some(5)), Floor::Larger));
        assert!(!t(Some(5)).looser_than(&t(None), Floor::Larger));
        assert!(Value::Bytes(2).looser_than(&Value::Bytes(1), Floor::Larger));
        assert!(!Value::Bytes(1).looser_than(&Value::Bytes(1), Floor::Larger));
        let n = Value::Network;
        assert!(n(Network::Bridge).looser_than(&n(Network::None), Floor::Network));
        assert!(!n(Network::None).looser_than(&n(Network::Bridge), Floor::Network));
        let r = |s: Option<&str>| Value::OptionalText(s.map(String::from));
        assert!(r(None).looser_than(&r(Some("runsc")), Floor::Same));
    }

    #[test]
    fn task_keys_and_aliases_find_their_row() {
        assert_eq!(for_task_key("max_copy_bytes").unwrap().name, "max_copy");
        assert_eq!(for_task_key("max_copy").unwrap().name, "max_copy");
        assert!(for_task_key("nonsense").is_none());
    }
}
