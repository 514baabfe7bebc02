//! Checking a value from a file or the environment before it becomes a
//! flag's default: its shape, the flag's own parser, and (project files)
//! that it does not loosen a limit.

use std::ffi::OsString;

use super::command::{clap_default, find_arg, is_flag, is_list};
use autodev::config::file::{Entry, FileError, FileLayer, Raw};
use autodev::config::keys::{Key, Measure, Project};
use autodev::config::{parse_duration, parse_size};

/// Reads an environment variable's text as the setting's kind of value.
pub(super) fn env_value(cmd: &clap::Command, key: &Key, text: &str) -> Raw {
    match find_arg(cmd, key.arg) {
        Some((_, a)) if is_flag(a) => match text {
            "1" | "true" | "yes" => Raw::Bool(true),
            "0" | "false" | "no" => Raw::Bool(false),
            other => Raw::Text(other.to_string()),
        },
        Some((_, a)) if is_list(a) => Raw::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        _ => Raw::Text(text.to_string()),
    }
}

/// Checks `value` with the parser of the flag it stands for.
pub(super) fn check_value(cmd: &clap::Command, key: &Key, value: &Raw) -> Result<(), String> {
    let Some((owner, arg)) = find_arg(cmd, key.arg) else {
        return Ok(());
    };
    let texts: Vec<&str> = match (value, is_flag(arg), is_list(arg)) {
        (Raw::Bool(_), true, _) => return Ok(()),
        (_, true, _) => return Err(format!("{} must be true or false", key.name)),
        (Raw::List(l), _, true) => l.iter().map(String::as_str).collect(),
        (Raw::Text(t), _, true) => vec![t.as_str()],
        (Raw::Text(t), _, false) => vec![t.as_str()],
        (Raw::List(_), _, false) => {
            return Err(format!("{} takes one value, not a list", key.name))
        }
        (Raw::Bool(_), _, _) => return Err(format!("{} is not true or false", key.name)),
    };
    // The flag alone in a command of its own: its parser and range checks.
    // (No setting with a value ties itself to another flag.)
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let alone = clap::Command::new(owner.get_name().to_string())
        .no_binary_name(true)
        .arg(arg.clone().required(false).env(None));
    for t in texts {
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(t);
        alone.clone().try_get_matches_from([flag]).map_err(|e| {
            let line = crate::cli::one_line(&e.render().to_string());
            // clap names the flag; a file names the key.
            format!("{}: {}", key.name, line.trim_start_matches("error: "))
        })?;
    }
    Ok(())
}

/// A project file's limits may not be looser than the user's (or the defaults).
pub(super) fn check_tightening(
    cmd: &clap::Command,
    project: &FileLayer,
    user: Option<&FileLayer>,
    given: &[String],
) -> Result<(), FileError> {
    for Entry { key, value, line } in &project.entries {
        let Project::Tighten(measure) = key.project else {
            continue;
        };
        // A flag the user typed replaces the project's value anyway.
        if given.iter().any(|g| g == key.arg) {
            continue;
        }
        let theirs = value.display();
        let (ours, whose) = match user.and_then(|u| u.entries.iter().rev().find(|e| e.key == *key))
        {
            Some(e) => (
                Some(e.value.display()),
                format!(
                    "{}:{}",
                    user.map(|u| u.path.display().to_string())
                        .unwrap_or_default(),
                    e.line
                ),
            ),
            None => (clap_default(cmd, key.arg), "the default".to_string()),
        };
        // No value below (no CPU-time limit, say): any value tightens.
        let Some(ours) = ours else { continue };
        let amount = |v: &str| -> Option<f64> {
            match measure {
                Measure::Size => parse_size("", v).ok().map(|b| b as f64),
                Measure::Duration => parse_duration("", v).ok().map(|d| d.as_secs_f64()),
                Measure::Number => v.trim().parse().ok(),
            }
        };
        if let (Some(t), Some(o)) = (amount(&theirs), amount(&ours)) {
            if t > o {
                return Err(FileError {
                    path: project.path.clone(),
                    line: *line,
                    message: format!(
                        "{} = {theirs} is looser than yours ({ours}, {whose}): a project file may only tighten limits; \
                         pass --{} {theirs} to allow it for this run",
                        key.name,
                        key.arg.replace('_', "-")
                    ),
                });
            }
        }
    }
    Ok(())
}
