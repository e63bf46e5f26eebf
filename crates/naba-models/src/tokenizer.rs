//! The checkpoint's tokenizer: its `tokenizer.json` when it ships one, otherwise a WordPiece
//! tokenizer built from `vocab.txt` and `tokenizer_config.json` the way transformers converts a
//! slow BERT tokenizer (CAMeL Lab's Arabic models ship only those files).

use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, ModelWrapper, Tokenizer};

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    do_lower_case: Option<bool>,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: Option<bool>,
    unk_token: Option<SpecialToken>,
    sep_token: Option<SpecialToken>,
    cls_token: Option<SpecialToken>,
    pad_token: Option<SpecialToken>,
    mask_token: Option<SpecialToken>,
}

/// transformers writes special tokens either as strings or as `AddedToken` objects.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Plain(String),
    Added { content: String },
}

impl SpecialToken {
    fn text(opt: &Option<SpecialToken>, default: &str) -> String {
        match opt {
            Some(SpecialToken::Plain(s)) | Some(SpecialToken::Added { content: s }) => s.clone(),
            None => default.to_string(),
        }
    }
}

/// Loads the tokenizer of a Hugging Face-layout directory, with truncation and padding cleared:
/// naba windows long texts itself and never lets a tokenizer cut them silently.
///
/// A `tokenizer.json` is read once per process for each distinct content: the five default
/// models ship byte-identical copies of the base's 250k-piece tokenizer, which costs about
/// 0.7 s and 150 MB each to build, so models loaded side by side share one.
pub fn load(dir: &Path) -> Result<Arc<Tokenizer>> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return shared_from_json(&json);
    }
    Ok(Arc::new(build(dir)?))
}

fn shared_from_json(json: &Path) -> Result<Arc<Tokenizer>> {
    use sha2::{Digest, Sha256};
    static LOADED: Mutex<Vec<(String, Weak<Tokenizer>)>> = Mutex::new(Vec::new());
    let bytes = std::fs::read(json).map_err(|e| ModelError::file(json, e))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    crate::shared::shared(&LOADED, &digest, || {
        let mut tok = Tokenizer::from_bytes(&bytes)
            .map_err(|e| ModelError::file(json, format!("cannot read tokenizer: {e}")))?;
        clear_limits(&mut tok)?;
        Ok(Arc::new(tok))
    })
}

fn clear_limits(tok: &mut Tokenizer) -> Result<()> {
    tok.with_truncation(None)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    tok.with_padding(None);
    Ok(())
}

fn build(dir: &Path) -> Result<Tokenizer> {
    let mut tok = if dir.join("vocab.txt").is_file() {
        from_vocab(dir)?
    } else {
        return Err(ModelError::Tokenizer(format!(
            "{} has neither tokenizer.json nor vocab.txt; add the checkpoint's tokenizer files",
            dir.display()
        )));
    };
    clear_limits(&mut tok)?;
    Ok(tok)
}

fn from_vocab(dir: &Path) -> Result<Tokenizer> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg: TokenizerConfig = if cfg_path.is_file() {
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::file(&cfg_path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::file(&cfg_path, e))?
    } else {
        TokenizerConfig::default()
    };
    let vocab = dir.join("vocab.txt");
    let unk = SpecialToken::text(&cfg.unk_token, "[UNK]");
    let sep = SpecialToken::text(&cfg.sep_token, "[SEP]");
    let cls = SpecialToken::text(&cfg.cls_token, "[CLS]");
    let pad = SpecialToken::text(&cfg.pad_token, "[PAD]");
    let mask = SpecialToken::text(&cfg.mask_token, "[MASK]");
    let wordpiece = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk.clone())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| ModelError::file(&vocab, format!("cannot build WordPiece: {e}")))?;
    let mut tok = Tokenizer::new(wordpiece);
    // BertTokenizer lower-cases unless told otherwise, and strips accents whenever it
    // lower-cases unless `strip_accents` says otherwise.
    let lowercase = cfg.do_lower_case.unwrap_or(true);
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        cfg.tokenize_chinese_chars.unwrap_or(true),
        cfg.strip_accents,
        lowercase,
    )));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            ModelError::file(
                &vocab,
                format!("special token `{t}` is not in the vocabulary"),
            )
        })
    };
    let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
    let template = TemplateProcessing::builder()
        .try_single(format!("{cls}:0 $A:0 {sep}:0"))
        .and_then(|b| b.try_pair(format!("{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1")))
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?
        .special_tokens(vec![(cls.clone(), cls_id), (sep.clone(), sep_id)])
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    tok.with_post_processor(Some(template));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let specials: Vec<AddedToken> = [pad, unk, cls, sep, mask]
        .into_iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// The prefix that marks a piece continuing a word (`##` for WordPiece), which decides how
/// transformers tells sub-words apart; `None` for Unigram and byte-level models.
pub fn continuing_subword_prefix(tok: &Tokenizer) -> Option<String> {
    match tok.get_model() {
        ModelWrapper::WordPiece(wp) => Some(wp.continuing_subword_prefix.clone()),
        ModelWrapper::BPE(bpe) => bpe.continuing_subword_prefix.clone(),
        _ => None,
    }
}

/// Token id used for padding: the tokenizer's `<pad>`/`[PAD]` when present.
pub fn pad_id(tok: &Tokenizer, fallback: u32) -> u32 {
    ["<pad>", "[PAD]"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .unwrap_or(fallback)
}
