//! What happens around every request: a request id (the client's `x-request-id` when sane,
//! else a fresh one) echoed in the response and carried by the request's log span, one log
//! line and one metrics sample per request, and the optional bearer token on `/v1/*`.

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, for handlers that want to log or return it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Makes ids unique within and (with high probability) across processes.
pub struct IdMaker {
    prefix: u32,
    next: AtomicU64,
}

impl Default for IdMaker {
    fn default() -> Self {
        // std's RandomState is seeded randomly per process: a cheap source of a prefix.
        let prefix = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            prefix: prefix as u32,
            next: AtomicU64::new(1),
        }
    }
}

impl IdMaker {
    pub fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:08x}", self.prefix)
    }
}

fn client_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Records a request's outcome even when its future is dropped (client gone: status 499).
struct Outcome {
    state: Arc<AppState>,
    route: String,
    method: &'static str,
    started: Instant,
    status: u16,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.state.metrics.request_finished(
            &self.route,
            self.method,
            self.status,
            self.started.elapsed(),
        );
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Request id, log span and line, metrics.
pub async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(client_id)
        .unwrap_or_else(|| state.ids.make());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method, route = %route);
    tracing::debug!(parent: &span, path = %req.uri().path(), "request received");
    state.metrics.request_started();
    let mut outcome = Outcome {
        state: Arc::clone(&state),
        route,
        method,
        started: Instant::now(),
        status: 499,
    };
    let mut response = next.run(req).instrument(span.clone()).await;
    outcome.status = response.status().as_u16();
    tracing::info!(
        parent: &span,
        status = outcome.status,
        ms = outcome.started.elapsed().as_secs_f64() * 1e3,
        "request finished"
    );
    drop(outcome);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// `Authorization: Bearer <api_key>` when the server has a key.
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not the server's API key",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs `Authorization: Bearer <API key>`",
        )
        .into_response(),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_client_ids_are_checked() {
        let m = IdMaker::default();
        assert_ne!(m.make(), m.make());
        assert_eq!(
            client_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(client_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(client_id(&HeaderValue::from_static("")), None);
        let long = "x".repeat(129);
        assert_eq!(
            client_id(&HeaderValue::from_str(&long).expect("ascii")),
            None
        );
    }

    #[test]
    fn key_comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
