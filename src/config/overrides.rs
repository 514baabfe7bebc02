//! A batch task's own `limits`, laid over the command line's.
//!
//! The command line is the operator's; a tasks file may come from anyone (a
//! third-party benchmark, say). So a task may tighten any limit, but may
//! loosen one (more memory, CPU, processes, time, output or disk; a network;
//! another runtime or user) only when the operator passed
//! `--allow-task-overrides`. Values take the command line's units: `"256m"`,
//! `"0.5"`, `"30s"`, or plain numbers (bytes, cores, seconds).

use serde_json::{Map, Value};

use super::{parse_duration, parse_size, ConfigError, Limits, Network};

/// Names a task's `limits` may hold.
pub const KEYS: &[&str] = &[
    "cpus",
    "memory",
    "pids",
    "timeout",
    "output_limit",
    "network",
    "workspace_size",
    "tmp_size",
    "max_copy_bytes",
    "user",
    "runtime",
    "cpu_time",
];

/// Why a task's limits cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverrideError {
    /// Not one of [`KEYS`].
    #[error("limits: unknown setting {0:?}; known: {known}", known = KEYS.join(", "))]
    Unknown(String),
    /// A value of the wrong type or form.
    #[error("limits.{key}: {reason}")]
    BadValue {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The task would weaken the operator's isolation.
    #[error("limits.{key} ({task}) is looser than the command line's ({cli}): a task may only tighten the operator's limits; pass --allow-task-overrides to let tasks loosen them")]
    Loosens {
        /// The setting.
        key: &'static str,
        /// The task's value.
        task: String,
        /// The command line's value.
        cli: String,
    },
    /// The result is not a valid set of limits.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// `base` with `over` laid on top, checked against the floor `base` sets
/// unless `allow_loosen`.
pub fn apply(
    base: &Limits,
    over: &Map<String, Value>,
    allow_loosen: bool,
) -> Result<Limits, OverrideError> {
    let mut l = base.clone();
    for (key, v) in over {
        let key: &'static str = KEYS
            .iter()
            .find(|k| **k == key)
            .ok_or_else(|| OverrideError::Unknown(key.clone()))?;
        let bad = |reason: String| OverrideError::BadValue { key, reason };
        match key {
            "cpus" => {
                l.cpus = number(v).ok_or_else(|| bad("use a number of cores, e.g. 0.5".into()))?
            }
            "pids" => {
                l.pids = number(v)
                    .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX))
                    .map(|n| n as u32)
                    .ok_or_else(|| bad("use a whole number".into()))?
            }
            "timeout" => {
                l.timeout = parse_duration(
                    "timeout",
                    &text(v).ok_or_else(|| bad("use e.g. \"30s\" or 30".into()))?,
                )?
            }
            "network" => {
                l.network = text(v)
                    .ok_or_else(|| bad("use \"none\" or \"bridge\"".into()))?
                    .parse()?
            }
            "user" => l.user = text(v).ok_or_else(|| bad("use \"UID:GID\"".into()))?,
            "cpu_time" => {
                l.cpu_time = match v {
                    Value::Null => None,
                    other => Some(parse_duration(
                        "cpu_time",
                        &text(other).ok_or_else(|| bad("use e.g. \"30s\", 30 or null".into()))?,
                    )?),
                }
            }
            "runtime" => {
                l.runtime = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => return Err(bad("use a runtime name or null".into())),
                }
            }
            _ => {
                let bytes = parse_size(
                    key,
                    &text(v).ok_or_else(|| bad("use a size, e.g. \"256m\" or 268435456".into()))?,
                )?;
                *size_field(&mut l, key) = bytes;
            }
        }
    }
    if !allow_loosen {
        check_floor(base, &l)?;
    }
    l.validate()?;
    Ok(l)
}

fn size_field<'a>(l: &'a mut Limits, key: &str) -> &'a mut u64 {
    match key {
        "memory" => &mut l.memory,
        "output_limit" => &mut l.output_limit,
        "workspace_size" => &mut l.workspace_size,
        "tmp_size" => &mut l.tmp_size,
        _ => &mut l.max_copy_bytes,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn check_floor(cli: &Limits, task: &Limits) -> Result<(), OverrideError> {
    let loosens = |key, task: String, cli: String| Err(OverrideError::Loosens { key, task, cli });
    let sizes = [
        ("memory", task.memory, cli.memory),
        ("output_limit", task.output_limit, cli.output_limit),
        ("workspace_size", task.workspace_size, cli.workspace_size),
        ("tmp_size", task.tmp_size, cli.tmp_size),
        ("max_copy_bytes", task.max_copy_bytes, cli.max_copy_bytes),
    ];
    for (key, t, c) in sizes {
        if t > c {
            return loosens(key, t.to_string(), c.to_string());
        }
    }
    if task.cpus > cli.cpus {
        return loosens("cpus", task.cpus.to_string(), cli.cpus.to_string());
    }
    if task.pids > cli.pids {
        return loosens("pids", task.pids.to_string(), cli.pids.to_string());
    }
    if task.timeout > cli.timeout {
        let f = |d| humantime::format_duration(d).to_string();
        return loosens("timeout", f(task.timeout), f(cli.timeout));
    }
    let cpu = |c: Option<std::time::Duration>| {
        c.map_or("none".into(), |d| humantime::format_duration(d).to_string())
    };
    if cli
        .cpu_time
        .is_some_and(|c| task.cpu_time.is_none_or(|t| t > c))
    {
        return loosens("cpu_time", cpu(task.cpu_time), cpu(cli.cpu_time));
    }
    if task.network == Network::Bridge && cli.network == Network::None {
        return loosens("network", "bridge".into(), "none".into());
    }
    // A task cannot tell which runtime or user is the stronger one: any change is a loosening.
    if task.runtime != cli.runtime {
        let f = |r: &Option<String>| r.clone().unwrap_or_else(|| "the daemon's default".into());
        return loosens("runtime", f(&task.runtime), f(&cli.runtime));
    }
    if task.user != cli.user {
        return loosens("user", task.user.clone(), cli.user.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn over(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn human_units_and_numbers_both_read() {
        let l = apply(
            &Limits::default(),
            &over(r#"{"memory":"256m","cpus":"0.5","timeout":"30s","pids":64,"tmp_size":1048576}"#),
            false,
        )
        .unwrap();
        assert_eq!(l.memory, 256 << 20);
        assert_eq!(l.cpus, 0.5);
        assert_eq!(l.timeout, Duration::from_secs(30));
        assert_eq!(l.pids, 64);
        assert_eq!(l.tmp_size, 1 << 20);
        let l = apply(
            &Limits::default(),
            &over(r#"{"timeout":2.5,"cpus":0.25}"#),
            false,
        )
        .unwrap();
        assert_eq!(l.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn cpu_time_is_a_duration_and_sets_only_itself() {
        let l = apply(&Limits::default(), &over(r#"{"cpu_time":"20s"}"#), true).unwrap();
        assert_eq!(l.cpu_time, Some(Duration::from_secs(20)));
        assert_eq!(l.max_copy_bytes, Limits::default().max_copy_bytes);
        let e = apply(&Limits::default(), &over(r#"{"cpu_time":"1000d"}"#), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("duration") && !e.contains("size"), "{e}");
        let cli = Limits {
            cpu_time: Some(Duration::from_secs(10)),
            ..Limits::default()
        };
        assert!(apply(&cli, &over(r#"{"cpu_time":null}"#), false).is_err());
        assert_eq!(
            apply(&cli, &over(r#"{"cpu_time":5}"#), false)
                .unwrap()
                .cpu_time,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn loosening_needs_the_operators_consent() {
        let cli = Limits {
            runtime: Some("runsc".into()),
            ..Limits::default()
        };
        for json in [
            r#"{"runtime":null}"#,
            r#"{"runtime":"runc"}"#,
            r#"{"network":"bridge"}"#,
            r#"{"memory":"1g"}"#,
            r#"{"cpus":2}"#,
            r#"{"pids":1000}"#,
            r#"{"timeout":"1h"}"#,
            r#"{"output_limit":"2MiB"}"#,
            r#"{"workspace_size":"1g"}"#,
            r#"{"user":"1001:1001"}"#,
        ] {
            let e = apply(&cli, &over(json), false).unwrap_err();
            assert!(matches!(e, OverrideError::Loosens { .. }), "{json}: {e}");
            assert!(e.to_string().contains("--allow-task-overrides"));
            apply(&cli, &over(json), true).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    #[test]
    fn bad_values_are_task_errors_never_panics() {
        let l = Limits::default();
        for json in [
            r#"{"timeout":1e30}"#,
            r#"{"timeout":"1e30"}"#,
            r#"{"memory":"lots"}"#,
            r#"{"memory":"9000000t"}"#,
            r#"{"cpus":"half"}"#,
            r#"{"pids":1.5}"#,
            r#"{"user":"1000:0"}"#,
            r#"{"network":"host"}"#,
            r#"{"bogus":1}"#,
            r#"{"memory":[1]}"#,
        ] {
            assert!(apply(&l, &over(json), true).is_err(), "{json}");
        }
        let e = apply(&l, &over(r#"{"user":"0:0"}"#), true).unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
    }
}
