//! `autodev env build|list|show|prune`: the environment cache by hand.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::{connect, UsageError};
use crate::cli::{EngineArgs, EnvBuildArgs, EnvCommand};
use autodev::env::{cache, Ready, Setup};
use autodev::profile::Profile;
use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::{AnySandbox, OutputSink};

pub(super) async fn env_cmd(
    cmd: EnvCommand,
    profile: &Profile,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    match cmd {
        EnvCommand::Build(args) => build(*args, profile, cancel).await,
        EnvCommand::List { json, engines } => list(json, &engines).await,
        EnvCommand::Show { which, engines } => show(&which, &engines).await,
        EnvCommand::Prune { max_size, engines } => prune(max_size, &engines).await,
    }
}

/// What `exec` would do before its run, and nothing else.
async fn build(
    args: EnvBuildArgs,
    profile: &Profile,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    let mut spec = args
        .sandbox
        .run_spec(&args.workspace, "true", &profile.exclude)?;
    let setup = Setup {
        profile: profile.name.clone(),
        settings: args.setup.settings().map_err(UsageError)?,
    };
    let sandbox = connect(&args.sandbox.engines).await?;
    let ready = autodev::env::prepare(&sandbox, &mut spec, &setup, &mut ToStderr, cancel).await?;
    super::setup::report(&ready);
    match ready {
        Ready::Env(Some(r)) => {
            autodev::outln!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Ready::Env(None) => Err(UsageError(format!(
            "{} declares nothing to install for the {} profile: no environment to build (give --setup CMD)",
            args.workspace.display(),
            profile.name
        ))
        .into()),
        Ready::Skipped(why) => Err(UsageError(why).into()),
        Ready::Failed(o) => {
            autodev::errln!("{}", autodev::report::outcome_line(&o));
            Ok(ExitCode::from(o.verdict.exit_code()))
        }
    }
}

/// The set-up's output, both streams, on stderr: stdout is the record's.
struct ToStderr;

impl OutputSink for ToStderr {
    fn stdout(&mut self, bytes: &[u8]) {
        autodev::term::write(autodev::term::Stream::Err, bytes);
    }
    fn stderr(&mut self, bytes: &[u8]) {
        autodev::term::write(autodev::term::Stream::Err, bytes);
    }
}

/// The one Docker engine these flags name.
async fn engine(engines: &EngineArgs) -> Result<DockerSandbox> {
    match connect(engines).await? {
        AnySandbox::Docker(fleet) => fleet
            .engines()
            .next()
            .cloned()
            .ok_or_else(|| UsageError("no engine given".into()).into()),
        _ => Err(UsageError("environments live on Docker engines: give --engine".into()).into()),
    }
}

async fn list(json: bool, engines: &EngineArgs) -> Result<ExitCode> {
    let docker = engine(engines).await?;
    for l in cache::list(&docker).await? {
        if json {
            autodev::outln!("{}", serde_json::to_string(&l)?);
        } else {
            autodev::outln!(
                "{}\t{:.1} MB ({:.1} MB with its base)\t{}\t{}",
                l.image,
                l.size_bytes as f64 / 1e6,
                l.image_bytes as f64 / 1e6,
                l.record.profile,
                l.record.setup
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(which: &str, engines: &EngineArgs) -> Result<ExitCode> {
    let docker = engine(engines).await?;
    let all = cache::list(&docker).await?;
    let found: Vec<_> = all
        .iter()
        .filter(|l| {
            l.image == which || l.record.image_id == which || l.record.key.starts_with(which)
        })
        .collect();
    match found.as_slice() {
        [one] => {
            autodev::outln!("{}", serde_json::to_string_pretty(one)?);
            Ok(ExitCode::SUCCESS)
        }
        [] => Err(UsageError(format!(
            "no environment {which:?} on {} (see `autodev env list`)",
            docker.name()
        ))
        .into()),
        many => Err(UsageError(format!(
            "{which:?} names {} environments: give more of the key",
            many.len()
        ))
        .into()),
    }
}

async fn prune(max: u64, engines: &EngineArgs) -> Result<ExitCode> {
    let docker = engine(engines).await?;
    let removed = cache::prune(&docker, max).await?;
    let bytes: u64 = removed.iter().map(|l| l.size_bytes).sum();
    for l in &removed {
        autodev::errln!("autodev: removed {}", l.image);
    }
    autodev::errln!(
        "autodev: {} environment(s) removed, {:.1} MB",
        removed.len(),
        bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
