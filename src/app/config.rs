//! `autodev config show|init`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::UsageError;
use crate::cli::{ConfigCommand, ProfileChoice, Settings};
use autodev::config::file::{self, PROJECT_FILE};
use autodev::config::keys::{self, Project};

/// Secrets autodev reads from the environment only; `show` says whether each is set.
const SECRETS: &[&str] = &["OPENAI_API_KEY"];

pub(super) fn config_cmd(cmd: ConfigCommand, settings: &Settings) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Show { json, .. } => show(settings, json),
        ConfigCommand::Init { project, force } => init(project, force),
    }
}

fn profile_line(settings: &Settings) -> String {
    let p = &settings.profile.name;
    match &settings.choice {
        ProfileChoice::Named(source) => format!("{p} (from {source})"),
        ProfileChoice::Detected(d) => format!("{p} (detected: {})", d.evidence),
        ProfileChoice::Fallback => format!("{p} (default: no language detected)"),
    }
}

/// The settings as a run would see them: where a setting is at its
/// default, a variable of another tool's (`DOCKER_HOST`, ...) that the run
/// reads in its place is shown, with its name as the source.
fn effective(settings: &Settings) -> Vec<crate::cli::Origin> {
    let mut origins = settings.origins.clone();
    for o in origins
        .iter_mut()
        .filter(|o| matches!(o.source, crate::cli::Source::Default) && o.value.is_none())
    {
        let Some((_, var, stands)) = keys::FOREIGN_ENV.iter().find(|(k, _, _)| *k == o.key) else {
            continue;
        };
        let Some(text) = std::env::var(var).ok().filter(|v| !v.is_empty()) else {
            continue;
        };
        if *var == "USE_OLLAMA" && !autodev::model::truthy(&text) {
            continue;
        }
        o.value = Some(stands.map_or(text, str::to_string));
        o.source = crate::cli::Source::Env {
            var: var.to_string(),
        };
    }
    origins
}

fn show(settings: &Settings, as_json: bool) -> Result<ExitCode> {
    let origins = effective(settings);
    let secrets: Vec<(&str, bool)> = SECRETS
        .iter()
        .map(|s| (*s, std::env::var_os(s).is_some_and(|v| !v.is_empty())))
        .collect();
    let user = file::user_file(&|k| std::env::var(k).ok());
    if as_json {
        let out = json!({
            "profile": {
                "name": settings.profile.name,
                "chosen": profile_line(settings),
                "settings": settings.profile,
            },
            "user_file": user,
            "files": settings.files,
            "settings": origins,
            "profiles": settings.profiles.names(),
            "secrets": secrets.iter().map(|(k, set)| json!({"name": k, "set": set})).collect::<Vec<_>>(),
        });
        autodev::outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    autodev::outln!("profile: {}", profile_line(settings));
    autodev::outln!("profiles: {}", settings.profiles.names().join(", "));
    match &user {
        Some(u) if settings.files.contains(u) => autodev::outln!("user file: {}", u.display()),
        Some(u) => autodev::outln!("user file: {} (none)", u.display()),
        None => autodev::outln!("user file: none (no HOME or XDG_CONFIG_HOME)"),
    }
    let project: Vec<String> = settings
        .files
        .iter()
        .filter(|f| Some(*f) != user.as_ref())
        .map(|f| f.display().to_string())
        .collect();
    autodev::outln!(
        "project file: {}",
        if project.is_empty() {
            format!("none ({PROJECT_FILE} in the workspace or here)")
        } else {
            project.join(", ")
        }
    );
    for (name, set) in &secrets {
        autodev::outln!(
            "{name}: {} (read from the environment only; never printed)",
            if *set { "set" } else { "not set" }
        );
    }
    autodev::outln!("");
    let width = keys::KEYS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    let vwidth = 28;
    for o in &origins {
        let value = o.value.as_deref().unwrap_or("(unset)");
        autodev::outln!("{:width$}  {value:vwidth$}  {}", o.key, o.source);
    }
    Ok(ExitCode::SUCCESS)
}

/// A commented starting file: every setting (a project file: those it may
/// set) with its flag's help and its default.
pub(crate) fn starting_file(project: bool) -> String {
    let cmd = crate::cli::built_command();
    let mut out = String::from(if project {
        "# autodev project settings (autodev.toml). A project file may choose the image, the runner\n\
         # and the copy rules, and tighten limits; engines, the model's address, the runtime, the\n\
         # network and host variables are the user's to choose (see `autodev config show`).\n"
    } else {
        "# autodev user settings. Later layers win: defaults, the language profile, this file,\n\
         # a project's autodev.toml, AUTODEV_<FLAG> environment variables, command-line flags.\n\
         # Uncomment a line to change it; `autodev config show` prints what is in effect.\n"
    });
    let mut section = "";
    for key in keys::KEYS.iter() {
        if project && matches!(key.project, Project::Forbidden(_)) {
            continue;
        }
        let (sec, name) = key.name.split_once('.').unwrap_or(("", key.name));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        let arg = crate::cli::find_arg(&cmd, key.arg).map(|(_, a)| a);
        if let Some(help) = arg.and_then(|a| a.get_help()) {
            out.push_str(&format!("# {}\n", help.to_string().replace('\n', " ")));
        }
        let defaults: Vec<String> = arg
            .map(|a| {
                a.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let list = arg.is_some_and(|a| matches!(a.get_action(), clap::ArgAction::Append));
        let value = if list {
            format!(
                "[{}]",
                defaults
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            match defaults.first() {
                None => {
                    // Two marks: taking one off must still leave valid TOML.
                    out.push_str(&format!("## {name}: unset by default\n"));
                    continue;
                }
                Some(d) if d == "true" || d == "false" || d.parse::<f64>().is_ok() => d.clone(),
                Some(d) => format!("{d:?}"),
            }
        };
        out.push_str(&format!("# {name} = {value}\n"));
    }
    out.push_str(
        "\n# A profile per language: built in are python, node, go, rust and java; a table here\n\
         # changes some of a built-in one's fields, or defines a new one (image and runner needed).\n\
         # [profiles.go]\n# image = \"autodev/go:latest\"\n# runner = \"go test ./...\"\n\
         # exclude = [\"bin/\"]\n# markers = [\"go.mod\"]\n# extensions = [\"go\"]\n\
         # prompt = \"Go 1.19 ...\"\n",
    );
    out
}

fn init(project: bool, force: bool) -> Result<ExitCode> {
    let path = if project {
        PathBuf::from(PROJECT_FILE)
    } else {
        file::user_file(&|k| std::env::var(k).ok()).ok_or_else(|| {
            UsageError("no HOME or XDG_CONFIG_HOME: cannot tell where the user file goes".into())
        })?
    };
    if path.exists() && !force {
        return Err(UsageError(format!(
            "{} already exists: edit it, or pass --force to replace it",
            path.display()
        ))
        .into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, starting_file(project))
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    autodev::errln!("autodev: wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodev::config::file::{FileLayer, Scope};

    /// Every commented setting of the starting files, uncommented, is a
    /// valid file of its kind.
    #[test]
    fn starting_files_uncommented_are_valid() {
        for (project, scope) in [(false, Scope::User), (true, Scope::Project)] {
            let text: String = starting_file(project)
                .lines()
                .map(|l| match l.strip_prefix("# ") {
                    Some(rest) if rest.contains(" = ") || rest.starts_with("[profiles.") => rest,
                    _ if l.starts_with('[') => l,
                    _ => "",
                })
                .filter(|l| !l.is_empty())
                .map(|l| format!("{l}\n"))
                .collect();
            let layer = FileLayer::parse(std::path::Path::new("init.toml"), &text, scope)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(layer.entries.len() > 20, "{text}");
            assert_eq!(layer.profiles[0].0, "go");
            assert!(text.contains("memory = \"512m\""), "{text}");
        }
        assert!(!starting_file(true).contains("base_url"));
        assert!(starting_file(false).contains("\n## base_url: unset by default"));
    }
}
