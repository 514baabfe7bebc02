//! Top-level wiring: builds the real parts for each subcommand, runs them and
//! maps the result to an exit code. The only place `anyhow` is used.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::{exit, Cli, Command, ExecArgs, ImagesCommand};
use crate::config::ConfigError;
use crate::images::{self, ImageError};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::{NullSink, Outcome, OutputSink, RunSpec, Sandbox, SandboxError, StdioSink};
use crate::workspace::WorkspaceError;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    match cli.command {
        Command::Exec(args) => exec(args, &cancel).await,
        Command::Images(cmd) => images_cmd(cmd).await,
        Command::Clean => {
            let sandbox = DockerSandbox::connect().await?;
            let n = sandbox.clean().await?;
            eprintln!("autodev: removed {n} leftover container(s)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Maps an error to the exit code README documents.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
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

/// First Ctrl-C or SIGTERM cancels; the work in flight cleans up and returns.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\nautodev: interrupted, cleaning up (press Ctrl-C again to force)");
        cancel.cancel();
        // A second signal means the user wants out now; containers are still
        // reachable by `autodev clean` through their label.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
}

async fn exec(args: ExecArgs, cancel: &CancellationToken) -> Result<ExitCode> {
    let limits = args.sandbox.limits()?;
    let mut spec = RunSpec::new(&args.workspace, args.command.join(" "), &args.sandbox.image);
    spec.limits = limits;
    spec.env = args.sandbox.env.clone();
    spec.copy = args.sandbox.copy_options();
    spec.labels = args.sandbox.label.clone();
    // Check the workspace before touching Docker: a typo should not cost a container.
    crate::workspace::manifest(&spec.workspace, &spec.copy, spec.limits.max_copy_bytes)?;

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
                eprintln!("{}", summary_line(&outcome));
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

/// One line for the terminal after a run.
pub fn summary_line(o: &Outcome) -> String {
    let d = &o.durations;
    let mut line = format!(
        "autodev: {} (exit {}) in {:.2}s [create {} ms, copy-in {} ms, run {} ms, remove {} ms]",
        o.verdict,
        o.exit_code
            .map_or_else(|| "-".to_string(), |c| c.to_string()),
        d.total_ms as f64 / 1000.0,
        d.create_ms,
        d.copy_in_ms,
        d.run_ms,
        d.remove_ms
    );
    for (name, c) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if c.dropped_bytes > 0 {
            line.push_str(&format!(
                "; {name} truncated, {} of {} bytes dropped",
                c.dropped_bytes, c.total_bytes
            ));
        }
    }
    line
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
