//! Top-level wiring: builds the real parts for each subcommand, runs them and
//! maps the result to an exit code. The only place `anyhow` is used.
//!
//! One file per subcommand: `run.rs`, `exec.rs`, `batch.rs`, `pool.rs`, `images.rs`, `kube.rs`,
//! `doctor.rs`, `config.rs`.

mod batch;
mod config;
mod doctor;
mod env;
mod exec;
mod images;
mod kube;
mod mcp;
mod pool;
mod run;
mod serve;
mod setup;
mod swebench;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::{exit, Command, Loaded, ProfileChoice};
use crate::cli::{Backend, EngineArgs};
use autodev::config::ConfigError;
use autodev::error::ErrorClass;
use autodev::sandbox::docker::engine::{self, TlsFlags};
use autodev::sandbox::docker::fleet::DockerFleet;
use autodev::sandbox::kube::{KubeSandbox, KubeSettings};
use autodev::sandbox::{AnySandbox, Sandbox, SandboxError};

/// Runs the command line, with every settings layer applied.
pub async fn run(loaded: Loaded) -> Result<ExitCode> {
    let Loaded { cli, settings } = loaded;
    let profile = &settings.profile;
    let cancel = CancellationToken::new();
    let kill = CancellationToken::new();
    let batch = matches!(cli.command, Command::Batch(_) | Command::Serve(_));
    // Said once, on stderr, unless the user asked for the summary alone.
    let quiet = matches!(&cli.command, Command::Run(a) if a.quiet);
    if let (ProfileChoice::Detected(d), Command::Run(_) | Command::Exec(_), false) =
        (&settings.choice, &cli.command, quiet)
    {
        autodev::errln!("autodev: {}", d.describe());
    }
    let engines = cli.command.engines();
    let leaving = spawn_signal_handler(cancel.clone(), batch.then(|| kill.clone()), engines);
    let result = match cli.command {
        Command::Config(cmd) => config::config_cmd(cmd, &settings),
        Command::Batch(args) => {
            batch::batch_cmd(args, profile, &settings.profiles, &cancel, &kill).await
        }
        Command::Run(args) => run::run_cmd(*args, profile, &cancel).await,
        Command::Exec(args) => exec::exec_cmd(args, profile, &cancel).await,
        Command::Pool(args) => pool::pool_cmd(args, &cancel)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::serve_cmd(*args, profile, &cancel, &kill).await,
        Command::Mcp(args) => mcp::mcp_cmd(*args, profile, &cancel).await,
        Command::Doctor(args) => doctor::doctor_cmd(args, &cancel).await,
        Command::Images(cmd) => images::images_cmd(cmd).await,
        Command::Env(cmd) => env::env_cmd(cmd, profile, &cancel).await,
        Command::Kube(cmd) => kube::kube_cmd(cmd, &cancel).await,
        Command::Clean {
            label,
            scratch,
            engines,
        } => {
            let mut dirs = vec![std::env::temp_dir()];
            dirs.extend(scratch);
            let folders: usize = dirs.iter().map(|d| autodev::batch::clean_scratch(d)).sum();
            let sandbox = connect(&engines).await?;
            let n = sandbox.clean(&label).await?;
            autodev::errln!(
                "autodev: removed {n} leftover container(s) and {folders} scratch folder(s) of dead processes"
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    if leaving.load(Ordering::SeqCst) {
        // The last signal's clean-up is under way, and it ends the process
        // (130). What the command returned meanwhile is that clean-up's
        // doing (a container removed under a run that was starting it),
        // and returning it would exit before the clean-up is done.
        std::future::pending::<()>().await;
    }
    result.map_err(|e| from_file(e, &settings.origins))
}

/// A value that parsed but cannot be used names the flag it stands for;
/// when it came from a file, the file and line are what the user must
/// change, so they lead the message.
fn from_file(err: anyhow::Error, origins: &[crate::cli::Origin]) -> anyhow::Error {
    let Some(ConfigError::OutOfRange { what, .. }) = err.downcast_ref::<ConfigError>() else {
        return err;
    };
    let arg = what.trim_start_matches("--").replace('-', "_");
    let origin = origins.iter().find(|o| {
        autodev::config::keys::by_name(o.key).is_some_and(|k| k.arg == arg)
            && matches!(o.source, crate::cli::Source::File { .. })
    });
    match origin {
        Some(o) => {
            let value = o.value.clone().unwrap_or_default();
            let (key, source) = (o.key, o.source.to_string());
            err.context(format!("{source}: {key} = {value}"))
        }
        None => err,
    }
}

/// Maps an error to its exit code: by the class the error carries
/// (`autodev::error`); the front end's own usage errors are usage errors.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| match e.downcast_ref::<UsageError>() {
            Some(_) => Some(ErrorClass::Usage),
            None => autodev::classify::class_of(e),
        })
        .map_or(exit::FAILED, ErrorClass::exit_code)
}

/// Connects to the backend the flags name: Docker engines (the flags, or
/// `DOCKER_HOST`), or the cluster `KUBECONFIG` names.
pub(crate) async fn connect(args: &EngineArgs) -> Result<AnySandbox, SandboxError> {
    if args.backend == Backend::Kubernetes {
        if !args.engine.is_empty() {
            return Err(SandboxError::Settings(
                "--engine names Docker engines; with --backend kubernetes the cluster comes from KUBECONFIG".into(),
            ));
        }
        let settings = KubeSettings {
            namespace: args.namespace.clone(),
            pull: args.image_pull_policy.unwrap_or_default(),
            registry: args.registry.clone(),
        };
        return KubeSandbox::connect(&settings, true)
            .await
            .map(|k| AnySandbox::Kube(Box::new(k)));
    }
    if args.namespace.is_some() || args.image_pull_policy.is_some() || args.registry.is_some() {
        return Err(SandboxError::Settings(
            "--namespace, --image-pull-policy and --registry are for --backend kubernetes".into(),
        ));
    }
    let tls = tls_flags(args);
    let specs = engine::engines(&args.engine, &tls, |k| std::env::var(k).ok())?;
    Ok(AnySandbox::Docker(
        DockerFleet::connect(&specs)
            .await?
            .with_warm(usize::from(args.warm)),
    ))
}

fn tls_flags(args: &EngineArgs) -> TlsFlags {
    TlsFlags {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    }
}

/// The error and its causes on one line, each cause once: a message that
/// already quotes its cause (`X: Y`) is not followed by `: Y` again.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// First Ctrl-C, SIGTERM or SIGHUP cancels (a batch stops starting tasks, the
/// service drains); for a batch or the service the second kills running
/// tasks, cleanly. The signal after that exits
/// at once; containers are still reachable by `autodev clean` through their label.
///
/// Returns the flag raised when that last clean-up begins: from then on the
/// handler, not the command, ends the process.
fn spawn_signal_handler(
    cancel: CancellationToken,
    kill: Option<CancellationToken>,
    engines: EngineArgs,
) -> Arc<AtomicBool> {
    let leaving = Arc::new(AtomicBool::new(false));
    let raise = leaving.clone();
    use tokio::signal::unix::{signal, SignalKind};
    // Registered here, before the task runs: a signal stream takes the
    // signal from the moment it is made, so a Ctrl-C right after start is
    // already ours (a `ctrl_c()` future would register only when polled).
    // A closed terminal or a dropped ssh session (SIGHUP) ends a run like
    // Ctrl-C: nobody is left to watch its sandbox.
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return leaving;
    };
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        };
        next().await;
        if kill.is_some() {
            autodev::errln!("\nautodev: stopping: nothing new starts, what is running finishes (Ctrl-C or SIGTERM again cancels it)");
        } else {
            autodev::errln!("\nautodev: interrupted, cleaning up (Ctrl-C again to exit at once)");
        }
        cancel.cancel();
        if let Some(kill) = kill {
            next().await;
            autodev::errln!("\nautodev: killing running tasks and removing their containers");
            kill.cancel();
        }
        next().await;
        raise.store(true, Ordering::SeqCst);
        // The run may not have got to removing its container yet (a
        // second Ctrl-C right after the first): remove what this process
        // created, within a bound, then go.
        let own = [(
            autodev::sandbox::docker::PID_LABEL.to_string(),
            std::process::id().to_string(),
        )];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            if let Ok(s) = connect(&engines).await {
                let _ = s.clean(&own).await;
            }
        })
        .await;
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
    leaving
}

/// A problem with the command line that clap cannot see.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use autodev::agent::AgentError;
    use autodev::model::ModelError;
    use autodev::workspace::WorkspaceError;

    #[test]
    fn error_line_names_each_cause_once_on_one_line() {
        let io = std::io::Error::other("Permission denied (os error 13)");
        let e: anyhow::Error = WorkspaceError::Io {
            op: "reading link",
            path: "./1/cwd".into(),
            source: io,
        }
        .into();
        assert_eq!(
            error_line(&e),
            "reading link ./1/cwd: Permission denied (os error 13)"
        );
        let e = anyhow::anyhow!("line one\nline two").context("outer");
        assert_eq!(error_line(&e), "outer: line one line two");
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
            code(AgentError::Sandbox(SandboxError::CopyFailed("x".into())).into()),
            exit::SANDBOX
        );
        assert_eq!(
            code(
                SandboxError::Unreachable {
                    engine: "e".into(),
                    detail: "x".into(),
                    hint: "h".into(),
                }
                .into()
            ),
            exit::SANDBOX
        );
        assert_eq!(code(UsageError("x".into()).into()), exit::USAGE);
        assert_eq!(
            code(ConfigError::BadNetwork("x".into()).into()),
            exit::USAGE
        );
    }
}
