//! A batch task's own `limits`, laid over the command line's.
//!
//! The command line is the operator's; a tasks file may come from anyone (a
//! third-party benchmark, say). So a task may tighten any limit, but may
//! loosen one (more memory, CPU, processes, time, output or disk; a network;
//! another runtime or user) only when the operator passed
//! `--allow-task-overrides`. Values take the command line's units: `"256m"`,
//! `"0.5"`, `"30s"`, or plain numbers (bytes, cores, seconds).

use serde_json::{Map, Value};

use super::limits::{for_task_key, LIMITS};
use super::{ConfigError, Limits};

/// Names a task's `limits` may hold.
pub fn keys() -> Vec<&'static str> {
    LIMITS
        .iter()
        .flat_map(|l| std::iter::once(l.name).chain(l.task_alias))
        .collect()
}

/// Why a task's limits cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverrideError {
    /// Not one of [`keys`].
    #[error("limits: unknown setting {0:?}; known: {known}", known = keys().join(", "))]
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
        let row = for_task_key(key).ok_or_else(|| OverrideError::Unknown(key.clone()))?;
        let value = row
            .unit
            .from_json(row.name, v)?
            .ok_or_else(|| OverrideError::BadValue {
                key: row.name,
                reason: row.unit.hint().into(),
            })?;
        (row.set)(&mut l, value);
    }
    if !allow_loosen {
        check_floor(base, &l)?;
    }
    l.validate()?;
    Ok(l)
}

fn check_floor(cli: &Limits, task: &Limits) -> Result<(), OverrideError> {
    for row in LIMITS {
        let (t, c) = ((row.get)(task), (row.get)(cli));
        if t.looser_than(&c, row.floor) {
            return Err(OverrideError::Loosens {
                key: row.name,
                task: t.show(),
                cli: c.show(),
            });
        }
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
