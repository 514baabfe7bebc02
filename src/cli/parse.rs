//! Value parsers for the flags, and clap's errors on one line.

use autodev::batch::TaskVerdict;
use autodev::config::{self, ConfigError};

/// clap's error text on one line: what went wrong and the arguments it
/// names, without the usage block and the `--help` tip.
pub fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("Usage:") || t.starts_with("For more information") {
            if !parts.is_empty() {
                break;
            }
            continue;
        }
        parts.push(t.strip_prefix("error: ").unwrap_or(t).to_string());
    }
    parts.join(" ")
}

/// clap names the flag already: the message need not say it again.
pub(super) fn unnamed(e: ConfigError, what: &str) -> String {
    e.to_string().replace(&format!(" for {what}"), "")
}

pub(super) fn size(what: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |s| config::parse_size(what, s).map_err(|e| unnamed(e, what))
}

pub(super) fn duration(
    what: &'static str,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone {
    move |s| config::parse_duration(what, s).map_err(|e| unnamed(e, what))
}

pub(super) fn verdict(s: &str) -> Result<TaskVerdict, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_string())).map_err(|_| {
        format!("unknown verdict {s:?}: use passed, failed, timed_out, oom_killed, model_error or invalid_task")
    })
}

pub(super) fn label_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid label {s:?}: use KEY=VALUE")),
    }
}

pub(super) fn label_item(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.starts_with("autodev.") => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "invalid label {s:?}: use KEY=VALUE; keys starting with autodev. are reserved"
        )),
    }
}

pub(super) fn env_item(s: &str) -> Result<(String, String), ConfigError> {
    config::parse_env(s)
}
