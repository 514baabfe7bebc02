//! `autodev exec`: one command on a workspace, in a fresh sandbox.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::UsageError;
use crate::cli::{exit, ExecArgs};
use autodev::env::Ready;
use autodev::profile::Profile;
use autodev::sandbox::socket::SocketSandbox;
use autodev::sandbox::AnySandbox;
use autodev::sandbox::{
    NullSink, Outcome, OutputSink, RunRecord, RunSpec, Sandbox, SandboxError, StdioSink,
};
use autodev::workspace::WorkspaceError;

pub(super) async fn exec_cmd(
    args: ExecArgs,
    profile: &Profile,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    let mut spec = args.sandbox.run_spec(
        &args.workspace,
        autodev::sandbox::Command::from_args(&args.command),
        &profile.exclude,
    )?;
    let original = match &args.rerun {
        Some(path) => Some(rerun_spec(path, &mut spec)?),
        None => None,
    };
    // A typo in the path is a usage error whether or not a daemon answers;
    // the full walk (excludes, size cap) happens once, in the sandbox.
    if !spec.workspace.is_dir() {
        return Err(WorkspaceError::NotADirectory(spec.workspace.clone()).into());
    }

    let mut sink: Box<dyn OutputSink> = if args.json {
        Box::new(NullSink)
    } else {
        Box::new(StdioSink)
    };
    let setup = args.setup.settings().map_err(UsageError)?;
    let result: Result<Outcome> = async {
        let sandbox = match &args.pool_socket {
            Some(socket) => AnySandbox::Socket(SocketSandbox::new(socket)),
            None => super::connect(&args.sandbox.engines).await?,
        };
        sandbox.check_limits(&spec).await?;
        // A rerun names its image by ID: the environment it ran in, if any.
        let environment = match original {
            Some(_) => None,
            None => {
                let setup = autodev::env::Setup {
                    profile: profile.name.clone(),
                    settings: setup,
                };
                let ready =
                    autodev::env::prepare(&sandbox, &mut spec, &setup, sink.as_mut(), cancel)
                        .await?;
                super::setup::report(&ready);
                match ready {
                    Ready::Env(env) => env.map(|b| *b),
                    Ready::Skipped(_) => None,
                    Ready::Failed(outcome) => return Ok(*outcome),
                }
            }
        };
        let mut outcome = sandbox.run(&spec, sink.as_mut(), cancel).await?;
        if let Some(r) = outcome.record.as_mut() {
            r.environment = environment;
        }
        Ok(outcome)
    }
    .await;
    if let (Some(orig), Ok(outcome)) = (&original, &result) {
        return report_rerun(orig, outcome, &spec, args.json);
    }
    match result {
        Ok(outcome) => {
            if args.json {
                autodev::outln!("{}", serde_json::to_string(&outcome)?);
            } else {
                autodev::errln!("{}", autodev::report::outcome_line(&outcome));
            }
            Ok(ExitCode::from(outcome.verdict.exit_code()))
        }
        Err(e) if matches!(e.downcast_ref(), Some(SandboxError::Interrupted)) => {
            if args.json {
                // A caller reading JSON gets JSON on every path.
                autodev::outln!(
                    "{}",
                    serde_json::json!({"verdict": "interrupted", "error": SandboxError::Interrupted.to_string()})
                );
            }
            Err(e)
        }
        Err(e) => match e.downcast::<SandboxError>() {
            Ok(e) if args.json && !matches!(e, SandboxError::Workspace(_)) => {
                autodev::outln!("{}", serde_json::to_string(&Outcome::from_error(&e))?);
                autodev::errln!("autodev: {e}");
                Ok(ExitCode::from(exit::SANDBOX))
            }
            Ok(e) => Err(e.into()),
            Err(e) => Err(e),
        },
    }
}

/// What a rerun compares against: the original's verdict and record.
struct Original {
    verdict: String,
    record: RunRecord,
}

/// Fills `spec` from the record in `path` (an `exec --json` object or a
/// batch result line): its image by ID, limits and command; the values of
/// the variables it passed come from this environment.
fn rerun_spec(path: &std::path::Path, spec: &mut RunSpec) -> Result<Original> {
    let bad = |why: String| UsageError(format!("--rerun {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines.as_slice() else {
        return Err(bad(format!(
            "holds {} JSON lines; give a file with one result",
            lines.len()
        ))
        .into());
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let record: RunRecord = serde_json::from_value(v["record"].clone()).map_err(|_| {
        bad("holds no run record (it comes from `exec --json` or a batch result line)".into())
    })?;
    spec.image = record
        .image_id
        .clone()
        .unwrap_or_else(|| record.image.clone());
    spec.limits = record.limits.clone();
    spec.command = record.command.clone();
    spec.env = record
        .env_names
        .iter()
        .map(|k| {
            std::env::var(k)
                .map(|v| (k.clone(), v))
                .map_err(|_| bad(format!("the original run was given ${k}; set it here too")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Original {
        verdict: v["verdict"].as_str().unwrap_or_default().to_string(),
        record,
    })
}

fn report_rerun(orig: &Original, now: &Outcome, spec: &RunSpec, json: bool) -> Result<ExitCode> {
    let tree =
        autodev::workspace::manifest(&spec.workspace, &spec.copy, spec.limits.max_copy_bytes)
            .and_then(|m| autodev::workspace::tree_hash(&m))
            .ok();
    let same_verdict = orig.verdict == now.verdict.as_str();
    let same_output = now
        .record
        .as_ref()
        .is_some_and(|r| r.output_sha256 == orig.record.output_sha256);
    let same_workspace = tree.is_some() && tree == orig.record.workspace_sha256;
    if json {
        autodev::outln!(
            "{}",
            serde_json::json!({
                "same_verdict": same_verdict, "same_output": same_output,
                "same_workspace": same_workspace, "original_verdict": orig.verdict,
                "rerun": now,
            })
        );
    } else {
        let word = |same: bool| if same { "same" } else { "different" };
        autodev::errln!(
            "autodev: rerun {} (original {}): verdict {}, output {}, workspace {}",
            now.verdict,
            orig.verdict,
            word(same_verdict),
            word(same_output),
            word(same_workspace)
        );
    }
    Ok(ExitCode::from(if same_verdict && same_output {
        exit::OK
    } else {
        exit::FAILED
    }))
}
