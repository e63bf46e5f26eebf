//! Arabic text handling for naba, as pure functions.
//!
//! This crate knows nothing of candle, tokenizers or HTTP: it takes `&str` and plain
//! numbers and returns plain data, so every piece can be unit- and property-tested
//! without a model, and the model crates can stay focused on tensors.
//!
//! # Offsets
//!
//! All offsets produced or accepted by this crate are **Unicode scalar (`char`)
//! offsets**, never byte offsets, because every offset a user of naba sees is a char
//! offset into the text they sent (the JSON/CLI boundary has no notion of UTF-8
//! bytes). Where another library hands out byte offsets (tokenizers do, in some APIs),
//! convert them once with [`offsets::CharIndex`].
//!
//! # Modules
//!
//! * [`mod@normalize`]: optional Arabic orthographic normalization that keeps a map back
//!   to the original text, so predictions made on normalized text can be reported on
//!   the user's text.
//! * [`offsets`]: byte ↔ char offset conversion.
//! * [`sentences`]: sentence splitting tuned for scraped Arabic news.
//! * [`windows`]: splitting long token sequences into overlapping windows and
//!   deciding which window's prediction to keep for each token.
#![warn(missing_docs)]

pub mod normalize;
pub mod offsets;
pub mod sentences;
pub mod windows;

pub use normalize::{normalize, NormalizeOptions, Normalized};
pub use offsets::CharIndex;
pub use sentences::split_sentences;
pub use windows::{assign_tokens, token_windows};

/// Everything that can go wrong in this crate.
///
/// Each message says what was wrong and what to do about it, because these errors
/// usually end up verbatim in a CLI or HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A normalization option list named something this crate does not know.
    #[error(
        "unknown normalization option `{item}`; use a comma-separated list of \
         {valid}, or `all` / `none`"
    )]
    UnknownNormalizeOption {
        /// The offending item, trimmed, as the user wrote it.
        item: String,
        /// The valid item names, comma-separated, for the message.
        valid: &'static str,
    },

    /// Windows were requested with room for no tokens at all.
    #[error("max_tokens must be at least 1 to split a token sequence into windows")]
    ZeroMaxTokens,

    /// The overlap between windows would leave no room to advance.
    #[error(
        "stride ({stride}) must be smaller than max_tokens ({max_tokens}): stride is \
         the number of tokens shared by consecutive windows, so each window must \
         still add at least one new token; lower the stride or raise max_tokens"
    )]
    StrideTooLarge {
        /// Requested overlap in tokens.
        stride: usize,
        /// Requested window size in tokens.
        max_tokens: usize,
    },

    /// A byte offset lies past the end of the text.
    #[error(
        "byte offset {offset} is past the end of the text ({len} bytes); the offset \
         probably refers to a different text than the one indexed"
    )]
    ByteOffsetOutOfRange {
        /// The offending byte offset.
        offset: usize,
        /// Length of the indexed text in bytes.
        len: usize,
    },

    /// A byte offset falls inside a multi-byte UTF-8 character.
    #[error(
        "byte offset {offset} is not on a character boundary (it falls inside \
         character {char_index}); use a covering conversion if the offsets come from \
         a byte-level tokenizer"
    )]
    NotCharBoundary {
        /// The offending byte offset.
        offset: usize,
        /// Char index of the character the offset falls inside.
        char_index: usize,
    },

    /// A range whose start lies after its end.
    #[error("range {start}..{end} is reversed (start after end); pass start <= end")]
    ReversedRange {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
    },

    /// A char offset lies past the end of the text.
    #[error(
        "char offset {offset} is past the end of the text ({len} chars); the offset \
         probably refers to a different text than the one indexed"
    )]
    CharOffsetOutOfRange {
        /// The offending char offset.
        offset: usize,
        /// Length of the indexed text in chars.
        len: usize,
    },
}
