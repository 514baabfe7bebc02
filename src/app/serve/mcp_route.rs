//! `autodev serve --mcp`: the MCP server (`app::mcp::protocol`, the same
//! as over stdio) on streamable HTTP at `/mcp`. Each MCP session is a
//! session of the caller's key (its id is the `Mcp-Session-Id`), so its
//! workspace is the session's files; each `run_tests` or `exec` is a run of
//! that key through the same queue, quotas, usage and metrics as
//! `POST /v1/sessions/{id}/runs`. Answers are single JSON bodies; the
//! server sends nothing unasked (`GET /mcp` is 405).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::http::{body_error, ApiError, Route, Svc};
use super::sessions::{list, CreateError, Init, Session};
use super::{OnSession, Refusal, Tenant};
use crate::app::mcp::protocol::{self, ToolHost};
use crate::app::mcp::tools::{self, Answer, CallError};
use autodev::error::ErrorClass;
use autodev::sandbox::{Command, Outcome};

const SESSION_HEADER: &str = "mcp-session-id";

pub(crate) fn routes() -> Vec<Route> {
    vec![
        ("post", "/mcp", post(message), true),
        ("get", "/mcp", get(no_stream), true),
        ("delete", "/mcp", delete(end), true),
    ]
}

/// The tools on one session of one key.
struct SessionTools {
    svc: Svc,
    tenant: Tenant,
    session: Arc<Session>,
    runner: String,
}

impl ToolHost for SessionTools {
    fn tools(&self) -> Value {
        // `doctor` runs a minute of hostile workloads: the operator's
        // command (`autodev doctor`), not a tenant's.
        let all = tools::list();
        let kept: Vec<Value> = all
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["name"] != "doctor")
            .cloned()
            .collect();
        Value::from(kept)
    }

    async fn call(
        &self,
        name: &str,
        args: &Value,
        _cancel: &CancellationToken,
    ) -> Result<Answer, CallError> {
        if !["run_tests", "exec", "read_file", "write_file", "list_files"].contains(&name) {
            return Err(CallError::Unknown);
        }
        if let Some(k) = args
            .as_object()
            .and_then(|o| o.keys().find(|k| !tools::accepts(name, k)))
        {
            return Err(CallError::Refused(format!(
                "{name}: unknown argument {k:?}"
            )));
        }
        match name {
            "run_tests" => {
                self.run(Value::from(self.runner.clone()), args, false)
                    .await
            }
            "exec" => {
                // A run request's `runner` takes both forms as they are.
                let runner = match tools::command_arg(args)? {
                    Command::Shell(line) => Value::from(line),
                    Command::Argv(argv) => Value::from(argv),
                };
                let write_back = args["write_back"].as_bool().unwrap_or(false);
                self.run(runner, args, write_back).await
            }
            "read_file" => tools::read_file(&self.session.ws(), tools::text_arg(args, "path")?),
            "write_file" => {
                let path = tools::text_arg(args, "path")?;
                let content = tools::text_arg(args, "content")?;
                let _held = self.session.lock.lock().await;
                self.svc
                    .sessions
                    .put(&self.session, path, content.as_bytes(), None)
                    .map_err(|why| CallError::Refused(format!("{path:?}: {why}")))?;
                let said = format!("wrote {path} ({} bytes)", content.len());
                Ok((said, json!({"path": path, "bytes": content.len()}), false))
            }
            _ => {
                let files = list(&self.session.ws())
                    .map_err(|e| CallError::Refused(format!("listing the files: {e}")))?;
                let text = files
                    .iter()
                    .map(|f| format!("{}\t{}", f.path, f.bytes))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok((text, json!({"files": files}), false))
            }
        }
    }
}

impl SessionTools {
    /// A run on the session, as `POST /v1/sessions/{id}/runs` makes it.
    async fn run(
        &self,
        runner: Value,
        args: &Value,
        write_back: bool,
    ) -> Result<Answer, CallError> {
        let mut body = json!({"runner": runner});
        if let Some(l) = args.get("limits") {
            body["limits"] = l.clone();
        }
        let req = self
            .svc
            .parse(&self.tenant, body.to_string().as_bytes())
            .map_err(refused)?;
        let on = OnSession {
            session: self.session.clone(),
            write_back,
        };
        let run = self
            .svc
            .submit(&self.tenant, req, Some(on))
            .map_err(refused)?;
        // A client that hangs up no longer wants the run.
        let guard = run.cancel.clone().drop_guard();
        let result = run.finished().await;
        guard.disarm();
        let Ok(o) = serde_json::from_value::<Outcome>(result.clone()) else {
            let why = result["error"]
                .as_str()
                .unwrap_or("the run was not carried out");
            return Ok((
                format!("the run could not be carried out: {why}"),
                result,
                true,
            ));
        };
        let mut s = tools::summary(&o);
        s["run"] = result["id"].clone();
        if write_back {
            s["write_back"] = result["write_back"].clone();
        }
        let failed = o.verdict.as_str() != "passed";
        Ok((
            serde_json::to_string_pretty(&s).unwrap_or_default(),
            s,
            failed,
        ))
    }
}

/// A refused run, as the tool's answer the model reads.
fn refused(r: Refusal) -> CallError {
    CallError::Refused(match r {
        Refusal::Invalid(m) => m,
        Refusal::Busy(m, secs) => format!("{m}; retry in {secs} s"),
        Refusal::Draining => "the service is shutting down; retry on its replacement".into(),
    })
}

/// The session the request names, or none when it names none.
fn named_session(
    svc: &Svc,
    t: &Tenant,
    headers: &HeaderMap,
) -> Result<Option<Arc<Session>>, ApiError> {
    let Some(id) = headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let id = id.to_str().unwrap_or_default();
    svc.sessions.get(id, &t.name).map(Some).ok_or_else(|| {
        // The protocol's word for "initialize again".
        ApiError::new(
            StatusCode::NOT_FOUND,
            "usage",
            "no MCP session with this id (expired or ended): initialize a new one",
        )
    })
}

fn runner(svc: &Svc) -> Result<String, ApiError> {
    svc.mcp_runner.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "usage",
            "this service does not serve MCP (start it with --mcp)",
        )
    })
}

async fn message(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let runner = runner(&svc)?;
    let body = body.map_err(body_error)?;
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let a = protocol::error(Value::Null, -32700, &format!("parse error: {e}"));
            return Ok((StatusCode::BAD_REQUEST, Json(a)).into_response());
        }
    };
    let initialize = msg["method"] == "initialize";
    let session = match named_session(&svc, &t, &headers)? {
        Some(s) => s,
        // A new MCP session: a new, empty session of the key's.
        None if initialize => svc
            .sessions
            .create(&t.name, Init::Empty)
            .map_err(|e| match e {
                CreateError::Full(held) => ApiError::too_many_sessions(held),
                CreateError::Failed(why) => ApiError::of(ErrorClass::Internal, why),
            })?,
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "usage",
                "no Mcp-Session-Id header: send initialize first",
            ))
        }
    };
    let id = session.id.clone();
    let host = SessionTools {
        svc,
        tenant: t,
        session,
        runner,
    };
    let answer = protocol::handle(&host, msg, &CancellationToken::new()).await;
    let mut resp = match answer {
        Some(a) => Json(a).into_response(),
        // A notification or a response: accepted, nothing to say.
        None => StatusCode::ACCEPTED.into_response(),
    };
    if initialize {
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
    }
    Ok(resp)
}

async fn no_stream(State(svc): State<Svc>) -> Result<Response, ApiError> {
    runner(&svc)?;
    Ok((
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
    )
        .into_response())
}

async fn end(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    runner(&svc)?;
    let s = named_session(&svc, &t, &headers)?.ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "usage", "no Mcp-Session-Id header")
    })?;
    svc.sessions.remove(&s.id, &t.name).await;
    Ok(StatusCode::NO_CONTENT)
}
