//! The session routes: make, read, change and remove a session's files,
//! run a command on them in a fresh container, take them as a tar.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::http::{answer, body_error, ApiError, Route, RunQuery, Svc};
use super::sessions::{list, CreateError, Init, Session};
use super::Tenant;
use autodev::error::ErrorClass;

pub(crate) fn routes() -> Vec<Route> {
    vec![
        ("post", "/v1/sessions", post(create), true),
        ("get", "/v1/sessions/{id}", get(show), true),
        ("delete", "/v1/sessions/{id}", delete(remove), true),
        ("get", "/v1/sessions/{id}/files", get(list_files), true),
        (
            "get",
            "/v1/sessions/{id}/files/{*path}",
            get(read_file),
            true,
        ),
        (
            "put",
            "/v1/sessions/{id}/files/{*path}",
            put(write_file),
            true,
        ),
        (
            "delete",
            "/v1/sessions/{id}/files/{*path}",
            delete(delete_file),
            true,
        ),
        ("post", "/v1/sessions/{id}/runs", post(run), true),
        ("get", "/v1/sessions/{id}/archive", get(archive), true),
        ("put", "/v1/sessions/{id}/archive", put(replace), true),
    ]
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::of(ErrorClass::Usage, message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::of(ErrorClass::Internal, e.to_string())
}

fn session(svc: &Svc, t: &Tenant, id: &str) -> Result<Arc<Session>, ApiError> {
    svc.sessions
        .get(id, &t.name)
        .ok_or_else(|| ApiError::not_found("session"))
}

async fn create(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let tar = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-tar"));
    let parsed: Value;
    let init = if tar {
        Init::Tar(&body)
    } else if body.iter().all(u8::is_ascii_whitespace) {
        Init::Empty
    } else {
        parsed = serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
        let obj = parsed
            .as_object()
            .ok_or_else(|| bad("body: expected {\"files\": {path: text}}"))?;
        if let Some(k) = obj.keys().find(|k| *k != "files") {
            return Err(bad(format!(
                "body: unknown field {k:?}; a session is made from \"files\", a tar (Content-Type: application/x-tar), or nothing"
            )));
        }
        match obj.get("files") {
            Some(Value::Object(files)) => Init::Files(files),
            Some(_) => return Err(bad("files: expected an object {path: text}")),
            None => Init::Empty,
        }
    };
    let s = svc.sessions.create(&t.name, init).map_err(|e| match e {
        CreateError::Full(held) => ApiError::too_many_sessions(held),
        CreateError::Failed(why) => bad(why),
    })?;
    Ok((StatusCode::CREATED, Json(s.info())).into_response())
}

async fn show(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(session(&svc, &t, &id)?.info()))
}

async fn remove(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if svc.sessions.remove(&id, &t.name).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("session"))
    }
}

async fn list_files(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = session(&svc, &t, &id)?;
    let files = list(&s.ws()).map_err(internal)?;
    Ok(Json(json!({"files": files})))
}

async fn read_file(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let s = session(&svc, &t, &id)?;
    let found = autodev::patch::apply::existing_file(&s.ws(), &path)
        .map_err(|(_, why)| bad(format!("{path:?}: {why}")))?;
    let (_, full) = found.ok_or_else(|| ApiError::not_found("file"))?;
    let bytes = std::fs::read(full).map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    /// Make the file executable (`true`) or not (`false`).
    executable: Option<bool>,
}

async fn write_file(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path((id, path)): Path<(String, String)>,
    query: Result<Query<WriteQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let body = body.map_err(body_error)?;
    let s = session(&svc, &t, &id)?;
    let _held = s.lock.lock().await;
    svc.sessions
        .put(&s, &path, &body, q.executable)
        .map_err(|why| bad(format!("{path:?}: {why}")))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_file(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path((id, path)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let s = session(&svc, &t, &id)?;
    let _held = s.lock.lock().await;
    let found = autodev::patch::apply::existing_file(&s.ws(), &path)
        .map_err(|(_, why)| bad(format!("{path:?}: {why}")))?;
    let (_, full) = found.ok_or_else(|| ApiError::not_found("file"))?;
    std::fs::remove_file(full).map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn run(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RunQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let body = body.map_err(body_error)?;
    let s = session(&svc, &t, &id)?;
    let mut v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        if obj.contains_key("files") {
            return Err(bad(
                "files: a session run uses the session's files; PUT /v1/sessions/{id}/files/{path} changes them",
            ));
        }
    }
    let write_back = match v.as_object_mut().and_then(|o| o.remove("write_back")) {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(bad("write_back: true or false")),
    };
    let req = svc.parse(&t, v.to_string().as_bytes())?;
    let on = super::OnSession {
        session: s,
        write_back,
    };
    let run = svc.submit(&t, req, Some(on))?;
    answer(run, &headers, q.wait).await
}

async fn archive(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = session(&svc, &t, &id)?;
    let tar = svc.sessions.archive(&s).map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response())
}

async fn replace(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(body_error)?;
    let s = session(&svc, &t, &id)?;
    let _held = s.lock.lock().await;
    svc.sessions.replace(&s, &body).map_err(bad)?;
    Ok(StatusCode::NO_CONTENT)
}
