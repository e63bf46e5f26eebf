//! Pipelines from text to labels: tokenise, window, run the encoder once, apply heads, and
//! turn scores into labels and entities with Hugging Face semantics; zero-shot labels, by
//! embeddings or by entailment ([`zero_shot`]); the gate that asks whether a long text
//! concerns a stance target before its stance is read ([`relatedness`]); and the TF-IDF member
//! a topic model averages its probabilities with ([`lexical`]).

pub mod aggregate;
pub mod lexical;
pub mod pipeline;
pub mod relatedness;
pub mod scores;
pub mod zero_shot;

pub use aggregate::{
    aggregate, aggregate_windows, aggregate_windows_decoded, merge_overlapping_entities,
    AggregateError, AggregationStrategy, Decoding, Entity, ParseAggregationStrategyError,
    ParseDecodingError, TokenScores, DEFAULT_IGNORE_LABELS,
};
pub use lexical::{Lexical, LexicalParams};
pub use pipeline::{
    ClassifyInput, ClassifyOptions, ClassifyOutput, EntitySpan, Evidence, NerOptions, NerOutput,
    PairSide, Pipeline, PipelineOptions, TargetCut, TaskError,
};
pub use relatedness::{Relatedness, RelatednessParams};
pub use scores::{
    numpy_sum, sigmoid, sigmoid_one, softmax, top_k, LabelScore, ParseScoreFunctionError,
    ScoreError, ScoreFunction,
};
pub use zero_shot::{Calibration, EmbeddingZeroShot, ZeroShotLabel, ZeroShotOutput};
