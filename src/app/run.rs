//! `autodev run`: every check that can fail happens before anything on
//! disk changes; then reset, seed, transcript, and the repair loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::UsageError;
use crate::cli::{exit, Provider, RunArgs};
use autodev::agent::{self, AgentConfig, AgentError};
use autodev::events::Observers;
use autodev::model::{AnyModel, ModelError, ModelSettings, ProviderKind, RetryPolicy};
use autodev::patch::ApplyOptions;
use autodev::profile::Profile;
use autodev::report::{Transcript, Ui, UiMode};
use autodev::sandbox::{RunSpec, Sandbox};
use autodev::workspace::{reset, WorkspaceError};

pub(super) async fn run_cmd(
    args: RunArgs,
    profile: &Profile,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    // 1. Everything that can be checked without touching the disk or the
    //    network: flags, task, model settings (the replay file is read here).
    let runner = args.runner.clone().unwrap_or_default();
    let spec = args
        .sandbox
        .run_spec(&args.workspace, runner.as_str(), &profile.exclude)?;
    let task = read_task(&args.task)?;
    let setup = autodev::env::Setup {
        profile: profile.name.clone(),
        settings: args.setup.settings().map_err(UsageError)?,
    };
    if runner.trim().is_empty() {
        return Err(UsageError(format!(
            "--runner is empty: give the test command, e.g. --runner \"{}\"",
            profile.runner
        ))
        .into());
    }
    if args.force_reset && !args.reset {
        return Err(UsageError("--force-reset needs --reset".into()).into());
    }
    if !args.no_zip {
        check_zip(&args.zip)?;
    }
    let model = build_model(&args)?;
    let ws = &args.workspace;
    let (seen, delete) = check_folders(&args)?;

    // 2. The sandbox: daemon, image and a trial create with these limits,
    //    before any model call or deletion.
    let sandbox = super::connect(&args.sandbox.engines)
        .await
        .map_err(AgentError::from)?;
    sandbox.preflight(&spec).await.map_err(AgentError::from)?;

    // 3. Only now change the disk: reset, create and mark, seed.
    lay_out(&args, &seen, delete)?;

    let mut transcript = if args.no_transcript {
        Transcript::disabled()
    } else {
        let path = args
            .transcript
            .clone()
            .unwrap_or_else(|| default_transcript(ws));
        Transcript::open(&path)
            .map_err(|e| UsageError(format!("cannot open transcript {}: {e}", path.display())))?
    };
    let mode = if args.json {
        UiMode::Json
    } else if args.quiet {
        UiMode::Quiet
    } else {
        UiMode::Human
    };
    let mut ui = Ui::new(mode);
    let mut cfg = agent_config(&args, profile, task, &runner, spec, setup);
    cfg.transcript = transcript.path().map(Path::to_path_buf);
    if let Some(p) = transcript.path() {
        ui.say(&format!("transcript: {}", p.display()));
    }
    let mut observers = Observers(vec![&mut ui, &mut transcript]);
    let result = agent::run(&model, &sandbox, &cfg, &mut observers, cancel).await;
    drop(observers);
    report(&args, &mut ui, result)
}

/// What is on disk where the run will write, checked before anything
/// changes: the workspace (and what `--reset` may delete of it), the seed,
/// the held-out tests, and a repository `--git` would commit in.
fn check_folders(args: &RunArgs) -> Result<(reset::Observed, bool)> {
    let ws = &args.workspace;
    let seen = reset::observe(ws).map_err(|source| WorkspaceError::Io {
        op: "reading",
        path: ws.clone(),
        source,
    })?;
    if seen.kind == reset::Kind::NotAFolder {
        return Err(WorkspaceError::NotADirectory(ws.clone()).into());
    }
    if let Some(seed) = &args.seed {
        if !seed.is_dir() {
            return Err(WorkspaceError::SourceMissing {
                what: "--seed",
                path: seed.clone(),
            }
            .into());
        }
        let seed_abs = seed.canonicalize().unwrap_or_else(|_| seed.clone());
        if args.reset && seed_abs.starts_with(&seen.abs) {
            return Err(UsageError(format!(
                "--seed {} is inside the workspace {}, which --reset would delete: keep the seed elsewhere",
                seed.display(),
                ws.display()
            ))
            .into());
        }
    }
    if let Some(h) = &args.holdout {
        let abs = h
            .canonicalize()
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| WorkspaceError::SourceMissing {
                what: "--holdout",
                path: h.clone(),
            })?;
        if abs.starts_with(&seen.abs)
            || args
                .seed
                .as_ref()
                .is_some_and(|s| s.canonicalize().is_ok_and(|s| abs.starts_with(s)))
        {
            return Err(UsageError(format!(
                "--holdout {} is inside the workspace or the seed, where the model would see it: keep held-out tests elsewhere",
                h.display()
            ))
            .into());
        }
    }
    if args.git && !args.reset && seen.kind == reset::Kind::Folder {
        autodev::workspace::git::check_clean(ws)?;
    }
    let delete = if args.reset {
        let home = std::env::var_os("HOME").and_then(|h| PathBuf::from(h).canonicalize().ok());
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|c| c.canonicalize().ok());
        reset::decide(&seen, args.force_reset, home.as_deref(), cwd.as_deref())
            .map_err(|e| UsageError(e.to_string()))?
    } else {
        false
    };
    Ok((seen, delete))
}

/// Reset, create and mark, seed: the run's only changes to the disk
/// before the loop.
fn lay_out(args: &RunArgs, seen: &reset::Observed, delete: bool) -> Result<()> {
    let ws = &args.workspace;
    if delete {
        std::fs::remove_dir_all(&seen.abs).map_err(|source| WorkspaceError::Io {
            op: "deleting",
            path: seen.abs.clone(),
            source,
        })?;
    }
    let fresh = delete || seen.kind == reset::Kind::Missing || seen.empty;
    std::fs::create_dir_all(ws).map_err(|source| WorkspaceError::Io {
        op: "creating",
        path: ws.clone(),
        source,
    })?;
    if fresh {
        reset::mark(ws).map_err(|source| WorkspaceError::Io {
            op: "marking",
            path: ws.clone(),
            source,
        })?;
    }
    if let Some(seed) = &args.seed {
        autodev::workspace::copy_tree(seed, ws, &autodev::workspace::CopyOptions::default())?;
    }
    Ok(())
}

/// The loop's settings, from the flags.
fn agent_config(
    args: &RunArgs,
    profile: &Profile,
    task: String,
    runner: &str,
    spec: RunSpec,
    setup: autodev::env::Setup,
) -> AgentConfig {
    AgentConfig {
        task,
        runner: runner.into(),
        conventions: profile.prompt.clone(),
        workspace: args.workspace.clone(),
        max_iters: args.max_iters,
        sandbox: spec,
        context_chars: args.max_context_chars,
        edit_format: args.edit_format,
        failure_chars: args.max_failure_chars,
        git: args.git,
        git_only_improving: args.git_only_improving,
        keep_best: args.keep == crate::cli::Keep::Best,
        zip: (!args.no_zip).then(|| args.zip.clone()),
        apply: ApplyOptions {
            max_file_bytes: args.max_file_size,
        },
        protection: autodev::agent::protect::Protection {
            allow_test_edits: args.allow_test_edits,
            globs: args.protect.clone(),
        },
        holdout: args
            .holdout
            .clone()
            .map(|dir| autodev::agent::holdout::Holdout {
                dir,
                final_only: args.holdout_final_only,
            }),
        transcript: None,
        setup: Some(setup),
    }
}

/// The summary line (and JSON), and the exit code.
fn report(
    args: &RunArgs,
    ui: &mut Ui,
    result: Result<autodev::agent::RunSummary, AgentError>,
) -> Result<ExitCode> {
    match result {
        Ok(summary) => {
            if args.json {
                autodev::outln!("{}", serde_json::to_string(&summary)?);
            }
            ui.summary(&format!(
                "autodev: {} after {} iteration(s) ({}), final verdict {}, {:.1}s, {} tokens",
                if summary.passed { "PASSED" } else { "FAILED" },
                summary.iterations,
                serde_json::to_value(summary.stop_reason)?
                    .as_str()
                    .unwrap_or_default(),
                summary.verdict,
                summary.elapsed_ms as f64 / 1000.0,
                summary.tokens.total()
            ));
            Ok(ExitCode::from(if summary.passed {
                exit::OK
            } else {
                exit::FAILED
            }))
        }
        Err(e) => {
            if args.json {
                autodev::outln!("{}", json!({"passed": false, "error": e.to_string()}));
            }
            Err(e.into())
        }
    }
}

/// The zip export's path is checked before the run, not after it: a
/// folder, or a file that is not a zip (someone's notes), is refused, so
/// nothing of the user's is overwritten and no run is wasted.
fn check_zip(zip: &Path) -> Result<(), UsageError> {
    let refuse = |why: &str| {
        Err(UsageError(format!(
            "--zip {}: {why}; give another path, or pass --no-zip",
            zip.display()
        )))
    };
    match std::fs::symlink_metadata(zip) {
        Ok(m) if m.is_dir() => return refuse("it is a folder"),
        Ok(m) if !m.is_file() => return refuse("it exists and is not a regular file"),
        Ok(m) if m.len() > 0 => {
            let mut head = [0u8; 4];
            let is_zip = std::fs::File::open(zip)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok_and(|()| head == *b"PK\x03\x04" || head == *b"PK\x05\x06");
            if !is_zip {
                return refuse("it exists and is not a zip file, which autodev will not overwrite");
            }
        }
        _ => {}
    }
    let parent = zip.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return refuse("its folder does not exist");
    }
    Ok(())
}

fn read_task(task: &str) -> Result<String, UsageError> {
    let text = match task.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read task file {path}: {e}")))?,
        None => task.to_string(),
    };
    if text.trim().is_empty() {
        return Err(UsageError(
            "the task is empty: pass --task TEXT or --task @FILE".into(),
        ));
    }
    Ok(text)
}

fn build_model(args: &RunArgs) -> Result<AnyModel, ModelError> {
    ModelSettings {
        provider: args.provider.map(|p| match p {
            Provider::Openai => ProviderKind::Openai,
            Provider::Ollama => ProviderKind::Ollama,
            Provider::Replay => ProviderKind::Replay,
        }),
        name: args.model.clone(),
        base_url: args.base_url.clone(),
        replay: args.replay.clone(),
        replies: None,
        policy: RetryPolicy {
            max_attempts: args.model_attempts,
            request_timeout: args.model_timeout,
            max_reply_bytes: args.max_reply_size,
            ..RetryPolicy::default()
        },
    }
    .build()
}

/// `.autodev/runs/NAME-TIMESTAMP.jsonl` beside the workspace, so the
/// transcript survives `--reset` and never lands in the copied workspace.
fn default_transcript(ws: &Path) -> PathBuf {
    let abs = std::path::absolute(ws).unwrap_or_else(|_| ws.to_path_buf());
    let parent = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workspace".into());
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    parent
        .join(".autodev")
        .join("runs")
        .join(format!("{name}-{stamp}-{}.jsonl", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_path_that_would_lose_something_is_refused_up_front() {
        let d = tempfile::tempdir().unwrap();
        let notes = d.path().join("notes.txt");
        std::fs::write(&notes, "my precious notes").unwrap();
        let old_zip = d.path().join("old.zip");
        std::fs::write(&old_zip, b"PK\x03\x04rest").unwrap();
        assert!(check_zip(&notes).unwrap_err().0.contains("not a zip"));
        assert!(check_zip(d.path()).unwrap_err().0.contains("folder"));
        assert!(check_zip(&d.path().join("no/such/x.zip"))
            .unwrap_err()
            .0
            .contains("does not exist"));
        check_zip(&old_zip).unwrap();
        check_zip(&d.path().join("new.zip")).unwrap();
    }

    #[test]
    fn task_text_comes_from_the_flag_or_a_file() {
        assert_eq!(read_task("do it").unwrap(), "do it");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t.md");
        std::fs::write(&f, "from file").unwrap();
        assert_eq!(
            read_task(&format!("@{}", f.display())).unwrap(),
            "from file"
        );
        assert!(read_task("@/nonexistent/task")
            .unwrap_err()
            .to_string()
            .contains("cannot read task file"));
        assert!(read_task("  ").is_err());
    }
}
