//! # naba-train
//!
//! Fine-tunes naba's encoders with candle's autograd, on CPU (or a GPU build of candle): a
//! [`Recipe`] (TOML) says the task, base encoder, data, labels, which layers train and the
//! optimiser; [`train`] runs it with dev evaluation every epoch (naba-eval's metrics), best
//! checkpoint keeping, early stopping, resumable state and a progress bar, and writes the
//! trained tensors as *parts* over the pinned base plus a model card; [`assemble`] turns parts
//! into a complete Hugging Face-layout checkpoint that `naba` and transformers load.
//!
//! Embeddings and the lower layers stay frozen: their output is computed once per example and
//! cached, so an epoch costs only the trained top layers' forward and backward.
//!
//! It must not know about HTTP, serving, or how predictions are post-processed for users (that
//! is naba-tasks); it reads corpora only through naba-eval's readers.

pub mod assemble;
pub mod bench;
pub mod card;
pub mod checkpoint;
pub mod data;
pub mod fast;
pub mod loss;
pub mod net;
pub mod optim;
pub mod recipe;
pub mod rng;
pub mod trainer;
mod view;

pub use assemble::{assemble_default_models, list_default_models, DefaultModel};
pub use checkpoint::{assemble, PartsManifest};
pub use recipe::{Recipe, Task};
pub use trainer::{train, Stop, TrainOptions, TrainOutcome};
