//! The MCP server's tools: what each takes, and the engine calls behind it.

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use autodev::config::overrides;
use autodev::env::{Ready, Setup};
use autodev::patch::apply;
use autodev::sandbox::{AnySandbox, Command, NullSink, Outcome, RunSpec, Sandbox};
use autodev::workspace::EntryKind;

/// Said to the client at `initialize`: agents otherwise assume a shell whose
/// state persists.
pub(crate) const INSTRUCTIONS: &str = "Every run_tests and exec call runs in a FRESH, locked-down container (no network, limited CPU, memory and time): no process, file change or variable survives the call. Files persist only in the workspace: change them with write_file, or pass write_back to exec.";

/// Output kept per stream in a tool's answer (head and tail).
const OUTPUT_CHARS: usize = 4000;
/// Failing tests listed with their messages.
const FAILING: usize = 10;

/// Why a tool call was not carried out.
pub(crate) enum CallError {
    /// No tool of that name (a protocol error).
    Unknown,
    /// A bad argument, said to the model as the tool's answer.
    Refused(String),
}

/// The tools' definitions (`tools/list`).
pub(crate) fn list() -> Value {
    let limits = json!({"type": "object", "description": "Limits to tighten for this call (e.g. {\"timeout\": \"30s\", \"memory\": \"256m\"}); they can never exceed the server's."});
    json!([
        {
            "name": "run_tests",
            "description": "Runs the workspace's test command in a FRESH container (dependencies from the set-up phase, network off). Returns the verdict, per-test counts, the first failing tests with their messages, and the head and tail of the output. Nothing of the run persists.",
            "inputSchema": {"type": "object", "properties": {"limits": limits}, "additionalProperties": false}
        },
        {
            "name": "exec",
            "description": "Runs a command in the workspace in a FRESH container (network off); nothing of it persists unless write_back is true, which copies the files it created or changed back into the workspace.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "command": {"description": "A shell command line, or an argument vector.", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "write_back": {"type": "boolean", "description": "Copy the files the command created or changed back into the workspace."},
                    "limits": limits
                },
                "required": ["command"], "additionalProperties": false
            }
        },
        {
            "name": "read_file",
            "description": "Reads a file of the workspace (a relative path).",
            "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": false}
        },
        {
            "name": "write_file",
            "description": "Writes a whole file of the workspace (a relative path; no .., no VCS metadata, never through a link), making its folders.",
            "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"], "additionalProperties": false}
        },
        {
            "name": "list_files",
            "description": "Lists the workspace's files as a run sees them (copy excludes applied), with their sizes.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false}
        },
        {
            "name": "doctor",
            "description": "Checks, with hostile workloads in fresh containers of this server's image and limits, that each isolation guarantee holds on this host (no network, memory and process limits, read-only root, no privileges, ...). Takes a minute. Returns each guarantee as held, broken or unknown, with how to fix a broken one.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false}
        }
    ])
}

/// What the tools work with.
pub(super) struct Tools {
    sandbox: AnySandbox,
    spec: RunSpec,
    setup: Setup,
    runner: String,
}

/// A tool's answer: its text, its structured form, whether it failed.
pub(crate) type Answer = (String, Value, bool);

pub(crate) fn text_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, CallError> {
    args[name]
        .as_str()
        .ok_or_else(|| CallError::Refused(format!("{name}: a string is needed")))
}

impl Tools {
    pub(super) fn new(sandbox: AnySandbox, spec: RunSpec, setup: Setup, runner: String) -> Self {
        Tools {
            sandbox,
            spec,
            setup,
            runner,
        }
    }

    async fn call_tool(
        &self,
        name: &str,
        args: &Value,
        cancel: &CancellationToken,
    ) -> Result<Answer, CallError> {
        let known = [
            "run_tests",
            "exec",
            "read_file",
            "write_file",
            "list_files",
            "doctor",
        ];
        if !known.contains(&name) {
            return Err(CallError::Unknown);
        }
        if let Some(k) = args
            .as_object()
            .and_then(|o| o.keys().find(|k| !accepts(name, k)))
        {
            return Err(CallError::Refused(format!(
                "{name}: unknown argument {k:?}"
            )));
        }
        match name {
            "run_tests" => {
                let cmd = Command::Shell(self.runner.clone());
                self.run(cmd, args, false, cancel).await
            }
            "exec" => {
                let write_back = args["write_back"].as_bool().unwrap_or(false);
                self.run(command_arg(args)?, args, write_back, cancel).await
            }
            "read_file" => self.read(text_arg(args, "path")?),
            "write_file" => self.write(text_arg(args, "path")?, text_arg(args, "content")?),
            "doctor" => self.doctor(cancel).await,
            _ => self.list(),
        }
    }

    async fn run(
        &self,
        command: Command,
        args: &Value,
        write_back: bool,
        cancel: &CancellationToken,
    ) -> Result<Answer, CallError> {
        let mut spec = self.spec.clone();
        spec.command = command;
        if let Some(over) = args.get("limits") {
            let over: Map<String, Value> = over
                .as_object()
                .cloned()
                .ok_or_else(|| CallError::Refused("limits: an object is needed".into()))?;
            spec.limits = overrides::apply(&self.spec.limits, &over, false).map_err(|e| {
                CallError::Refused(e.to_string().replace(
                    "; pass --allow-task-overrides to let tasks loosen them",
                    " (the server's limits)",
                ))
            })?;
        }
        let root = spec.workspace.clone();
        spec.write_back =
            write_back.then(|| spec.limits.max_copy_bytes.saturating_mul(2) + (1 << 20));
        let mut sink = NullSink;
        let outcome =
            match autodev::env::prepare(&self.sandbox, &mut spec, &self.setup, &mut sink, cancel)
                .await
            {
                Ok(Ready::Failed(o)) => Ok(*o),
                Ok(_) => self
                    .sandbox
                    .run(&spec, &mut sink, cancel)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("set-up: {e}")),
            };
        let mut o = match outcome {
            Ok(o) => o,
            Err(why) => {
                return Ok((
                    format!("the run could not be carried out: {why}"),
                    json!({"error": why}),
                    true,
                ))
            }
        };
        let tree = o.tree_back.take();
        let mut s = summary(&o);
        if write_back {
            // The user's own folder: what the command deleted is not
            // deleted there (a session's files are the service's, and are).
            let keep_all = Default::default();
            let w = autodev::patch::write_back::write_back(
                &root,
                tree,
                spec.limits.max_copy_bytes,
                &keep_all,
            );
            s["write_back"] = serde_json::to_value(w).unwrap_or_default();
        }
        let failed = o.verdict.as_str() != "passed";
        Ok((
            serde_json::to_string_pretty(&s).unwrap_or_default(),
            s,
            failed,
        ))
    }

    /// Every guarantee checked with this server's image and limits.
    async fn doctor(&self, cancel: &CancellationToken) -> Result<Answer, CallError> {
        let found = crate::app::doctor::examine(&self.sandbox, &self.spec, cancel)
            .await
            .map_err(|e| CallError::Refused(format!("doctor: {e}")))?;
        let mut text = format!(
            "{} ({}), image {}\n",
            found.name, found.version, self.spec.image
        );
        for f in &found.findings {
            let status = serde_json::to_value(f.status).unwrap_or_default();
            text.push_str(&format!(
                "{} {}: {}{}\n",
                status.as_str().unwrap_or("?"),
                f.check,
                f.detail,
                f.fix
                    .as_ref()
                    .map(|x| format!("; fix: {x}"))
                    .unwrap_or_default()
            ));
        }
        let broken = found
            .findings
            .iter()
            .any(|f| f.status == autodev::doctor::Status::Broken);
        let v = json!({"backend": found.name, "version": found.version, "image": self.spec.image,
                       "findings": found.findings, "broken": broken});
        Ok((text, v, false))
    }

    fn read(&self, path: &str) -> Result<Answer, CallError> {
        read_file(&self.spec.workspace, path)
    }

    fn write(&self, path: &str, content: &str) -> Result<Answer, CallError> {
        let max = self.spec.limits.max_copy_bytes;
        apply::write_file(&self.spec.workspace, path, content.as_bytes(), max)
            .map_err(|(_, why)| CallError::Refused(format!("{path:?}: {why}")))?;
        let said = format!("wrote {path} ({} bytes)", content.len());
        Ok((said, json!({"path": path, "bytes": content.len()}), false))
    }

    fn list(&self) -> Result<Answer, CallError> {
        let s = &self.spec;
        let m = autodev::workspace::manifest(&s.workspace, &s.copy, s.limits.max_copy_bytes)
            .map_err(|e| CallError::Refused(e.to_string()))?;
        let files: Vec<Value> = m
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File(n) => Some(json!({"path": e.rel.to_string_lossy(), "bytes": n})),
                _ => None,
            })
            .collect();
        let text = files
            .iter()
            .map(|f| format!("{}\t{}", f["path"].as_str().unwrap_or_default(), f["bytes"]))
            .collect::<Vec<_>>()
            .join("\n");
        Ok((text, json!({"files": files}), false))
    }
}

impl super::protocol::ToolHost for Tools {
    fn tools(&self) -> Value {
        list()
    }

    fn call(
        &self,
        name: &str,
        args: &Value,
        cancel: &CancellationToken,
    ) -> impl std::future::Future<Output = Result<Answer, CallError>> + Send {
        self.call_tool(name, args, cancel)
    }
}

/// The `read_file` tool on the workspace at `root`.
pub(crate) fn read_file(root: &std::path::Path, path: &str) -> Result<Answer, CallError> {
    let found = apply::existing_file(root, path)
        .map_err(|(_, why)| CallError::Refused(format!("{path:?}: {why}")))?;
    let (_, full) = found.ok_or_else(|| CallError::Refused(format!("{path:?}: no such file")))?;
    let bytes = std::fs::read(&full).map_err(|e| CallError::Refused(format!("{path:?}: {e}")))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok((
        text.clone(),
        json!({"path": path, "content": text, "bytes": bytes.len()}),
        false,
    ))
}

/// The `exec` tool's `command`: a shell line, or an argument vector.
pub(crate) fn command_arg(args: &Value) -> Result<Command, CallError> {
    match &args["command"] {
        Value::String(s) if !s.trim().is_empty() => Ok(Command::Shell(s.clone())),
        Value::Array(v) if !v.is_empty() && v.iter().all(Value::is_string) => Ok(Command::Argv(
            v.iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
        )),
        _ => Err(CallError::Refused(
            "command: a non-empty string or array of strings is needed".into(),
        )),
    }
}

/// Whether tool `name` takes argument `arg`.
pub(crate) fn accepts(name: &str, arg: &str) -> bool {
    matches!(
        (name, arg),
        ("run_tests", "limits")
            | ("exec", "command" | "write_back" | "limits")
            | ("read_file", "path")
            | ("write_file", "path" | "content")
    )
}

/// What a model needs of a run: the verdict, the counts, the first
/// failures, and the output's head and tail with the byte counts.
pub(crate) fn summary(o: &Outcome) -> Value {
    let tests = o.tests.as_ref().map(|t| {
        json!({
            "total": t.total, "passed": t.passed, "failed": t.failed,
            "errors": t.errors, "skipped": t.skipped,
            "failing": t.failing.iter().take(FAILING)
                .map(|f| json!({"name": f.name, "message": f.message}))
                .collect::<Vec<_>>(),
        })
    });
    let stream = |c: &autodev::sandbox::Captured| {
        json!({
            "text": autodev::text::cut_middle(&c.text, OUTPUT_CHARS),
            "total_bytes": c.total_bytes,
        })
    };
    json!({
        "verdict": o.verdict.as_str(),
        "exit_code": o.exit_code,
        "error": o.error,
        "tests": tests,
        "tests_note": o.tests_note,
        "stdout": stream(&o.stdout),
        "stderr": stream(&o.stderr),
        "duration_ms": o.durations.total_ms,
    })
}
