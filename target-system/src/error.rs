//! The JSON error body every shop service answers with: `{"error": "..."}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Set on an error response caused by a failed dependency of the service answering, so
/// that the caller's circuit breaker does not blame this service for it.
pub const DEPENDENCY_FAILURE: HeaderName = HeaderName::from_static("x-dependency-failure");

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// An error answer blaming `dependency`.
pub fn dependency_error(
    status: StatusCode,
    dependency: &str,
    message: impl Into<String>,
) -> Response {
    let mut resp = error(status, message);
    if let Ok(v) = HeaderValue::from_str(dependency) {
        resp.headers_mut().insert(DEPENDENCY_FAILURE, v);
    }
    resp
}
