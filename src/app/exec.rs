//! `autodev exec`: one command on a workspace, in a fresh sandbox.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::{exit, ExecArgs};
use crate::sandbox::{NullSink, Outcome, OutputSink, RunSpec, Sandbox, SandboxError, StdioSink};
use crate::workspace::WorkspaceError;

pub(super) async fn exec_cmd(args: ExecArgs, cancel: &CancellationToken) -> Result<ExitCode> {
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
    spec.junit = args.sandbox.junit()?;
    // A typo in the path is a usage error whether or not a daemon answers;
    // the full walk (excludes, size cap) happens once, in the sandbox.
    if !spec.workspace.is_dir() {
        return Err(WorkspaceError::NotADirectory(spec.workspace.clone()).into());
    }

    let sandbox = super::connect(&args.sandbox.engines).await;
    let mut sink: Box<dyn OutputSink> = if args.json {
        Box::new(NullSink)
    } else {
        Box::new(StdioSink)
    };
    let result = match sandbox {
        Ok(s) => match s.check_limits(&spec).await {
            Ok(()) => s.run(&spec, sink.as_mut(), cancel).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(outcome) => {
            if args.json {
                crate::outln!("{}", serde_json::to_string(&outcome)?);
            } else {
                crate::errln!("{}", crate::report::outcome_line(&outcome));
            }
            Ok(ExitCode::from(outcome.verdict.exit_code()))
        }
        Err(SandboxError::Interrupted) => Err(SandboxError::Interrupted.into()),
        Err(e) if args.json && !matches!(e, SandboxError::Workspace(_)) => {
            crate::outln!("{}", serde_json::to_string(&Outcome::from_error(&e))?);
            crate::errln!("autodev: {e}");
            Ok(ExitCode::from(exit::SANDBOX))
        }
        Err(e) => Err(e.into()),
    }
}
