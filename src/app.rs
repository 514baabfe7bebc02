//! Top-level wiring: builds the real parts for each subcommand, runs them and
//! maps the result to an exit code. The only place `anyhow` is used.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::agent::{self, AgentConfig, AgentError};
use crate::batch::{self, BatchConfig, TaskResult, TaskVerdict};
use crate::cli::{exit, BatchArgs, Cli, Command, ExecArgs, ImagesCommand, Provider, RunArgs};
use crate::config::ConfigError;
use crate::images::{self, ImageError};
use crate::model::{AnyModel, ModelError, ModelSettings, ProviderKind, RetryPolicy};
use crate::patch::ApplyOptions;
use crate::report::{Transcript, Ui, UiMode};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::{NullSink, Outcome, OutputSink, RunSpec, Sandbox, SandboxError, StdioSink};
use crate::workspace::WorkspaceError;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let cancel = CancellationToken::new();
    let kill = CancellationToken::new();
    let batch = matches!(cli.command, Command::Batch(_));
    spawn_signal_handler(cancel.clone(), batch.then(|| kill.clone()));
    match cli.command {
        Command::Batch(args) => batch_cmd(args, &cancel, &kill).await,
        Command::Run(args) => run_cmd(*args, &cancel).await,
        Command::Exec(args) => exec(args, &cancel).await,
        Command::Images(cmd) => images_cmd(cmd).await,
        Command::Clean { label } => {
            let sandbox = DockerSandbox::connect().await?;
            let n = sandbox.clean(&label).await?;
            eprintln!("autodev: removed {n} leftover container(s)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Maps an error to the exit code README documents.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<AgentError>() {
        return match e {
            AgentError::Model(_) => exit::MODEL,
            AgentError::Sandbox(SandboxError::Workspace(_)) | AgentError::Workspace(_) => {
                exit::USAGE
            }
            AgentError::Sandbox(_) => exit::SANDBOX,
            AgentError::Interrupted => exit::INTERRUPTED,
        };
    }
    if err.downcast_ref::<ModelError>().is_some() {
        return exit::MODEL;
    }
    if err.downcast_ref::<UsageError>().is_some() {
        return exit::USAGE;
    }
    if let Some(e) = err.downcast_ref::<SandboxError>() {
        return match e {
            SandboxError::Interrupted => exit::INTERRUPTED,
            SandboxError::Workspace(_) => exit::USAGE,
            _ => exit::SANDBOX,
        };
    }
    if err.downcast_ref::<ConfigError>().is_some() || err.downcast_ref::<WorkspaceError>().is_some()
    {
        return exit::USAGE;
    }
    if let Some(e) = err.downcast_ref::<ImageError>() {
        return match e {
            ImageError::Build { .. } => exit::SANDBOX,
            _ => exit::USAGE,
        };
    }
    exit::FAILED
}

/// First Ctrl-C or SIGTERM cancels (a batch stops starting tasks); for a
/// batch the second kills running tasks, cleanly. The signal after that exits
/// at once; containers are still reachable by `autodev clean` through their label.
fn spawn_signal_handler(cancel: CancellationToken, kill: Option<CancellationToken>) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut next = async || {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        next().await;
        if kill.is_some() {
            eprintln!("\nautodev: stopping: no new tasks; running ones finish (Ctrl-C again to kill them)");
        } else {
            eprintln!("\nautodev: interrupted, cleaning up (Ctrl-C again to exit at once)");
        }
        cancel.cancel();
        if let Some(kill) = kill {
            next().await;
            eprintln!("\nautodev: killing running tasks and removing their containers");
            kill.cancel();
        }
        next().await;
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
}

async fn batch_cmd(
    args: BatchArgs,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Result<ExitCode> {
    let limits = args.sandbox.limits()?;
    let mut defaults = RunSpec::new("", "", &args.sandbox.image);
    defaults.limits = limits;
    defaults.env = args.sandbox.env.clone();
    defaults.copy = args.sandbox.copy_options();
    defaults.labels = args.sandbox.label.clone();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if jobs == 0 {
        return Err(UsageError("--jobs must be at least 1".into()).into());
    }
    let cfg = BatchConfig {
        tasks: args.tasks.clone(),
        out: args.out.clone(),
        jobs,
        retries: args.retries,
        prefetch: args.prefetch.unwrap_or(1),
        resume: args.resume,
        defaults,
        scratch: args.scratch.clone(),
    };
    if !cfg.tasks.is_file() {
        return Err(UsageError(format!("tasks file {} not found", cfg.tasks.display())).into());
    }
    let sandbox = DockerSandbox::connect().await?;
    let mut progress = BatchProgress::new();
    let summary = batch::run(sandbox, &cfg, &mut progress, stop, kill)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!("{}", batch_report(&summary, &cfg.out));
    }
    Ok(ExitCode::from(if summary.interrupted {
        exit::INTERRUPTED
    } else {
        exit::OK
    }))
}

/// Human summary of a batch.
fn batch_report(s: &batch::Summary, out: &Path) -> String {
    let counts: Vec<String> = s
        .verdicts
        .iter()
        .map(|(v, n)| format!("{} {n}", verdict_name(*v)))
        .collect();
    let mut text = format!(
        "autodev batch: {} results in {} ({}); ran {} this time, skipped {} already done",
        s.total,
        out.display(),
        counts.join(", "),
        s.ran,
        s.skipped
    );
    if let Some(r) = s.pass_rate {
        text.push_str(&format!(
            "\n  pass rate {:.1}% (sandbox, model and task errors left out)",
            r * 100.0
        ));
    }
    for (k, v) in &s.pass_at_k {
        text.push_str(&format!("\n  pass@{k} {v:.4}"));
    }
    text.push_str(&format!(
        "\n  wall time {:.1}s, {:.2} tasks/s{}",
        s.wall_seconds,
        s.tasks_per_second,
        if s.interrupted {
            " (interrupted: run again with --resume)"
        } else {
            ""
        }
    ));
    text
}

fn verdict_name(v: TaskVerdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A progress bar on a terminal, a line every few seconds elsewhere.
struct BatchProgress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    last_line: std::time::Instant,
    started: std::time::Instant,
}

impl BatchProgress {
    fn new() -> Self {
        BatchProgress {
            bar: None,
            total: 0,
            done: 0,
            last_line: std::time::Instant::now(),
            started: std::time::Instant::now(),
        }
    }
}

impl batch::Progress for BatchProgress {
    fn start(&mut self, to_run: usize) {
        self.total = to_run;
        self.started = std::time::Instant::now();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new(to_run as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed} ETA {eta}]",
            ) {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        } else {
            eprintln!("autodev batch: {to_run} task(s) to run");
        }
    }

    fn task_done(
        &mut self,
        _r: &TaskResult,
        counts: &std::collections::BTreeMap<TaskVerdict, usize>,
    ) {
        self.done += 1;
        let msg: Vec<String> = counts
            .iter()
            .map(|(v, n)| format!("{} {n}", verdict_name(*v)))
            .collect();
        if let Some(bar) = &self.bar {
            bar.set_message(msg.join(", "));
            bar.inc(1);
        } else if self.last_line.elapsed() >= std::time::Duration::from_secs(5)
            || self.done == self.total
        {
            self.last_line = std::time::Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "autodev batch: {}/{} done ({}), {:.2} tasks/s",
                self.done,
                self.total,
                msg.join(", "),
                rate
            );
        }
    }

    fn draining(&mut self, running: usize) {
        let line =
            format!("stopping: waiting for {running} running task(s); Ctrl-C again to kill them");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("autodev batch: {line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

async fn exec(args: ExecArgs, cancel: &CancellationToken) -> Result<ExitCode> {
    let limits = args.sandbox.limits()?;
    let mut spec = RunSpec::new(
        &args.workspace,
        crate::sandbox::Command::from_args(&args.command),
        &args.sandbox.image,
    );
    spec.limits = limits;
    spec.env = args.sandbox.env.clone();
    spec.copy = args.sandbox.copy_options();
    spec.labels = args.sandbox.label.clone();
    // A typo in the path is a usage error whether or not a daemon answers;
    // the full walk (excludes, size cap) happens once, in the sandbox.
    if !spec.workspace.is_dir() {
        return Err(WorkspaceError::NotADirectory(spec.workspace.clone()).into());
    }

    let sandbox = DockerSandbox::connect().await;
    let mut sink: Box<dyn OutputSink> = if args.json {
        Box::new(NullSink)
    } else {
        Box::new(StdioSink)
    };
    let result = match sandbox {
        Ok(s) => s.run(&spec, sink.as_mut(), cancel).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(outcome) => {
            if args.json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                eprintln!("{}", crate::report::outcome_line(&outcome));
            }
            Ok(ExitCode::from(outcome.verdict.exit_code()))
        }
        Err(SandboxError::Interrupted) => Err(SandboxError::Interrupted.into()),
        Err(e) if args.json && !matches!(e, SandboxError::Workspace(_)) => {
            println!("{}", serde_json::to_string(&Outcome::from_error(&e))?);
            eprintln!("autodev: {e}");
            Ok(ExitCode::from(exit::SANDBOX))
        }
        Err(e) => Err(e.into()),
    }
}

async fn images_cmd(cmd: ImagesCommand) -> Result<ExitCode> {
    match cmd {
        ImagesCommand::Build {
            name,
            base,
            dir,
            quiet,
        } => {
            let dir = dir.unwrap_or_else(images::default_dir);
            let names = match name {
                Some(n) => vec![n],
                None => images::available(&dir)?,
            };
            let sandbox = DockerSandbox::connect().await?;
            for name in names {
                eprintln!(
                    "autodev: building {} from {}",
                    images::tag_for(&name),
                    dir.join(&name).display()
                );
                let tag = images::build(&sandbox, &dir, &name, base.as_deref(), |line| {
                    if !quiet && !line.is_empty() {
                        eprintln!("  {line}");
                    }
                })
                .await?;
                eprintln!("autodev: built {tag}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::List { dir } => {
            let dir = dir.unwrap_or_else(images::default_dir);
            let sandbox = DockerSandbox::connect().await?;
            for name in images::available(&dir)? {
                let tag = images::tag_for(&name);
                let state = if sandbox.has_image(&tag).await? {
                    "built"
                } else {
                    "not built"
                };
                println!("{name}\t{tag}\t{state}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A problem with the command line that clap cannot see.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

async fn run_cmd(args: RunArgs, cancel: &CancellationToken) -> Result<ExitCode> {
    let limits = args.sandbox.limits()?;
    let task = read_task(&args.task)?;
    if args.runner.trim().is_empty() {
        return Err(UsageError(
            "--runner is empty: give the test command, e.g. --runner \"python3 -m pytest -q\""
                .into(),
        )
        .into());
    }
    let model = build_model(&args)?;
    if args.reset {
        reset_workspace(&args.workspace)?;
    }
    if let Some(seed) = &args.seed {
        crate::workspace::copy_tree(
            seed,
            &args.workspace,
            &crate::workspace::CopyOptions::default(),
        )?;
    }

    let mut transcript = if args.no_transcript {
        Transcript::disabled()
    } else {
        let path = args
            .transcript
            .clone()
            .unwrap_or_else(|| default_transcript(&args.workspace));
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
    let mut spec = RunSpec::new(&args.workspace, args.runner.as_str(), &args.sandbox.image);
    spec.limits = limits;
    spec.env = args.sandbox.env.clone();
    spec.copy = args.sandbox.copy_options();
    spec.labels = args.sandbox.label.clone();
    let cfg = AgentConfig {
        task,
        runner: args.runner.as_str().into(),
        workspace: args.workspace.clone(),
        max_iters: args.max_iters,
        sandbox: spec,
        context_chars: args.max_context_chars,
        failure_chars: args.max_failure_chars,
        git: args.git,
        zip: (!args.no_zip).then(|| args.zip.clone()),
        apply: ApplyOptions {
            max_file_bytes: args.max_file_size,
        },
    };
    if let Some(p) = transcript.path() {
        ui.say(&format!("transcript: {}", p.display()));
    }
    let sandbox = match DockerSandbox::connect().await {
        Ok(s) => s,
        Err(e) => {
            transcript.event(
                "error",
                json!({"kind": "sandbox_error", "message": e.to_string()}),
            );
            return Err(AgentError::from(e).into());
        }
    };
    // Check the image before paying for a model call.
    if !sandbox.has_image(&cfg.sandbox.image).await? {
        let e = SandboxError::image_missing(&cfg.sandbox.image);
        transcript.event(
            "error",
            json!({"kind": "sandbox_error", "message": e.to_string()}),
        );
        return Err(AgentError::from(e).into());
    }
    let result = agent::run(&model, &sandbox, &cfg, &mut ui, &mut transcript, cancel).await;
    match result {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
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
                println!("{}", json!({"passed": false, "error": e.to_string()}));
            }
            Err(e.into())
        }
    }
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
            ..RetryPolicy::default()
        },
    }
    .build()
}

/// Refuses to delete anything that is obviously not a scratch folder.
fn reset_workspace(ws: &Path) -> Result<(), UsageError> {
    if !ws.exists() {
        return Ok(());
    }
    let abs = ws
        .canonicalize()
        .map_err(|e| UsageError(format!("cannot resolve workspace {}: {e}", ws.display())))?;
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| c.canonicalize().ok());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if abs.parent().is_none()
        || cwd.is_some_and(|c| c.starts_with(&abs))
        || home.is_some_and(|h| h == abs)
    {
        return Err(UsageError(format!(
            "refusing to --reset {}: it is /, your home or holds the current folder",
            abs.display()
        )));
    }
    std::fs::remove_dir_all(&abs)
        .map_err(|e| UsageError(format!("cannot delete workspace {}: {e}", abs.display())))
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
    fn reset_refuses_root_home_and_the_current_folder() {
        assert!(reset_workspace(Path::new("/")).is_err());
        let cwd = std::env::current_dir().unwrap();
        assert!(reset_workspace(&cwd).is_err());
        if let Some(home) = std::env::var_os("HOME") {
            assert!(reset_workspace(Path::new(&home)).is_err());
        }
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        reset_workspace(&ws).unwrap();
        assert!(!ws.exists());
        reset_workspace(&ws).unwrap();
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

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let code = |e: anyhow::Error| exit_code_for(&e);
        assert_eq!(
            code(AgentError::Model(ModelError::MissingKey).into()),
            exit::MODEL
        );
        assert_eq!(code(AgentError::Interrupted.into()), exit::INTERRUPTED);
        assert_eq!(
            code(AgentError::Sandbox(SandboxError::CopyIn("x".into())).into()),
            exit::SANDBOX
        );
        assert_eq!(
            code(SandboxError::DaemonUnavailable { detail: "x".into() }.into()),
            exit::SANDBOX
        );
        assert_eq!(code(UsageError("x".into()).into()), exit::USAGE);
        assert_eq!(
            code(ConfigError::BadNetwork("x".into()).into()),
            exit::USAGE
        );
    }
}
