//! The HTTP surface: shared state, the router with its layers, one thin handler per route, and
//! the OpenAPI document derived from the handlers and the types in `schema`.

use crate::analysis::{self, Plan};
use crate::batching::Status;
use crate::batching::ZeroShotQuery;
use crate::config::{ServerConfig, Task};
use crate::error::{ApiError, ApiJson, BodyLimit, ErrorBody};
use crate::metrics::Metrics;
use crate::middleware::{self, IdMaker, REQUEST_ID};
use crate::page;
use crate::registry::ModelHandle;
use crate::registry::Registry;
use crate::schema::ZeroShotMethod;
use crate::schema::{
    AnalyzeRequest, AnalyzeResponse, HealthResponse, ModelInfo, ModelStatus, ModelsResponse,
    ReadyResponse, TaskRequest, ZeroShotRequest, ZeroShotResponse,
};
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

/// What every handler can reach.
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub ids: IdMaker,
    /// Set once shutdown starts: `/ready` answers 503 so load balancers stop sending.
    pub draining: AtomicBool,
    openapi: String,
}

impl AppState {
    pub fn new(config: Arc<ServerConfig>, registry: Registry, metrics: Arc<Metrics>) -> Self {
        let openapi = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        Self {
            config,
            registry,
            metrics,
            ids: IdMaker::default(),
            draining: AtomicBool::new(false),
            openapi,
        }
    }
}

impl FromRef<Arc<AppState>> for BodyLimit {
    fn from_ref(state: &Arc<AppState>) -> Self {
        BodyLimit(state.config.limits.max_body_bytes)
    }
}

/// The whole application, layers included.
pub fn router(state: Arc<AppState>) -> anyhow::Result<Router> {
    let v1 = Router::new()
        .route("/v1/analyze", post(analyze))
        .route("/v1/topic", post(topic))
        .route("/v1/entities", post(entities))
        .route("/v1/stance", post(stance))
        .route("/v1/zero-shot", post(zero_shot))
        .route("/v1/models", get(models))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::require_key,
        ));
    let open = Router::new()
        .route("/", get(page::index))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi));
    let mut app = v1
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the server hit a bug while handling this request").into_response()
        }));
    if let Some(cors) = cors(&state.config.cors_origins)? {
        app = app.layer(cors);
    }
    Ok(app
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::observe,
        ))
        .with_state(state))
}

fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Ok(Some(layer.allow_origin(AllowOrigin::any())));
    }
    let list = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim_end_matches('/'))
                .map_err(|_| anyhow::anyhow!("CORS origin `{o}` is not a valid header value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(layer.allow_origin(AllowOrigin::list(list))))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "naba",
        description = "Topic, stance and named entities for Arabic news text. Every error is \
            `{\"error\": {\"code\", \"message\"}}`. Entity offsets count Unicode characters \
            (code points) of the text sent. When the server has an API key, `/v1/*` needs \
            `Authorization: Bearer <key>`."
    ),
    paths(analyze, topic, entities, stance, zero_shot, models, health, ready, metrics, openapi),
    components(schemas(ErrorBody, Task)),
    modifiers(&BearerAuth),
    tags(
        (name = "analysis", description = "Topic, entities and stance"),
        (name = "service", description = "Models, health, metrics")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn execute(state: &AppState, plan: Plan) -> Result<Json<AnalyzeResponse>, ApiError> {
    tracing::debug!(documents = plan.docs.len(), models = ?plan.model_choice(), "analysing");
    within_limit(state, analysis::execute(plan)).await
}

/// Awaits an analysis for at most the server's request timeout.
async fn within_limit<T>(
    state: &AppState,
    analysis: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<Json<T>, ApiError> {
    let timeout = state.config.request_timeout();
    match tokio::time::timeout(timeout, analysis).await {
        Ok(result) => result.map(Json),
        Err(_) => Err(ApiError::unavailable(
            "timeout",
            format!(
                "the analysis took longer than the server's limit of {:.0} s; send fewer or \
                 shorter documents, or retry later",
                timeout.as_secs_f64()
            ),
        )
        .with_retry_after(5)),
    }
}

/// Topic, entities and stance for one text or many documents.
#[utoipa::path(
    post, path = "/v1/analyze", tag = "analysis",
    request_body(content = AnalyzeRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One result per document, in order", body = AnalyzeResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "A limit, a missing field, an unknown model", body = ErrorBody),
        (status = 429, description = "Queue full: see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Not ready, timed out or shutting down", body = ErrorBody),
    )
)]
async fn analyze(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<AnalyzeRequest>,
) -> Result<Json<AnalyzeResponse>, ApiError> {
    let docs = analysis::documents(
        req.text,
        req.documents,
        req.stance_targets,
        &state.config.limits,
    )?;
    let plan = analysis::plan(
        docs,
        &req.options,
        req.tasks.as_deref(),
        &req.models,
        &state.registry,
    )?;
    execute(&state, plan).await
}

async fn single(
    state: &AppState,
    mut req: TaskRequest,
    task: Task,
) -> Result<Json<AnalyzeResponse>, ApiError> {
    if task != Task::Stance {
        if req.stance_targets.is_some() {
            return Err(ApiError::unprocessable(
                "invalid_request",
                format!("`stance_targets` is read by /v1/stance and /v1/analyze, not /v1/{task}"),
            ));
        }
        for d in req.documents.iter_mut().flatten() {
            d.targets.clear();
        }
    }
    let docs = analysis::documents(
        req.text,
        req.documents,
        req.stance_targets,
        &state.config.limits,
    )?;
    let (top_k, key) = analysis::options(&req.options)?;
    analysis::tasks(Some(&[task]), &state.registry, &docs)?;
    let model = state.registry.find(task, req.model.as_deref())?;
    execute(
        state,
        Plan {
            docs,
            models: vec![(task, model)],
            top_k,
            key,
        },
    )
    .await
}

/// Topic labels with scores.
#[utoipa::path(
    post, path = "/v1/topic", tag = "analysis",
    request_body(content = TaskRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "`topic` for each document", body = AnalyzeResponse),
        (status = "4XX", description = "Refused; see the code", body = ErrorBody),
        (status = "5XX", description = "Not ready, timed out, shutting down or failed", body = ErrorBody),
    )
)]
async fn topic(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Json<AnalyzeResponse>, ApiError> {
    single(&state, req, Task::Topic).await
}

/// Named entities with character offsets.
#[utoipa::path(
    post, path = "/v1/entities", tag = "analysis",
    request_body(content = TaskRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "`entities` for each document", body = AnalyzeResponse),
        (status = "4XX", description = "Refused; see the code", body = ErrorBody),
        (status = "5XX", description = "Not ready, timed out, shutting down or failed", body = ErrorBody),
    )
)]
async fn entities(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Json<AnalyzeResponse>, ApiError> {
    single(&state, req, Task::Entities).await
}

/// Stance of each document toward each target.
#[utoipa::path(
    post, path = "/v1/stance", tag = "analysis",
    request_body(content = TaskRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "`stance` for each document", body = AnalyzeResponse),
        (status = "4XX", description = "Refused; see the code", body = ErrorBody),
        (status = "5XX", description = "Not ready, timed out, shutting down or failed", body = ErrorBody),
    )
)]
async fn stance(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Json<AnalyzeResponse>, ApiError> {
    single(&state, req, Task::Stance).await
}

/// Labels named in the request, scored by E5 embeddings: nothing trained. Needs a zero-shot
/// model (`naba serve --zero-shot-model base`).
#[utoipa::path(
    post, path = "/v1/zero-shot", tag = "analysis",
    request_body(content = ZeroShotRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Scored labels for each document", body = ZeroShotResponse),
        (status = "4XX", description = "Refused (no labels, over 100, an empty or repeated label, no zero-shot model); see the code", body = ErrorBody),
        (status = "5XX", description = "Not ready, timed out, shutting down or failed", body = ErrorBody),
    )
)]
async fn zero_shot(
    State(state): State<Arc<AppState>>,
    ApiJson(mut req): ApiJson<ZeroShotRequest>,
) -> Result<Json<ZeroShotResponse>, ApiError> {
    for d in req.documents.iter_mut().flatten() {
        d.targets.clear();
    }
    let docs = analysis::documents(req.text, req.documents, None, &state.config.limits)?;
    if req.top_k == Some(0) {
        return Err(ApiError::unprocessable(
            "invalid_option",
            "top_k must be at least 1 (leave it out for all labels)",
        ));
    }
    let labels = analysis::zero_shot_labels(req.labels)?;
    let model = zero_shot_model(&state, req.model.as_deref(), req.method)?;
    let method = model.details.get().and_then(|d| d.zero_shot_method);
    if let Some(t) = &req.hypothesis_template {
        if method != Some(ZeroShotMethod::Entailment) {
            return Err(ApiError::unprocessable(
                "invalid_option",
                "`hypothesis_template` is read by entailment models only; this one scores by \
                 embedding",
            ));
        }
        naba_tasks::zero_shot::check_template(t).map_err(|e| {
            ApiError::unprocessable("invalid_option", format!("`hypothesis_template`: {e}"))
        })?;
    }
    let query = Arc::new(ZeroShotQuery {
        labels,
        multi_label: req.multi_label,
        hypothesis_template: req.hypothesis_template,
    });
    within_limit(&state, analysis::zero_shot(docs, model, query, req.top_k)).await
}

/// The zero-shot model named, else the default one of `method`, else the default one.
fn zero_shot_model(
    state: &AppState,
    name: Option<&str>,
    method: Option<ZeroShotMethod>,
) -> Result<Arc<ModelHandle>, ApiError> {
    let method_of = |m: &ModelHandle| m.details.get().and_then(|d| d.zero_shot_method);
    let model = match (name, method) {
        (None, Some(method)) => {
            let of_method: Vec<&Arc<ModelHandle>> = state
                .registry
                .models()
                .iter()
                .filter(|m| m.task() == Task::ZeroShot && method_of(m) == Some(method))
                .collect();
            match of_method
                .iter()
                .find(|m| m.is_default)
                .or(of_method.first())
            {
                Some(m) => Arc::clone(m),
                None => {
                    return Err(ApiError::unprocessable(
                        "task_unavailable",
                        format!(
                            "this server has no zero-shot model that scores by {}; start one \
                             with --zero-shot-model (base for embedding, an NLI checkpoint for \
                             entailment)",
                            method.as_str()
                        ),
                    ))
                }
            }
        }
        (name, _) => state.registry.find(Task::ZeroShot, name)?,
    };
    if let (Some(want), Some(has)) = (method, method_of(&model)) {
        if want != has {
            return Err(ApiError::unprocessable(
                "invalid_option",
                format!(
                    "model `{}` scores by {}, not by {}",
                    model.name(),
                    has.as_str(),
                    want.as_str()
                ),
            ));
        }
    }
    Ok(model)
}

/// The models this server runs.
#[utoipa::path(
    get, path = "/v1/models", tag = "service",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Each model with its labels and card", body = ModelsResponse))
)]
async fn models(State(state): State<Arc<AppState>>) -> Json<ModelsResponse> {
    let models = state
        .registry
        .models()
        .iter()
        .map(|m| {
            let status = m.batcher.status();
            let d = m.details.get();
            ModelInfo {
                name: m.name().to_string(),
                task: m.task(),
                default: m.is_default,
                status: status.as_str().to_string(),
                path: m.entry.path.clone(),
                source: d.map(|d| d.source.clone()),
                labels: d.map(|d| d.labels.clone()).unwrap_or_default(),
                base_encoder: d.and_then(|d| d.base_encoder.clone()),
                version: d.and_then(|d| d.version.clone()),
                window_tokens: d.map(|d| d.window_tokens),
                card: d.and_then(|d| d.card.clone()),
                lexical_mix: d.and_then(|d| d.lexical_mix),
                products: d.and_then(|d| d.products.map(str::to_string)),
                metrics: d.and_then(|d| d.metrics.clone()),
                error: match status {
                    Status::Failed(e) => Some(e),
                    _ => None,
                },
                queue_depth: m.batcher.queue_depth(),
                zero_shot_method: d.and_then(|d| d.zero_shot_method),
            }
        })
        .collect();
    Json(ModelsResponse { models })
}

/// The process answers.
#[utoipa::path(
    get, path = "/health", tag = "service",
    responses((status = 200, description = "Alive", body = HealthResponse))
)]
async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Every model is loaded and the server is not shutting down.
#[utoipa::path(
    get, path = "/ready", tag = "service",
    responses(
        (status = 200, description = "Ready", body = ReadyResponse),
        (status = 503, description = "Loading, failed or shutting down", body = ErrorBody),
    )
)]
async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<ReadyResponse>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the server is shutting down",
        ));
    }
    let statuses: Vec<ModelStatus> = state
        .registry
        .models()
        .iter()
        .map(|m| ModelStatus {
            name: m.name().to_string(),
            status: m.batcher.status().as_str().to_string(),
        })
        .collect();
    if state.registry.ready() {
        return Ok(Json(ReadyResponse {
            status: "ready".into(),
            models: statuses,
        }));
    }
    let waiting: Vec<String> = statuses
        .iter()
        .filter(|s| s.status != "ready")
        .map(|s| format!("{} ({})", s.name, s.status))
        .collect();
    Err(
        ApiError::unavailable("not_ready", format!("not ready: {}", waiting.join(", ")))
            .with_retry_after(2),
    )
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.clone(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}
