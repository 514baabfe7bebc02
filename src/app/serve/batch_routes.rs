//! The batch routes: send a tasks file, follow its progress, read its
//! results, cancel it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::http::{body_error, ApiError, Route, Svc};
use super::Tenant;
use autodev::error::ErrorClass;

/// How often a results request that waits for the end looks again.
const POLL: Duration = Duration::from_millis(200);

pub(crate) fn routes() -> Vec<Route> {
    vec![
        ("post", "/v1/batches", post(create), true),
        ("get", "/v1/batches/{id}", get(show), true),
        (
            "delete",
            "/v1/batches/{id}",
            axum::routing::delete(cancel),
            true,
        ),
        ("get", "/v1/batches/{id}/results", get(results), true),
    ]
}

async fn create(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let b = svc.submit_batch(&t, &body)?;
    Ok((StatusCode::CREATED, Json(b.status())).into_response())
}

async fn show(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let b = svc
        .batches
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("batch"))?;
    Ok(Json(b.status()))
}

async fn cancel(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let b = svc
        .batches
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("batch"))?;
    b.stop();
    Ok((StatusCode::ACCEPTED, Json(b.status())).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsQuery {
    /// Answer once the batch has ended (or was cancelled).
    wait: Option<bool>,
}

async fn results(
    State(svc): State<Svc>,
    Extension(t): Extension<Tenant>,
    Path(id): Path<String>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::of(ErrorClass::Usage, e.body_text()))?;
    let b = svc
        .batches
        .get(&id, &t.name)
        .ok_or_else(|| ApiError::not_found("batch"))?;
    if q.wait == Some(true) {
        while b.state() == "running" {
            tokio::time::sleep(POLL).await;
        }
    }
    let bytes = b
        .results()
        .map_err(|e| ApiError::of(ErrorClass::Internal, format!("reading results: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], bytes).into_response())
}
