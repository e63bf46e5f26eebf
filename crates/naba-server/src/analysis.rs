//! From a request to a response: validate documents and options against the limits, pick the
//! models, put one job per document (or document-target pair) on each model's queue, await the
//! replies and put them back in document order.

use crate::batching::{
    BatchKey, JobError, JobInput, JobOutput, JobResult, Status, SubmitError, ZeroShotQuery,
};
use crate::config::{Limits, Task};
use crate::error::ApiError;
use crate::registry::{ModelHandle, Registry};
use crate::schema::{
    Aggregation, AnalyzeResponse, DocId, DocumentIn, DocumentResult, EntityOut, EvidenceOut,
    LabelIn, LabelOut, ModelChoice, NerDecoding, Normalize, Options, StanceResult, TargetCutOut,
    TopicResult, ZeroShotMethod, ZeroShotResponse, ZeroShotResult,
};
use naba_tasks::aggregate::{AggregationStrategy, Decoding};
use naba_tasks::ZeroShotLabel;
use naba_text::NormalizeOptions;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A validated document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub id: DocId,
    pub text: Arc<str>,
    /// Its own targets, then the request's, without repeats.
    pub targets: Vec<Arc<str>>,
}

/// Everything needed to run one request.
pub struct Plan {
    pub docs: Vec<Doc>,
    /// Tasks with the model answering each, in the order topic, entities, stance.
    pub models: Vec<(Task, Arc<ModelHandle>)>,
    pub top_k: Option<usize>,
    pub key: BatchKey,
}

impl Plan {
    pub fn model_choice(&self) -> ModelChoice {
        let name = |t: Task| {
            self.models
                .iter()
                .find(|(task, _)| *task == t)
                .map(|(_, m)| m.name().to_string())
        };
        ModelChoice {
            topic: name(Task::Topic),
            entities: name(Task::Entities),
            stance: name(Task::Stance),
        }
    }
}

/// Checks `text` / `documents` / targets against the limits; names the document and the limit
/// in every refusal.
pub fn documents(
    text: Option<String>,
    documents: Option<Vec<DocumentIn>>,
    stance_targets: Option<Vec<String>>,
    limits: &Limits,
) -> Result<Vec<Doc>, ApiError> {
    let docs: Vec<DocumentIn> = match (text, documents) {
        (Some(text), None) => vec![DocumentIn {
            id: None,
            text,
            targets: Vec::new(),
        }],
        (None, Some(docs)) => docs,
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "send either `text` or `documents`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "nothing to analyse: send `text` (a string) or `documents` (a list of \
                 {\"id\", \"text\", \"targets\"})",
            ))
        }
    };
    if docs.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "`documents` is empty",
        ));
    }
    if docs.len() > limits.max_documents {
        return Err(ApiError::unprocessable(
            "too_many_documents",
            format!(
                "{} documents in one request, over the limit of {} (limits.max_documents); \
                 split them over several requests",
                docs.len(),
                limits.max_documents
            ),
        ));
    }
    let shared_targets = stance_targets.unwrap_or_default();
    let mut out = Vec::with_capacity(docs.len());
    let mut pairs = 0usize;
    for (i, d) in docs.into_iter().enumerate() {
        let id = d.id.unwrap_or(DocId::Number(i as i64));
        if d.text.trim().is_empty() {
            return Err(ApiError::unprocessable(
                "empty_text",
                format!("document {id}: the text is empty or only whitespace"),
            ));
        }
        let chars = d.text.chars().count();
        if chars > limits.max_chars {
            return Err(ApiError::unprocessable(
                "text_too_long",
                format!(
                    "document {id}: the text has {chars} characters, over the limit of {} \
                     (limits.max_chars); split it",
                    limits.max_chars
                ),
            ));
        }
        let mut targets: Vec<Arc<str>> = Vec::new();
        for t in d.targets.iter().chain(&shared_targets) {
            if t.trim().is_empty() {
                return Err(ApiError::unprocessable(
                    "empty_target",
                    format!("document {id}: a stance target is empty or only whitespace"),
                ));
            }
            let n = t.chars().count();
            if n > limits.max_target_chars {
                return Err(ApiError::unprocessable(
                    "target_too_long",
                    format!(
                        "document {id}: a stance target has {n} characters, over the limit of \
                         {} (limits.max_target_chars)",
                        limits.max_target_chars
                    ),
                ));
            }
            if !targets.iter().any(|x| **x == **t) {
                targets.push(Arc::from(t.as_str()));
            }
        }
        pairs += targets.len();
        out.push(Doc {
            id,
            text: Arc::from(d.text),
            targets,
        });
    }
    if pairs > limits.max_stance_pairs {
        return Err(ApiError::unprocessable(
            "too_many_targets",
            format!(
                "{pairs} (document, target) pairs in one request, over the limit of {} \
                 (limits.max_stance_pairs)",
                limits.max_stance_pairs
            ),
        ));
    }
    Ok(out)
}

/// `top_k` and the per-call options.
pub fn options(opts: &Options) -> Result<(Option<usize>, BatchKey), ApiError> {
    if opts.top_k == Some(0) {
        return Err(ApiError::unprocessable(
            "invalid_option",
            "options.top_k must be at least 1 (leave it out for all labels)",
        ));
    }
    let aggregation = match opts.aggregation.unwrap_or(Aggregation::First) {
        Aggregation::None => AggregationStrategy::None,
        Aggregation::Simple => AggregationStrategy::Simple,
        Aggregation::First => AggregationStrategy::First,
        Aggregation::Average => AggregationStrategy::Average,
        Aggregation::Max => AggregationStrategy::Max,
    };
    let decoding = match opts.decoding.unwrap_or(NerDecoding::Iob2) {
        NerDecoding::Argmax => Decoding::Argmax,
        NerDecoding::Iob2 => Decoding::Iob2,
    };
    let normalize = match &opts.normalize {
        None => NormalizeOptions::default(),
        Some(Normalize::Text(s)) => parse_normalize(s)?,
        Some(Normalize::Items(items)) if items.is_empty() => NormalizeOptions::default(),
        Some(Normalize::Items(items)) => parse_normalize(&items.join(","))?,
    };
    Ok((
        opts.top_k,
        BatchKey {
            aggregation,
            decoding,
            normalize,
        },
    ))
}

fn parse_normalize(s: &str) -> Result<NormalizeOptions, ApiError> {
    s.parse()
        .map_err(|e| ApiError::unprocessable("invalid_option", format!("options.normalize: {e}")))
}

/// The plan for validated documents: options, tasks (those asked for, else the defaults) and
/// the model of each (the one `choice` names, else the task's default). What `/v1/analyze`
/// and the stream worker both do with a request.
pub fn plan(
    docs: Vec<Doc>,
    options_in: &Options,
    requested: Option<&[Task]>,
    choice: &ModelChoice,
    registry: &Registry,
) -> Result<Plan, ApiError> {
    let (top_k, key) = options(options_in)?;
    let models = tasks(requested, registry, &docs)?
        .into_iter()
        .map(|t| Ok((t, registry.find(t, model_for(choice, t))?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Plan {
        docs,
        models,
        top_k,
        key,
    })
}

fn model_for(choice: &ModelChoice, task: Task) -> Option<&str> {
    match task {
        Task::Topic => choice.topic.as_deref(),
        Task::Entities => choice.entities.as_deref(),
        Task::Stance => choice.stance.as_deref(),
        Task::ZeroShot => None,
    }
    .map(str::trim)
    .filter(|s| !s.is_empty())
}

/// Which tasks run: those asked for, or by default topic and entities where a model exists and
/// stance where targets were given.
pub fn tasks(
    requested: Option<&[Task]>,
    registry: &Registry,
    docs: &[Doc],
) -> Result<Vec<Task>, ApiError> {
    let has_pairs = docs.iter().any(|d| !d.targets.is_empty());
    let mut tasks: Vec<Task> = match requested {
        Some([]) => {
            return Err(ApiError::unprocessable(
                "invalid_request",
                "`tasks` is empty: name any of topic, entities, stance, or leave it out",
            ))
        }
        Some(list) => list.to_vec(),
        None => {
            let defaults: Vec<Task> = Task::ALL
                .into_iter()
                .filter(|t| registry.has_task(*t) && (*t != Task::Stance || has_pairs))
                .collect();
            if defaults.is_empty() {
                return Err(ApiError::unprocessable(
                    "missing_target",
                    "this server only does stance, which needs a target: add `stance_targets` \
                     or per-document `targets`",
                ));
            }
            defaults
        }
    };
    if tasks.contains(&Task::ZeroShot) {
        return Err(zero_shot_elsewhere());
    }
    tasks.sort();
    tasks.dedup();
    if let Some(missing) = tasks.iter().find(|t| !registry.has_task(**t)) {
        return Err(registry.unavailable(*missing));
    }
    if tasks.contains(&Task::Stance) && !has_pairs {
        return Err(ApiError::unprocessable(
            "missing_target",
            "stance needs a target: add `stance_targets` (for every document) or per-document \
             `targets`",
        ));
    }
    Ok(tasks)
}

/// Queues the jobs, awaits them, builds the response. Dropping this future (timeout, client
/// gone) cancels whatever has not run yet.
pub async fn execute(plan: Plan) -> Result<AnalyzeResponse, ApiError> {
    let mut pending: Vec<(Task, Arc<ModelHandle>, Vec<oneshot::Receiver<JobResult>>)> = Vec::new();
    for (task, model) in &plan.models {
        let inputs: Vec<JobInput> = match task {
            Task::Topic | Task::Entities => plan
                .docs
                .iter()
                .map(|d| JobInput {
                    text: Arc::clone(&d.text),
                    target: None,
                    key: plan.key,
                    zero_shot: None,
                })
                .collect(),
            Task::Stance => plan
                .docs
                .iter()
                .flat_map(|d| {
                    d.targets.iter().map(|t| JobInput {
                        text: Arc::clone(&d.text),
                        target: Some(Arc::clone(t)),
                        key: plan.key,
                        zero_shot: None,
                    })
                })
                .collect(),
            Task::ZeroShot => return Err(zero_shot_elsewhere()),
        };
        let receivers = model
            .batcher
            .submit(inputs)
            .map_err(|e| submit_error(model, e))?;
        pending.push((*task, Arc::clone(model), receivers));
    }
    let mut results: Vec<DocumentResult> = plan
        .docs
        .iter()
        .map(|d| DocumentResult {
            id: d.id.clone(),
            topic: None,
            entities: None,
            stance: None,
        })
        .collect();
    for (task, model, receivers) in pending {
        let mut receivers = receivers.into_iter();
        for (doc, result) in plan.docs.iter().zip(&mut results) {
            match task {
                Task::Topic => {
                    let out = reply(&model, doc, None, receivers.next()).await?;
                    if let JobOutput::Labels(c) = out {
                        let labels = labels(c.labels, plan.top_k);
                        result.topic = Some(TopicResult {
                            label: labels.first().map(|l| l.label.clone()).unwrap_or_default(),
                            labels,
                            windows: c.windows,
                        });
                    }
                }
                Task::Entities => {
                    let out = reply(&model, doc, None, receivers.next()).await?;
                    if let JobOutput::Entities(spans) = out {
                        result.entities = Some(
                            spans
                                .into_iter()
                                .map(|e| EntityOut {
                                    kind: e.label,
                                    text: e.text,
                                    start: e.start,
                                    end: e.end,
                                    score: e.score,
                                })
                                .collect(),
                        );
                    }
                }
                Task::ZeroShot => return Err(zero_shot_elsewhere()),
                Task::Stance => {
                    let mut stance = Vec::with_capacity(doc.targets.len());
                    for target in &doc.targets {
                        let out = reply(&model, doc, Some(target), receivers.next()).await?;
                        if let JobOutput::Labels(c) = out {
                            let labels = labels(c.labels, plan.top_k);
                            stance.push(StanceResult {
                                target: target.to_string(),
                                label: labels.first().map(|l| l.label.clone()).unwrap_or_default(),
                                labels,
                                windows: c.windows,
                                evidence: c
                                    .evidence
                                    .into_iter()
                                    .map(|e| EvidenceOut {
                                        start: e.start,
                                        end: e.end,
                                        text: e.text,
                                        label: e.label,
                                        score: e.score,
                                        weight: e.weight,
                                        related: e.related,
                                    })
                                    .collect(),
                                related: c.related,
                                target_truncated: c.target_truncated.map(|t| TargetCutOut {
                                    kept_tokens: t.kept,
                                    target_tokens: t.total,
                                }),
                            });
                        }
                    }
                    result.stance = Some(stance);
                }
            }
        }
    }
    Ok(AnalyzeResponse {
        documents: results,
        models: plan.model_choice(),
    })
}

fn zero_shot_elsewhere() -> ApiError {
    ApiError::unprocessable(
        "invalid_request",
        "zero-shot has its own route: POST /v1/zero-shot with `labels`",
    )
}

/// Checks zero-shot candidate labels (count, emptiness, repeats, length), naming the limit.
pub fn zero_shot_labels(labels: Vec<LabelIn>) -> Result<Vec<ZeroShotLabel>, ApiError> {
    let labels: Vec<ZeroShotLabel> = labels
        .into_iter()
        .map(|l| match l {
            LabelIn::Name(name) => ZeroShotLabel {
                descriptions: vec![name.clone()],
                name,
            },
            LabelIn::Described { name, descriptions } => ZeroShotLabel {
                descriptions: if descriptions.is_empty() {
                    vec![name.clone()]
                } else {
                    descriptions
                },
                name,
            },
        })
        .collect();
    naba_tasks::zero_shot::check_labels(&labels)
        .map_err(|e| ApiError::unprocessable("invalid_labels", format!("`labels`: {e}")))?;
    Ok(labels)
}

/// Queues one zero-shot job per document on the zero-shot model and awaits them in order.
pub async fn zero_shot(
    docs: Vec<Doc>,
    model: Arc<ModelHandle>,
    query: Arc<ZeroShotQuery>,
    top_k: Option<usize>,
) -> Result<ZeroShotResponse, ApiError> {
    let inputs: Vec<JobInput> = docs
        .iter()
        .map(|d| JobInput {
            text: Arc::clone(&d.text),
            target: None,
            key: BatchKey::default(),
            zero_shot: Some(Arc::clone(&query)),
        })
        .collect();
    let receivers = model
        .batcher
        .submit(inputs)
        .map_err(|e| submit_error(&model, e))?;
    let mut out = Vec::with_capacity(docs.len());
    for (doc, rx) in docs.iter().zip(receivers) {
        if let JobOutput::Labels(c) = reply(&model, doc, None, Some(rx)).await? {
            let labels = labels(c.labels, top_k);
            out.push(ZeroShotResult {
                id: doc.id.clone(),
                label: labels.first().map(|l| l.label.clone()).unwrap_or_default(),
                labels,
                multi_label: query.multi_label,
                windows: c.windows,
            });
        }
    }
    Ok(ZeroShotResponse {
        documents: out,
        model: model.name().to_string(),
        method: model
            .details
            .get()
            .and_then(|d| d.zero_shot_method)
            .unwrap_or(ZeroShotMethod::Embedding),
    })
}

async fn reply(
    model: &ModelHandle,
    doc: &Doc,
    target: Option<&Arc<str>>,
    rx: Option<oneshot::Receiver<JobResult>>,
) -> Result<JobOutput, ApiError> {
    let lost = || ApiError::internal(format!("model `{}` stopped before answering", model.name()));
    let result = rx.ok_or_else(lost)?.await.map_err(|_| lost())?;
    let place = match target {
        Some(t) => format!("document {}, target {:?}", doc.id, t.to_string()),
        None => format!("document {}", doc.id),
    };
    result.map_err(|e| match e {
        JobError::Rejected { code, message } => {
            ApiError::unprocessable(code, format!("{place}: {message}"))
        }
        JobError::Failed(message) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "model_error",
            format!("model `{}` failed on {place}: {message}", model.name()),
        ),
    })
}

fn labels(scores: Vec<naba_tasks::LabelScore>, top_k: Option<usize>) -> Vec<LabelOut> {
    scores
        .into_iter()
        .take(top_k.unwrap_or(usize::MAX))
        .map(|l| LabelOut {
            label: l.label,
            score: l.score,
        })
        .collect()
}

fn submit_error(model: &ModelHandle, e: SubmitError) -> ApiError {
    let name = model.name();
    match e {
        SubmitError::Full { retry_after } => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("model `{name}` has too many documents waiting; retry after {retry_after} s"),
        )
        .with_retry_after(retry_after),
        SubmitError::NotReady(Status::Loading) => {
            ApiError::unavailable("not_ready", format!("model `{name}` is still loading"))
                .with_retry_after(5)
        }
        SubmitError::NotReady(Status::Failed(e)) => ApiError::unavailable(
            "model_failed",
            format!("model `{name}` could not be loaded: {e}"),
        ),
        SubmitError::NotReady(_) | SubmitError::Closed => {
            ApiError::unavailable("shutting_down", "the server is shutting down")
                .with_retry_after(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, text: &str, targets: &[&str]) -> DocumentIn {
        DocumentIn {
            id: Some(DocId::Text(id.into())),
            text: text.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn limits_name_the_document_and_the_limit() {
        let limits = Limits {
            max_documents: 2,
            max_chars: 5,
            max_stance_pairs: 2,
            ..Limits::default()
        };
        let e = documents(None, Some(vec![doc("a", "x", &[]); 3]), None, &limits).unwrap_err();
        assert_eq!(e.code, "too_many_documents");
        assert!(e.message.contains("limit of 2"), "{}", e.message);
        let e = documents(None, Some(vec![doc("long", "abcdef", &[])]), None, &limits).unwrap_err();
        assert_eq!(e.code, "text_too_long");
        assert!(e.message.contains("\"long\"") && e.message.contains("limit of 5"));
        let e = documents(
            None,
            Some(vec![doc("a", "x", &["t1"]), doc("b", "y", &[])]),
            Some(vec!["t2".into()]),
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.code, "too_many_targets");
        let e = documents(Some("x".into()), Some(vec![]), None, &limits).unwrap_err();
        assert_eq!(e.code, "invalid_request");
        // Characters, not bytes: five Arabic letters fit in a limit of 5.
        assert!(documents(Some("سلامع".into()), None, None, &limits).is_ok());
    }

    #[test]
    fn targets_merge_without_repeats_and_ids_default_to_positions() {
        let docs = documents(
            None,
            Some(vec![
                doc("a", "x", &["t1", "t2"]),
                DocumentIn {
                    id: None,
                    text: "y".into(),
                    targets: vec![],
                },
            ]),
            Some(vec!["t2".into(), "t3".into()]),
            &Limits::default(),
        )
        .expect("valid");
        let t: Vec<&str> = docs[0].targets.iter().map(|t| &**t).collect();
        assert_eq!(t, vec!["t1", "t2", "t3"]);
        assert_eq!(docs[1].id, DocId::Number(1));
        assert_eq!(docs[1].targets.len(), 2);
    }

    #[test]
    fn options_parse() {
        let (k, key) = options(&Options {
            top_k: Some(2),
            aggregation: Some(Aggregation::First),
            decoding: Some(NerDecoding::Argmax),
            normalize: Some(Normalize::Items(vec!["alef".into(), "ya".into()])),
        })
        .expect("valid");
        assert_eq!(k, Some(2));
        assert_eq!(key.aggregation, AggregationStrategy::First);
        assert_eq!(key.decoding, Decoding::Argmax);
        let (_, default) = options(&Options::default()).expect("valid");
        assert_eq!(
            default.decoding,
            Decoding::Iob2,
            "IOB2 decoding unless asked otherwise"
        );
        assert!(key.normalize.normalize_alef && key.normalize.normalize_ya);
        assert!(!key.normalize.nfkc);
        let e = options(&Options {
            normalize: Some(Normalize::Text("vowels".into())),
            ..Options::default()
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_option");
        assert!(options(&Options {
            top_k: Some(0),
            ..Options::default()
        })
        .is_err());
    }
}
