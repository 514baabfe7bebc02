//! The routes: thin handlers over `Service`, one error shape
//! (`{"error": {"class", "message"}}`), one log line per request.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::runs::Run;
use super::{Refusal, Service, Tenant};
use autodev::error::ErrorClass;
use autodev::events::ExecEvent;

/// The OpenAPI document, kept in the repository and served as it is.
pub(crate) const OPENAPI: &str = include_str!("../../../docs/openapi.json");

pub(crate) type Svc = Arc<Service>;

/// An error answer.
pub(crate) struct ApiError {
    status: StatusCode,
    class: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            class,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error of one of the engine's classes, with the status the class
    /// maps to (`ErrorClass::http_status`): one classification for every
    /// front end.
    pub(crate) fn of(class: ErrorClass, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(class.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, class.as_str(), message)
    }

    /// A key at its `--max-sessions`: 429, to retry once one is removed.
    pub(crate) fn too_many_sessions(held: usize) -> Self {
        ApiError {
            retry_after: Some(60),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota",
                format!("this key holds {held} sessions, its most (--max-sessions): delete one (DELETE /v1/sessions/ID) or let one idle out"),
            )
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "usage",
            format!("no {what} with this id"),
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(m) => ApiError::of(ErrorClass::Usage, m),
            Refusal::Busy(m, secs) => ApiError {
                retry_after: Some(secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota", m)
            },
            Refusal::Draining => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining",
                    "the service is shutting down; retry on its replacement",
                )
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let one_line = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut r = (
            self.status,
            Json(json!({"error": {"class": self.class, "message": one_line}})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// Every route, with its method: the router is built from this list, and
/// a test checks it against the OpenAPI document.
pub(crate) type Route = (&'static str, &'static str, MethodRouter<Svc>, bool);

fn routes() -> Vec<Route> {
    // (method, path, handler, needs a key)
    vec![
        ("get", "/v1/health", get(health), false),
        ("get", "/v1/openapi.json", get(openapi), false),
        ("get", "/metrics", get(metrics), false),
        ("post", "/v1/runs", post(create_run), true),
        ("get", "/v1/runs/{id}", get(get_run), true),
        (
            "delete",
            "/v1/runs/{id}",
            axum::routing::delete(cancel_run),
            true,
        ),
        ("get", "/v1/runs/{id}/events", get(run_events), true),
        ("get", "/v1/usage", get(usage), true),
    ]
    .into_iter()
    .chain(super::session_routes::routes())
    .chain(super::batch_routes::routes())
    .chain(super::mcp_route::routes())
    .collect()
}

pub(crate) fn router(svc: Svc, max_body: usize, body_wait: std::time::Duration) -> Router {
    let (mut open, mut keyed) = (Router::new(), Router::new());
    for (_, path, handler, needs_key) in routes() {
        if needs_key {
            keyed = keyed.route(path, handler);
        } else {
            open = open.route(path, handler);
        }
    }
    let keyed = keyed.route_layer(middleware::from_fn_with_state(svc.clone(), auth));
    open.merge(keyed)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "usage",
                "no such route (GET /v1/openapi.json lists them)",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            (max_body, body_wait),
            whole_body,
        ))
        .layer(middleware::from_fn(web_origin))
        .layer(middleware::from_fn(log))
        .with_state(svc)
}

/// Refuses a request a web page on another origin sent: browsers name it
/// in `Origin`. Without this, any page the operator opens could post runs
/// to a service without keys on loopback, or reach it by DNS rebinding.
/// Programs send no `Origin`, and a page served from loopback may ask.
async fn web_origin(req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    match origin {
        Some(o) if !loopback_origin(&o) => ApiError::new(
            StatusCode::FORBIDDEN,
            "auth",
            format!("requests from web pages are refused (Origin: {o}); call the service from a program"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Whether `origin` (`scheme://host[:port]`) names this host by a loopback name.
fn loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Finds the caller's key, or answers 401. A service without keys serves
/// every caller as one tenant (it listens on loopback or a private socket).
async fn auth(State(svc): State<Svc>, mut req: Request, next: Next) -> Response {
    let keys = match svc.keys.current() {
        Ok(k) => k,
        Err(e) => return ApiError::of(ErrorClass::Internal, e.to_string()).into_response(),
    };
    if keys.is_empty() && svc.reachable {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth",
            "this service has no keys left and listens beyond loopback: it serves nobody until `autodev serve keys add NAME`",
        )
        .into_response();
    }
    let tenant = if keys.is_empty() {
        Tenant {
            name: "local".into(),
            key: None,
        }
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token.map(|t| svc.keys.find(t.trim())) {
            Some(Ok(Some(key))) => Tenant {
                name: key.name.clone(),
                key: Some(key),
            },
            Some(Err(e)) => {
                return ApiError::of(ErrorClass::Internal, e.to_string())
                    .into_response()
            }
            _ => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "auth",
                    "a key is needed: send `Authorization: Bearer TOKEN` (autodev serve keys add NAME makes one)",
                )
                .into_response()
            }
        }
    };
    req.extensions_mut().insert(tenant.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(tenant);
    resp
}

/// Reads the request body whole before any handler runs: a client that
/// sends it slower than `--body-wait` allows, or more than the cap, is
/// answered and let go, instead of holding a connection and memory.
async fn whole_body(
    State((max, wait)): State<(usize, std::time::Duration)>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "usage",
            format!("request body over the service's cap of {max} bytes (--max-body)"),
        )
        .into_response()
    };
    if declared.is_some_and(|n| n > max) {
        return too_big();
    }
    match tokio::time::timeout(wait, axum::body::to_bytes(body, max)).await {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "usage",
            format!(
                "the request body did not arrive within {} (--body-wait)",
                humantime::format_duration(wait)
            ),
        )
        .into_response(),
        // Over the cap (a body without a length), or broken off.
        Ok(Err(_)) => too_big(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
    }
}

/// One JSON line on stderr per request: who, which route, status, time.
async fn log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(none)".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    let key = resp.extensions().get::<Tenant>().map(|t| t.name.clone());
    autodev::errln!(
        "{}",
        json!({
            "ts": super::usage::now(), "method": method, "route": route,
            "status": resp.status().as_u16(), "ms": start.elapsed().as_millis() as u64, "key": key,
        })
    );
    resp
}

async fn health(State(svc): State<Svc>) -> Json<Value> {
    let (running, waiting) = svc.sched.counts();
    let draining = svc.draining.load(Ordering::SeqCst);
    Json(json!({
        "status": if draining { "draining" } else { "ok" },
        "engine_up": svc.engine_up.load(Ordering::SeqCst),
        "engines": svc.engine_health().iter().map(|(name, up)| json!({"name": name, "up": up})).collect::<Vec<_>>(),
        "running": running, "waiting": waiting,
    }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(svc): State<Svc>) -> Response {
    let (running, waiting) = svc.sched.counts();
    let text = svc.metrics.render(running, waiting, &svc.engine_health());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// `false`: answer 202 with the id at once instead of the result.
    pub(crate) wait: Option<bool>,
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

pub(crate) fn body_error(r: BytesRejection) -> ApiError {
    ApiError::new(
        r.status(),
        "usage",
        format!("request body: {}", r.body_text()),
    )
}

async fn create_run(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    headers: HeaderMap,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::of(ErrorClass::Usage, e.body_text()))?;
    let body = body.map_err(body_error)?;
    let req = svc.parse(&t, &body)?;
    let run = svc.submit(&t, req, None)?;
    answer(run, &headers, q.wait).await
}

/// The answer to a run request: its events, its id at once, or its result.
pub(crate) async fn answer(
    run: Arc<Run>,
    headers: &HeaderMap,
    wait: Option<bool>,
) -> Result<Response, ApiError> {
    if wants_events(headers) {
        return Ok(events(run, 0));
    }
    if wait == Some(false) {
        let id = run.id.clone();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "events": format!("/v1/runs/{id}/events")})),
        )
            .into_response());
    }
    // A caller that hangs up before the result no longer wants the run:
    // dropping this future cancels it, as Ctrl-C does in `exec`.
    let guard = run.cancel.clone().drop_guard();
    let result = run.finished().await;
    guard.disarm();
    Ok(Json(result).into_response())
}

async fn get_run(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = svc
        .runs
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("run"))?;
    Ok(Json(
        json!({"id": run.id, "state": run.state(), "result": run.result()}),
    ))
}

async fn cancel_run(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = svc
        .runs
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("run"))?;
    run.cancel.cancel();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": run.id, "state": run.state()})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

async fn run_events(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::of(ErrorClass::Usage, e.body_text()))?;
    let run = svc
        .runs
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("run"))?;
    // The standard reconnect header wins over the query: it is what the
    // client last saw.
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(events(run, last.or(q.after).unwrap_or(0)))
}

/// The run's events after number `after`, as server-sent events, until its result.
fn events(run: Arc<Run>, after: u64) -> Response {
    let stream =
        futures_util::stream::unfold((run, after, false), |(run, seen, done)| async move {
            if done {
                return None;
            }
            loop {
                let (batch, finished) = run.events_after(seen);
                if let Some(last) = batch.last().map(|(n, _)| *n) {
                    let items: Vec<Result<Event, Infallible>> =
                        batch.iter().map(|(n, e)| Ok(sse_event(*n, e))).collect();
                    return Some((futures_util::stream::iter(items), (run, last, finished)));
                }
                if finished {
                    return None;
                }
                run.changed(seen).await;
            }
        })
        .flatten();
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_event(n: u64, e: &ExecEvent) -> Event {
    let v = serde_json::to_value(e).unwrap_or(Value::Null);
    let name = v["event"].as_str().unwrap_or("message").to_string();
    Event::default()
        .id(n.to_string())
        .event(name)
        .data(v.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    key: Option<String>,
    /// Unix seconds.
    since: Option<u64>,
}

async fn usage(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::of(ErrorClass::Usage, e.body_text()))?;
    // A key sees its own use only; another's name is as unknown as a typo.
    if q.key.as_deref().is_some_and(|k| k != t.name) {
        return Err(ApiError::not_found("key"));
    }
    let s = svc
        .usage
        .summary(&t.name, q.since.unwrap_or(0))
        .map_err(|e| ApiError::of(ErrorClass::Internal, format!("reading usage: {e}")))?;
    Ok(Json(serde_json::to_value(s).unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_origins_pass() {
        for ok in [
            "http://127.0.0.1:8844",
            "http://localhost",
            "https://[::1]:9",
            "http://127.9.9.9",
        ] {
            assert!(loopback_origin(ok), "{ok}");
        }
        for bad in [
            "null",
            "http://evil.example",
            "http://127.0.0.1.evil.example",
            "http://[::2]",
            "127.0.0.1",
        ] {
            assert!(!loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| m.as_str() != "parameters")
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        let mut served: Vec<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _, _)| (m.to_string(), p.replace("{*", "{")))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
