//! One settings pipeline: built-in defaults → the chosen profile → the user's
//! file → the project's `autodev.toml` → `AUTODEV_*` variables → flags.
//!
//! Each layer below the flags becomes the *default* of the flag it stands
//! for, so clap still parses every value (one parser per setting, the same
//! messages), `--help` shows the effective defaults, and a flag given on the
//! command line always wins. Values from files and the environment are
//! checked by those parsers as they are read, so a bad one is reported with
//! its file and line, not as a flag the user never typed.

mod command;
mod values;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use serde::Serialize;

use super::{Cli, Command, ConfigCommand, EnvCommand};
use autodev::config::file::{self, FileError, FileLayer, Raw, Scope, PROJECT_FILE};
use autodev::config::keys::{self, Key};
use autodev::profile::{self, Detection, Profile, ProfileError, Profiles};
pub(crate) use command::{built, find_arg};
use command::{clap_default, given_flags, with_defaults};
use values::{check_tightening, check_value, env_value};

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// autodev's built-in default.
    Default,
    /// The chosen profile.
    Profile {
        /// Its name.
        name: String,
    },
    /// A configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// The command line.
    Flag,
    /// Found from the workspace's files.
    Detected {
        /// What pointed to it, e.g. `go.mod`.
        evidence: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Profile { name } => write!(f, "profile {name}"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Env { var } => write!(f, "env {var}"),
            Source::Flag => write!(f, "command line"),
            Source::Detected { evidence } => write!(f, "detected ({evidence})"),
        }
    }
}

/// A setting's effective value and its source.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    /// The setting's name in a file.
    pub key: &'static str,
    /// Its value as text; `None` when unset.
    pub value: Option<String>,
    /// Where it comes from.
    pub source: Source,
}

/// How the profile was chosen.
#[derive(Debug, Clone)]
pub enum ProfileChoice {
    /// Named by a flag, a file or the environment.
    Named(Source),
    /// Found from the workspace's files.
    Detected(Detection),
    /// Nothing named or found one: the default.
    Fallback,
}

/// The command line with every layer applied.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed command line.
    pub cli: Cli,
    /// The profile and where every setting came from.
    pub settings: Settings,
}

/// What the layers decided besides the command line's values.
#[derive(Debug)]
pub struct Settings {
    /// The profile in effect.
    pub profile: Profile,
    /// How it was chosen.
    pub choice: ProfileChoice,
    /// Every setting's value and source, in [`keys::KEYS`] order.
    pub origins: Vec<Origin>,
    /// Every profile known.
    pub profiles: Profiles,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// Settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line itself (or `--help`, `--version`).
    #[error("{}", super::one_line(&.0.render().to_string()))]
    Clap(#[from] clap::Error),
    /// A configuration file.
    #[error(transparent)]
    File(#[from] FileError),
    /// An `AUTODEV_*` variable.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The profile.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// A value from one layer.
#[derive(Debug, Clone)]
struct Layered {
    key: &'static Key,
    value: Raw,
    source: Source,
}

/// Parses `argv` with every layer applied; `env` reads the environment and
/// `cwd` is where a project file is looked for when the command has no
/// workspace.
pub fn load(
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Loaded, LoadError> {
    // Stage one: the command line alone, for the workspace and --profile.
    // Help and version are rendered by stage two, with the layered defaults.
    let (first, given) = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => (Some(Cli::from_arg_matches(&m)?), given_flags(&m)),
        Err(e) if !e.use_stderr() => (None, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let place = first.as_ref().map(|c| place(c, cwd)).unwrap_or_default();
    let flag_profile = first.as_ref().and_then(flag_profile);

    let cmd = built();
    let read = read_files(&cmd, env, &place, &given)?;
    let mut layers = read.layers;
    layers.extend(env_layers(&cmd, env)?);
    let (profile, choice) = choose_profile(flag_profile, &layers, &place, &read.profiles)?;
    // The profile's values sit below every other layer.
    let mut below = profile_layers(&profile);
    below.extend(layers);
    let layers = below;

    // Stage two: the layers as defaults, the command line on top.
    let mut effective: BTreeMap<&'static str, &Layered> = BTreeMap::new();
    for l in &layers {
        effective.insert(l.key.arg, l);
    }
    let layered_cmd = with_defaults(Cli::command(), &effective);
    let matches = layered_cmd.clone().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.with_cmd(&layered_cmd))?;
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let origins = keys::KEYS
        .iter()
        .map(|key| origin(key, leaf, &effective, &cmd, (&profile, &choice)))
        .collect();
    Ok(Loaded {
        cli,
        settings: Settings {
            profile,
            choice,
            origins,
            profiles: read.profiles,
            files: read.files,
        },
    })
}

/// What the settings files gave.
struct FileLayers {
    /// The files read, user file first.
    files: Vec<PathBuf>,
    /// Their values, in order.
    layers: Vec<Layered>,
    /// The profiles, with the files' `[profiles.NAME]` tables applied.
    profiles: Profiles,
}

/// Reads the user's file and the project's (the first `autodev.toml` in
/// the command's folders), checking each value with its flag's parser and
/// that the project file only tightens limits.
fn read_files(
    cmd: &clap::Command,
    env: &dyn Fn(&str) -> Option<String>,
    place: &Place,
    given: &[String],
) -> Result<FileLayers, LoadError> {
    let mut read = FileLayers {
        files: Vec::new(),
        layers: Vec::new(),
        profiles: Profiles::default(),
    };
    let user = match file::user_file(env) {
        Some(p) => FileLayer::read(&p, Scope::User)?,
        None => None,
    };
    let project = place
        .project_dirs
        .iter()
        .map(|d| d.join(PROJECT_FILE))
        // Not `is_file`, which follows links: a link named autodev.toml is
        // found, and refused by `read`.
        .find(|p| std::fs::symlink_metadata(p).is_ok());
    let project = match project {
        Some(p) => FileLayer::read(&p, Scope::Project)?,
        None => None,
    };
    for layer in [user.as_ref(), project.as_ref()].into_iter().flatten() {
        read.files.push(layer.path.clone());
        for e in &layer.entries {
            check_value(cmd, e.key, &e.value).map_err(|message| FileError {
                path: layer.path.clone(),
                line: e.line,
                message,
            })?;
            read.layers.push(Layered {
                key: e.key,
                value: e.value.clone(),
                source: Source::File {
                    path: layer.path.clone(),
                    line: e.line,
                },
            });
        }
        for (name, patch, line) in &layer.profiles {
            read.profiles
                .apply(name, patch.clone())
                .map_err(|e| FileError {
                    path: layer.path.clone(),
                    line: *line,
                    message: e.to_string(),
                })?;
        }
    }
    if let Some(project) = &project {
        check_tightening(cmd, project, user.as_ref(), given)?;
    }
    Ok(read)
}

/// The `AUTODEV_*` variables, each checked with its flag's parser.
fn env_layers(
    cmd: &clap::Command,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Layered>, LoadError> {
    let mut layers = Vec::new();
    for key in keys::KEYS.iter() {
        let var = keys::env_var(key);
        let Some(text) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = env_value(cmd, key, &text);
        check_value(cmd, key, &value).map_err(|message| LoadError::Env {
            var: var.clone(),
            message,
        })?;
        layers.push(Layered {
            key,
            value,
            source: Source::Env { var },
        });
    }
    Ok(layers)
}

/// The profile: a flag, else the highest layer naming one, else the
/// workspace's files, else the default.
fn choose_profile(
    flag: Option<String>,
    layers: &[Layered],
    place: &Place,
    profiles: &Profiles,
) -> Result<(Profile, ProfileChoice), LoadError> {
    let named = flag.map(|p| (p, Source::Flag)).or_else(|| {
        layers
            .iter()
            .rev()
            .find(|l| l.key.name == "profile")
            .map(|l| (l.value.display(), l.source.clone()))
    });
    Ok(match named {
        Some((name, source)) => (profiles.get(&name)?.clone(), ProfileChoice::Named(source)),
        None => match place
            .detect_in
            .as_deref()
            .and_then(|d| profile::detect(d, profiles))
        {
            Some(d) => (profiles.get(&d.chosen)?.clone(), ProfileChoice::Detected(d)),
            None => (
                profiles.get(profile::DEFAULT)?.clone(),
                ProfileChoice::Fallback,
            ),
        },
    })
}

/// The settings a profile gives: its image, runner and report path.
fn profile_layers(profile: &Profile) -> Vec<Layered> {
    let from_profile = Source::Profile {
        name: profile.name.clone(),
    };
    [
        ("sandbox.image", Some(profile.image.clone())),
        ("run.runner", Some(profile.runner.clone())),
        ("sandbox.junit", profile.junit.clone()),
    ]
    .into_iter()
    .filter_map(|(name, v)| {
        Some(Layered {
            key: keys::by_name(name)?,
            value: Raw::Text(v?),
            source: from_profile.clone(),
        })
    })
    .collect()
}

/// Where `key`'s value came from: the flag typed, the highest layer, or
/// the default.
fn origin(
    key: &'static Key,
    leaf: &clap::ArgMatches,
    effective: &BTreeMap<&'static str, &Layered>,
    cmd: &clap::Command,
    (profile, choice): (&Profile, &ProfileChoice),
) -> Origin {
    if key.name == "profile" {
        return Origin {
            key: key.name,
            value: Some(profile.name.clone()),
            source: match choice {
                ProfileChoice::Named(s) => s.clone(),
                ProfileChoice::Detected(d) => Source::Detected {
                    evidence: d.evidence.clone(),
                },
                ProfileChoice::Fallback => Source::Default,
            },
        };
    }
    let given = leaf
        .try_get_raw(key.arg)
        .ok()
        .flatten()
        .filter(|_| leaf.value_source(key.arg) == Some(ValueSource::CommandLine));
    if let Some(raw) = given {
        let parts: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        return Origin {
            key: key.name,
            value: Some(parts.join(", ")),
            source: Source::Flag,
        };
    }
    match effective.get(key.arg) {
        Some(l) => Origin {
            key: key.name,
            value: Some(l.value.display()),
            source: l.source.clone(),
        },
        None => Origin {
            key: key.name,
            value: clap_default(cmd, key.arg),
            source: Source::Default,
        },
    }
}

/// Where a command looks for `autodev.toml`, and for the project's language.
#[derive(Debug, Default)]
struct Place {
    project_dirs: Vec<PathBuf>,
    detect_in: Option<PathBuf>,
}

fn place(cli: &Cli, cwd: &Path) -> Place {
    let (dirs, detect): (Vec<PathBuf>, Option<PathBuf>) = match &cli.command {
        // A seed is the user's project; the workspace is where it goes.
        Command::Run(a) => {
            let mut d = vec![a.workspace.clone()];
            d.extend(a.seed.clone());
            let detect = a.seed.clone().unwrap_or_else(|| a.workspace.clone());
            (d, Some(detect))
        }
        Command::Exec(a) => (vec![a.workspace.clone()], Some(a.workspace.clone())),
        Command::Mcp(a) => (vec![a.workspace.clone()], Some(a.workspace.clone())),
        Command::Env(EnvCommand::Build(a)) => {
            (vec![a.workspace.clone()], Some(a.workspace.clone()))
        }
        // As `run` would: the workspace, then the seed.
        Command::Config(ConfigCommand::Show {
            workspace, seed, ..
        }) => {
            let mut d = vec![workspace.clone()];
            d.extend(seed.clone());
            (d, Some(seed.clone().unwrap_or_else(|| workspace.clone())))
        }
        _ => (Vec::new(), None),
    };
    let abs = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
    let mut project_dirs: Vec<PathBuf> = dirs.into_iter().map(abs).collect();
    project_dirs.push(cwd.to_path_buf());
    Place {
        project_dirs,
        detect_in: detect.map(abs),
    }
}

fn flag_profile(cli: &Cli) -> Option<String> {
    cli.command.sandbox_args()?.profile.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        std::iter::once("autodev")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn origin<'a>(l: &'a Loaded, key: &str) -> &'a Origin {
        l.settings.origins.iter().find(|o| o.key == key).unwrap()
    }

    #[test]
    fn layers_stack_and_flags_win() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("go.mod"), "module x\n").unwrap();
        std::fs::write(
            d.path().join(PROJECT_FILE),
            "[sandbox]\nmemory = \"256m\"\nexclude = [\"data/\"]\n[run]\nmax_iters = 3\n",
        )
        .unwrap();
        let env = |k: &str| (k == "AUTODEV_MAX_ITERS").then(|| "4".to_string());
        let l = load(
            &argv(&[
                "exec",
                "-w",
                d.path().to_str().unwrap(),
                "--pids",
                "64",
                "--",
                "true",
            ]),
            &env,
            d.path(),
        )
        .unwrap();
        let Command::Exec(a) = &l.cli.command else {
            panic!("exec")
        };
        assert_eq!(l.settings.profile.name, "go");
        assert!(matches!(l.settings.choice, ProfileChoice::Detected(_)));
        assert_eq!(a.sandbox.image(), "autodev/go:latest");
        assert_eq!(a.sandbox.limits.0.memory, 256 << 20);
        assert_eq!(a.sandbox.limits.0.pids, 64);
        assert_eq!(a.sandbox.exclude, ["data/"]);
        assert_eq!(origin(&l, "sandbox.pids").source, Source::Flag);
        assert_eq!(origin(&l, "sandbox.cpus").source, Source::Default);
        assert_eq!(origin(&l, "sandbox.cpus").value.as_deref(), Some("1"));
        assert_eq!(
            origin(&l, "sandbox.image").source,
            Source::Profile { name: "go".into() }
        );
        assert_eq!(
            origin(&l, "sandbox.memory").source,
            Source::File {
                path: d.path().join(PROJECT_FILE),
                line: 2
            }
        );
        let iters = origin(&l, "run.max_iters");
        assert_eq!(iters.value.as_deref(), Some("4"));
        assert_eq!(
            iters.source,
            Source::Env {
                var: "AUTODEV_MAX_ITERS".into()
            }
        );
    }

    #[test]
    fn bad_values_name_their_file_line_or_variable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(PROJECT_FILE),
            "\n[sandbox]\nmemory = \"lots\"\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let e = load(&argv(&["exec", "--", "true"]), &none, d.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("autodev.toml:3: sandbox.memory: invalid value 'lots'"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        std::fs::write(d.path().join(PROJECT_FILE), "[sandbox]\nmemory = \"1g\"\n").unwrap();
        let e = load(&argv(&["exec", "--", "true"]), &none, d.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("looser than yours (512m, the default)"),
            "{e}"
        );
        std::fs::remove_file(d.path().join(PROJECT_FILE)).unwrap();
        let env = |k: &str| (k == "AUTODEV_TIMEOUT").then(|| "soon".to_string());
        let e = load(&argv(&["exec", "--", "true"]), &env, d.path()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment variable AUTODEV_TIMEOUT: sandbox.timeout"),
            "{e}"
        );
        let e = load(
            &argv(&["exec", "--profile", "cobol", "--", "true"]),
            &none,
            d.path(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown profile \"cobol\""), "{e}");
    }

    #[test]
    fn profiles_supply_runner_and_image_below_everything_else() {
        let d = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let l = load(
            &argv(&["run", "--task", "x", "--profile", "rust"]),
            &none,
            d.path(),
        )
        .unwrap();
        let Command::Run(a) = &l.cli.command else {
            panic!("run")
        };
        assert_eq!(a.runner.as_deref(), Some("cargo test --offline"));
        assert_eq!(a.sandbox.image(), "autodev/rust:latest");
        let l = load(
            &argv(&["run", "--task", "x", "--runner", "make test"]),
            &none,
            d.path(),
        )
        .unwrap();
        assert!(matches!(l.settings.choice, ProfileChoice::Fallback));
        let Command::Run(a) = &l.cli.command else {
            panic!("run")
        };
        assert_eq!(a.runner.as_deref(), Some("make test"));
        assert_eq!(a.sandbox.image(), autodev::profile::DEFAULT_IMAGE);
    }
}
