//! Every setting a configuration file or the environment may give: its name
//! in a file (`section.key`), the command-line flag it stands for, and what
//! a project file may do with it.
//!
//! A project file (`autodev.toml` in a workspace) arrives with code the user
//! has not read, so it is treated like a batch task line: it may choose the
//! image, the runner and the copy rules, and tighten limits, but it never
//! chooses where code or the API key goes (engines, base URL, provider),
//! never opens the network, never picks the runtime, never passes host
//! environment variables in and never lets tasks loosen limits.

/// What a project file may do with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Project {
    /// Anything a user file may.
    Allowed,
    /// Nothing; the text says why.
    Forbidden(&'static str),
    /// Only a value at most as loose as the one below it (user file or
    /// default), compared as this kind of quantity.
    Tighten(Measure),
    /// Only this value.
    Only(&'static str),
}

/// How two values of a limit compare: larger is looser for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Bytes, written like `512m`.
    Size,
    /// Time, written like `180s`.
    Duration,
    /// A plain number (cores, processes).
    Number,
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Its name in a file: `section.key`, or `key` at the top.
    pub name: &'static str,
    /// The command-line argument it gives a default to (clap's id: the
    /// flag's name with `_` for `-`).
    pub arg: &'static str,
    /// What a project file may do with it.
    pub project: Project,
}

const fn key(name: &'static str, arg: &'static str, project: Project) -> Key {
    Key { name, arg, project }
}

use Measure::{Duration, Number, Size};
use Project::{Allowed, Forbidden, Tighten};

const DESTINATION: &str = "it decides where your code or your API key goes";
const COST: &str = "it decides what your API key pays for";
const LOAD: &str = "how many containers run on your engines at once is yours to choose";

/// Every setting, in the order `config show` and `config init` list them:
/// the profile and image, the limits (from their table), then the rest.
pub static KEYS: std::sync::LazyLock<Vec<Key>> = std::sync::LazyLock::new(|| {
    let limits = super::limits::LIMITS.iter().map(|l| Key {
        name: l.file_key,
        arg: l.name,
        project: l.project,
    });
    FIRST_KEYS
        .iter()
        .copied()
        .chain(limits)
        .chain(OTHER_KEYS.iter().copied())
        .collect()
});

/// The settings listed before the limits.
const FIRST_KEYS: &[Key] = &[
    key("profile", "profile", Allowed),
    key("sandbox.image", "image", Allowed),
];

/// The settings listed after the limits ([`super::limits::LIMITS`]).
const OTHER_KEYS: &[Key] = &[
    key("sandbox.junit", "junit", Allowed),
    key(
        "sandbox.env",
        "env",
        Forbidden("it would pass this machine's environment variables (your secrets) to the code"),
    ),
    key("sandbox.exclude", "exclude", Allowed),
    key("sandbox.label", "label", Allowed),
    key(
        "sandbox.no_default_excludes",
        "no_default_excludes",
        Allowed,
    ),
    key("sandbox.include_git", "include_git", Allowed),
    key("setup.command", "setup", Allowed),
    key("setup.off", "no_setup", Allowed),
    key(
        "setup.allow_host",
        "allow_host",
        Forbidden("it would widen what the set-up phase may reach"),
    ),
    key("setup.timeout", "setup_timeout", Tighten(Duration)),
    key("setup.disk", "setup_disk", Tighten(Size)),
    key(
        "setup.ca",
        "setup_ca",
        Forbidden("it would choose which certificates the set-up phase trusts"),
    ),
    key(
        "setup.env",
        "setup_env",
        Forbidden(
            "it would pass this machine's environment variables (your secrets) to the set-up",
        ),
    ),
    key("setup.proxy", "setup_proxy", Forbidden(DESTINATION)),
    key("engines.backend", "backend", Forbidden(DESTINATION)),
    key("engines.engine", "engine", Forbidden(DESTINATION)),
    key("engines.namespace", "namespace", Forbidden(DESTINATION)),
    key(
        "engines.image_pull_policy",
        "image_pull_policy",
        Forbidden(DESTINATION),
    ),
    key("engines.registry", "registry", Forbidden(DESTINATION)),
    key("engines.tls_ca", "tls_ca", Forbidden(DESTINATION)),
    key("engines.tls_cert", "tls_cert", Forbidden(DESTINATION)),
    key("engines.tls_key", "tls_key", Forbidden(DESTINATION)),
    key("engines.warm", "warm", Allowed),
    key("model.provider", "provider", Forbidden(DESTINATION)),
    key("model.name", "model", Forbidden(COST)),
    key("model.base_url", "base_url", Forbidden(DESTINATION)),
    key("model.timeout", "model_timeout", Tighten(Duration)),
    key("model.attempts", "model_attempts", Tighten(Number)),
    key("model.max_reply_size", "max_reply_size", Tighten(Size)),
    key("run.runner", "runner", Allowed),
    key("run.max_iters", "max_iters", Tighten(Number)),
    key(
        "run.max_context_chars",
        "max_context_chars",
        Tighten(Number),
    ),
    key(
        "run.max_failure_chars",
        "max_failure_chars",
        Tighten(Number),
    ),
    key("run.max_file_size", "max_file_size", Tighten(Size)),
    key("run.edit_format", "edit_format", Allowed),
    key(
        "run.allow_test_edits",
        "allow_test_edits",
        Forbidden("it would let the model change the tests that judge it"),
    ),
    key("run.protect", "protect", Allowed),
    key("run.keep", "keep", Allowed),
    key("run.git", "git", Allowed),
    key("run.git_only_improving", "git_only_improving", Allowed),
    key("batch.jobs", "jobs", Forbidden(LOAD)),
    key("batch.retries", "retries", Tighten(Number)),
    key("batch.prefetch", "prefetch", Forbidden(LOAD)),
    key("batch.retry_starved", "retry_starved", Allowed),
    key(
        "batch.allow_task_overrides",
        "allow_task_overrides",
        Forbidden("it would let task lines loosen your limits"),
    ),
];

/// Variables of other tools' conventions that stand for a setting when
/// nothing else gives it (as the docker CLI and OpenAI's clients read them),
/// and the value each stands for (`None`: the variable's own text).
pub const FOREIGN_ENV: &[(&str, &str, Option<&str>)] = &[
    ("engines.engine", "DOCKER_HOST", None),
    ("model.base_url", "OPENAI_BASE_URL", None),
    ("model.provider", "USE_OLLAMA", Some("ollama")),
];

/// The fields of a batch task line that settings of a file stand for, and
/// those settings: a task line, like a project file, comes from someone
/// else, so the same rule ([`Key::project`]) governs both.
pub const TASK_FIELDS: &[(&str, &str)] = &[
    ("image", "sandbox.image"),
    ("max_iters", "run.max_iters"),
    ("model.provider", "model.provider"),
    ("model.name", "model.name"),
    ("model.base_url", "model.base_url"),
];

/// The setting whose rule governs a task line's `field`.
pub fn for_task_field(field: &str) -> Option<&'static Key> {
    TASK_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .and_then(|(_, name)| by_name(name))
}

/// The fields a `[profiles.NAME]` table may hold.
pub const PROFILE_FIELDS: &[&str] = &[
    "image",
    "runner",
    "exclude",
    "junit",
    "prompt",
    "markers",
    "extensions",
];

/// Settings that were renamed: the old name a file may still use, and the new.
const RENAMED: &[(&str, &str)] = &[("engines.pool", "engines.warm")];

/// The setting called `name` in a file (or its older name).
pub fn by_name(name: &str) -> Option<&'static Key> {
    let name = RENAMED
        .iter()
        .find(|(old, _)| *old == name)
        .map_or(name, |(_, new)| *new);
    KEYS.iter().find(|k| k.name == name)
}

/// The sections and top-level keys a file may hold.
pub fn sections() -> Vec<&'static str> {
    let mut s: Vec<&str> = KEYS
        .iter()
        .map(|k| k.name.split_once('.').map_or(k.name, |(s, _)| s))
        .chain(["profiles"])
        .collect();
    s.dedup();
    s
}

/// The keys of `section`, without the section's name.
pub fn in_section(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|k| k.name.split_once('.'))
        .filter(|(s, _)| *s == section)
        .map(|(_, k)| k)
        .collect()
}

/// The environment variable for a setting: `AUTODEV_` and the flag's name.
pub fn env_var(k: &Key) -> String {
    format!("AUTODEV_{}", k.arg.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_key_still_reads_as_its_new_name() {
        assert_eq!(by_name("engines.pool").unwrap().name, "engines.warm");
        assert_eq!(by_name("engines.warm").unwrap().arg, "warm");
    }

    #[test]
    fn names_and_args_are_unique_and_sections_listed() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.arg, b.arg);
            }
        }
        assert_eq!(
            sections(),
            ["profile", "sandbox", "setup", "engines", "model", "run", "batch", "profiles"]
        );
        assert_eq!(in_section("batch")[0], "jobs");
        assert_eq!(
            env_var(by_name("sandbox.max_copy").unwrap()),
            "AUTODEV_MAX_COPY"
        );
    }
}
