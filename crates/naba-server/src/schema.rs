//! The JSON the API reads and writes. These types are the contract: the OpenAPI document is
//! derived from them, and the handlers convert to and from the pipeline's types.

use crate::config::Task;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/analyze`: one text, or several documents, for any of topic, entities and stance.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "documents": [{"id": "a1", "text": "التقى الرئيس بوتين نظيره الأمريكي في جنيف.", "targets": ["روسيا"]}],
    "tasks": ["topic", "entities", "stance"],
    "options": {"top_k": 3, "aggregation": "simple"}
}))]
pub struct AnalyzeRequest {
    /// One text to analyse; its result has id 0. Send this or `documents`, not both.
    pub text: Option<String>,
    pub documents: Option<Vec<DocumentIn>>,
    /// What to compute. Default: topic and entities when the server has those models, and
    /// stance when targets are given.
    pub tasks: Option<Vec<Task>>,
    /// Stance targets read against every document (after each document's own `targets`).
    pub stance_targets: Option<Vec<String>>,
    #[serde(default)]
    pub options: Options,
    /// Which model answers each task, by name (see `GET /v1/models`); default models otherwise.
    #[serde(default)]
    pub models: ModelChoice,
}

/// `POST /v1/topic`, `/v1/entities`, `/v1/stance`: one task.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// One text; its result has id 0. Send this or `documents`, not both.
    pub text: Option<String>,
    pub documents: Option<Vec<DocumentIn>>,
    /// Stance targets for every document (`/v1/stance` only).
    pub stance_targets: Option<Vec<String>>,
    #[serde(default)]
    pub options: Options,
    /// The model's name; the task's default when absent.
    pub model: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// Echoed in the result; the document's position when absent.
    pub id: Option<DocId>,
    pub text: String,
    /// Stance targets for this document (a claim, a topic, an entity).
    #[serde(default)]
    pub targets: Vec<String>,
}

/// A document id: a string or an integer, echoed as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DocId {
    Text(String),
    Number(i64),
}

impl std::fmt::Display for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocId::Text(s) => write!(f, "{s:?}"),
            DocId::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Labels to return for topic and stance, best first (at least 1); default all.
    pub top_k: Option<usize>,
    /// How NER sub-word predictions become entities; default `first` (whole words, each
    /// labelled by its first sub-word, as naba's models are trained).
    pub aggregation: Option<Aggregation>,
    /// How NER labels are chosen before grouping; default `iob2` (the most probable label
    /// sequence in which every I-x follows B-x or I-x), or `argmax` (each word's best label,
    /// as transformers does).
    pub decoding: Option<NerDecoding>,
    /// Arabic normalisation before the model: `"all"`, `"none"` (default), a comma list, or a
    /// list of `diacritics`, `tatweel`, `alef`, `ya`, `ta-marbuta`, `digits`, `nfkc`. Entity
    /// offsets always refer to the text you sent.
    pub normalize: Option<Normalize>,
}

/// transformers' `aggregation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// One entity per token, labels as predicted (`B-PERS`).
    None,
    /// Adjacent tokens with the same type form one entity.
    Simple,
    /// As simple; each word takes its first token's label.
    First,
    /// As simple; each word takes the best of its tokens' mean scores.
    Average,
    /// As simple; each word takes its most confident token's label.
    Max,
}

/// How NER labels are chosen before grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NerDecoding {
    /// Each word's best label.
    Argmax,
    /// The best label sequence that is valid IOB2.
    Iob2,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Normalize {
    Text(String),
    Items(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stance: Option<String>,
}

/// Results in the order the documents were sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnalyzeResponse {
    pub documents: Vec<DocumentResult>,
    /// The model that answered each task.
    pub models: ModelChoice,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DocumentResult {
    pub id: DocId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<TopicResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<EntityOut>>,
    /// One result per target, in the order the targets were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stance: Option<Vec<StanceResult>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopicResult {
    /// The best label.
    pub label: String,
    /// Labels with scores, best first (`top_k` of them when asked).
    pub labels: Vec<LabelOut>,
    /// Windows the text was read in (long texts are never truncated).
    pub windows: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StanceResult {
    pub target: String,
    pub label: String,
    pub labels: Vec<LabelOut>,
    pub windows: usize,
    /// The passages the decision rests on, heaviest first: the whole text when it fits one
    /// window, else the sentences most likely to take a side toward the target.
    pub evidence: Vec<EvidenceOut>,
    /// A text read sentence by sentence, with a stance model that has a relatedness gate: the
    /// highest probability that one of its sentences concerns the target. Under 0.5 the text is
    /// judged not to concern the target and the label is the model's "neither" (`other`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<f32>,
    /// Present when the target was too long to leave the text room in the model's window:
    /// only its first `kept_tokens` sub-words were read (half the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_truncated: Option<TargetCutOut>,
}

/// How a long target was shortened.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetCutOut {
    pub kept_tokens: usize,
    pub target_tokens: usize,
}

/// A passage of the document; `start`/`end` are Unicode character offsets into the text sent
/// and `text` is exactly that slice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvidenceOut {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The passage's own best label and its score.
    pub label: String,
    pub score: f32,
    /// Its share of the decision.
    pub weight: f32,
    /// With a relatedness gate: the probability that this passage concerns the target; only
    /// passages at 0.5 or more vote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<f32>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelOut {
    pub label: String,
    pub score: f32,
}

/// A named entity. `start` and `end` count Unicode characters (code points, not bytes, not
/// UTF-16 units) in the text sent, and `text` is exactly that slice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntityOut {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelInfo>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    pub name: String,
    pub task: Task,
    /// Whether requests that name no model for this task get this one.
    pub default: bool,
    /// `loading`, `ready`, `failed` or `stopped`.
    pub status: String,
    /// The directory, hub id or name it was configured with.
    pub path: String,
    /// Where it was loaded from, in words (once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_encoder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tokens per window, special tokens included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_tokens: Option<usize>,
    /// The model card file that was read, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// Topic and stance: the share of the TF-IDF member (`lexical.json` beside the model)
    /// averaged with the encoder's probabilities, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_mix: Option<f32>,
    /// What the encoder's matrix products multiply in: `int8` (AVX512-VNNI, AVX-VNNI or AVX2),
    /// `bf16` (AVX512-BF16) or `f32`; absent on the reference engine (GPU, 4-bit weights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<String>,
    /// Metrics as the model card states them (free-form).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Documents waiting for this model now.
    pub queue_depth: usize,
    /// Zero-shot models: `embedding` or `entailment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot_method: Option<ZeroShotMethod>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok` when the process answers.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`.
    pub status: String,
    pub models: Vec<ModelStatus>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelStatus {
    pub name: String,
    pub status: String,
}

/// `POST /v1/zero-shot`: labels the client names, scored by E5 embeddings of the text and of
/// each label's descriptions; nothing trained.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotRequest {
    /// One text; its result has id 0. Send this or `documents`, not both.
    pub text: Option<String>,
    /// Several documents (their `targets` are not read).
    pub documents: Option<Vec<DocumentIn>>,
    /// Candidate labels (1 to 100): names, or `{"name", "descriptions"}` to match a label by
    /// one or more descriptions.
    pub labels: Vec<LabelIn>,
    /// Score each label on its own (any number may apply) instead of one softmax over them.
    #[serde(default)]
    pub multi_label: bool,
    /// Labels to return, best first (at least 1); default all.
    pub top_k: Option<usize>,
    /// `embedding` or `entailment`: picks the server's zero-shot model of that method (see
    /// `/v1/models`); default: the default zero-shot model, whichever it is.
    pub method: Option<ZeroShotMethod>,
    /// Entailment: the hypothesis with `{}` where the label goes; default `هذا النص عن {}.`
    /// for Arabic labels, else `This example is {}.`.
    pub hypothesis_template: Option<String>,
    /// The zero-shot model's name; the server's default when absent.
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZeroShotMethod {
    Embedding,
    Entailment,
}

impl ZeroShotMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ZeroShotMethod::Embedding => "embedding",
            ZeroShotMethod::Entailment => "entailment",
        }
    }
}

/// A candidate label: its name, or its name with descriptions to match it by.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LabelIn {
    Name(String),
    Described {
        name: String,
        #[serde(default)]
        descriptions: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZeroShotResponse {
    pub documents: Vec<ZeroShotResult>,
    /// The model that answered.
    pub model: String,
    pub method: ZeroShotMethod,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZeroShotResult {
    pub id: DocId,
    /// The best label.
    pub label: String,
    /// Labels with calibrated scores, best first: with `multi_label` false they sum to 1
    /// (softmax of similarity / 0.008); with it true each is sigmoid((similarity - 0.863) /
    /// 0.016), fitted on the ASND dev split.
    pub labels: Vec<LabelOut>,
    pub multi_label: bool,
    /// Windows the text was read in (long texts are never truncated; an entailment model reads
    /// one window, the premise cut to fit, as transformers does).
    pub windows: usize,
}
