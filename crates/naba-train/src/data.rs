//! Training examples: corpora read with naba-eval's readers, tokenised the way serving will
//! tokenise them (prefix, then the words joined by spaces, special tokens added), with labels
//! aligned to sub-words.
//!
//! Token classification labels the first sub-word of every word and ignores the rest (or gives
//! continuations the word's `I-` tag with `label_all_subwords`); a sentence longer than the
//! window is cut at word boundaries into several examples.

use crate::recipe::{Recipe, Task};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use naba_eval::{ClassificationCorpus, ColumnOptions, ConllOptions, NerSentence};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Label id of positions the loss ignores.
pub const IGNORE: i64 = -100;

/// One window the model sees.
#[derive(Debug, Clone)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Token classification: one per position (`IGNORE` where no loss applies).
    /// Classification: one element.
    pub labels: Vec<i64>,
    /// Token classification: for each position, the word (index in its sentence) whose first
    /// sub-word it is.
    pub first_of_word: Vec<Option<usize>>,
    /// Index of the sentence or text in its split.
    pub item: usize,
}

/// A split ready to train or score on.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub examples: Vec<Example>,
    /// Gold tags per sentence (token classification) or one gold label per text.
    pub gold: Vec<Vec<String>>,
    /// Words per sentence (token classification).
    pub words: Vec<usize>,
}

impl Split {
    pub fn tokens(&self) -> usize {
        self.examples.iter().map(|e| e.ids.len()).sum()
    }
}

/// Reads a CoNLL file with naba-eval's reader.
pub fn read_conll_sentences(path: &Path) -> Result<Vec<NerSentence>> {
    let corpus = naba_eval::read_conll(path, &ConllOptions::default()).with_context(|| {
        format!(
            "cannot read the CoNLL file {} (paths in a recipe are relative to the current directory)",
            path.display()
        )
    })?;
    if corpus.sentences.is_empty() {
        bail!("{} holds no sentences", path.display());
    }
    Ok(corpus.sentences)
}

/// Splits `n` items into (train, dev) index lists: a seeded `fraction` goes to dev.
pub fn carve_dev(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::derive(seed, 1, 0).shuffle(&mut idx);
    let n_dev = ((n as f64) * fraction).round() as usize;
    let mut dev = idx[..n_dev].to_vec();
    let mut train = idx[n_dev..].to_vec();
    dev.sort_unstable();
    train.sort_unstable();
    (train, dev)
}

/// Sentences per block when a packed dev split is carved (`data.pack_sentences`) and
/// `data.dev_block` does not say otherwise.
pub const DEV_BLOCK: usize = 10;

/// Like [`carve_dev`], but dev takes whole blocks of `block` consecutive items (the last block
/// may be shorter), so dev sentences keep their neighbours. About `fraction` of the blocks, at
/// least one, go to dev.
pub fn carve_dev_blocks(
    n: usize,
    fraction: f64,
    seed: u64,
    block: usize,
) -> (Vec<usize>, Vec<usize>) {
    let block = block.max(1);
    let mut blocks: Vec<usize> = (0..n.div_ceil(block)).collect();
    Rng::derive(seed, 1, 0).shuffle(&mut blocks);
    let n_dev = (((blocks.len() as f64) * fraction).round() as usize).clamp(1, blocks.len());
    let mut in_dev = vec![false; n];
    for &b in &blocks[..n_dev.min(blocks.len())] {
        for flag in &mut in_dev[b * block..((b + 1) * block).min(n)] {
            *flag = true;
        }
    }
    (0..n).partition(|&i| !in_dev[i])
}

/// Joins runs of consecutive items of `sentences` (given by ascending `indices` into it) into
/// packed sentences of at most `max_len` sub-words with the special tokens: a new pack starts at
/// a gap in the indices or when the next sentence would not fit. A sentence too long for the
/// window stays alone (and is cut by [`ner_split`]). The pack keeps the first sentence's id and
/// line; its tokens, tags and lines are the members' in order.
pub fn pack_sentences(
    sentences: &[NerSentence],
    indices: &[usize],
    tok: &Tokenizer,
    max_len: usize,
    prefix: &str,
) -> Result<Vec<NerSentence>> {
    // The specials and the prefix are counted once per pack, not once per sentence.
    let overhead = 2 + prefix_pieces(tok, prefix)?;
    let mut packs: Vec<NerSentence> = Vec::new();
    let mut used = 0usize;
    let mut last: Option<usize> = None;
    for &i in indices {
        let s = sentences
            .get(i)
            .with_context(|| format!("sentence index {i} is out of range"))?;
        let (ids, _, _) = encode_words(tok, &s.tokens, 0, s.tokens.len(), prefix, false)?;
        let own = ids.len().saturating_sub(overhead);
        let joins = last.is_some_and(|l| l + 1 == i) && used + own <= max_len;
        match packs.last_mut() {
            Some(pack) if joins => {
                pack.tokens.extend(s.tokens.iter().cloned());
                pack.tags.extend(s.tags.iter().cloned());
                pack.token_lines.extend(s.token_lines.iter().copied());
                pack.raw_lines.extend(s.raw_lines.iter().cloned());
                used += own;
            }
            _ => {
                packs.push(s.clone());
                used = ids.len();
            }
        }
        last = Some(i);
    }
    Ok(packs)
}

/// Sub-words the prefix alone takes (0 without one).
fn prefix_pieces(tok: &Tokenizer, prefix: &str) -> Result<usize> {
    if prefix.is_empty() {
        return Ok(0);
    }
    let enc = tok
        .encode_char_offsets(prefix, false)
        .map_err(|e| anyhow::anyhow!("the tokenizer failed on the prefix `{prefix}`: {e}"))?;
    Ok(enc.len())
}

/// Turns NER sentences into windows.
pub fn ner_split(
    sentences: &[&NerSentence],
    tok: &Tokenizer,
    labels: &[String],
    max_len: usize,
    prefix: &str,
    label_all: bool,
    lone_space: bool,
) -> Result<Split> {
    let label_id: HashMap<&str, i64> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as i64))
        .collect();
    let mut split = Split::default();
    for (si, s) in sentences.iter().enumerate() {
        let mut tag_ids = Vec::with_capacity(s.tags.len());
        for (t, tag) in s.tags.iter().enumerate() {
            let id = label_id.get(tag.as_str()).copied().ok_or_else(|| {
                anyhow::anyhow!(
                    "line {}: tag `{tag}` is not in the recipe's data.labels {labels:?}",
                    s.token_lines.get(t).copied().unwrap_or(s.line)
                )
            })?;
            let inside = tag
                .strip_prefix("B-")
                .map(|ty| format!("I-{ty}"))
                .unwrap_or_else(|| tag.clone());
            let inside = label_id.get(inside.as_str()).copied().unwrap_or(IGNORE);
            let cont = if label_all { inside } else { IGNORE };
            tag_ids.push(WordTags {
                first: id,
                cont,
                inside,
            });
        }
        split.gold.push(s.tags.clone());
        split.words.push(s.tokens.len());
        // Whole sentence first; cut at word boundaries only when it does not fit.
        let whole = encode_words(tok, &s.tokens, 0, s.tokens.len(), prefix, lone_space)?;
        if whole.0.len() <= max_len {
            split.examples.push(make_example(whole, &tag_ids, si));
            continue;
        }
        let mut per_word = vec![0usize; s.tokens.len()];
        for w in whole.1.iter().flatten() {
            per_word[*w] += 1;
        }
        let overhead = whole.0.len() - per_word.iter().sum::<usize>() + 2;
        let budget = max_len.saturating_sub(overhead).max(1);
        let mut start = 0;
        while start < s.tokens.len() {
            let mut end = start;
            let mut used = 0;
            while end < s.tokens.len() && (end == start || used + per_word[end] <= budget) {
                used += per_word[end];
                end += 1;
            }
            let (mut ids, mut words, mut lone) =
                encode_words(tok, &s.tokens, start, end, prefix, lone_space)?;
            if ids.len() > max_len {
                // One word longer than the window: keep its head and the closing token.
                let last = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(last);
                words.truncate(max_len - 1);
                words.push(None);
                lone.truncate(max_len - 1);
                lone.push(false);
            }
            split
                .examples
                .push(make_example((ids, words, lone), &tag_ids, si));
            start = end;
        }
    }
    Ok(split)
}

/// A word's label ids: its tag, what its continuation pieces learn, and its inside tag.
struct WordTags {
    first: i64,
    cont: i64,
    inside: i64,
}

type Encoded = (Vec<u32>, Vec<Option<usize>>, Vec<bool>);

fn make_example(enc: Encoded, tags: &[WordTags], item: usize) -> Example {
    let (ids, words, lone) = enc;
    let mut labels = Vec::with_capacity(ids.len());
    let mut first = Vec::with_capacity(ids.len());
    let mut prev: Option<usize> = None;
    let mut after_lone = false;
    for (i, w) in words.iter().enumerate() {
        match w {
            Some(w) if prev != Some(*w) => {
                labels.push(tags[*w].first);
                first.push(Some(*w));
                after_lone = lone[i];
            }
            Some(w) if after_lone => {
                // The piece after a bare `▁` starts a word for the pipeline: it continues
                // the entity the bare piece began.
                labels.push(tags[*w].inside);
                first.push(None);
                after_lone = false;
            }
            Some(w) => {
                labels.push(tags[*w].cont);
                first.push(None);
            }
            None => {
                labels.push(IGNORE);
                first.push(None);
            }
        }
        if w.is_some() {
            prev = *w;
        }
    }
    Example {
        ids,
        labels,
        first_of_word: first,
        item,
    }
}

/// Encodes `prefix + words[start..end].join(" ")` and says, for every sub-word, which word
/// (index in the whole sentence) it belongs to, and whether it is a bare `▁` piece given to the
/// word after it (only with `lone_space`; otherwise such a piece belongs to no word).
pub fn encode_words(
    tok: &Tokenizer,
    words: &[String],
    start: usize,
    end: usize,
    prefix: &str,
    lone_space: bool,
) -> Result<Encoded> {
    let mut text = String::from(prefix);
    let mut owner: Vec<Option<usize>> = vec![None; prefix.chars().count()];
    for (i, w) in words[start..end].iter().enumerate() {
        if i > 0 {
            text.push(' ');
            owner.push(None);
        }
        text.push_str(w);
        owner.extend(std::iter::repeat_n(Some(start + i), w.chars().count()));
    }
    let enc = tok
        .encode_char_offsets(text.as_str(), true)
        .map_err(|e| anyhow::anyhow!("the tokenizer failed on `{text}`: {e}"))?;
    let special = enc.get_special_tokens_mask();
    let mut out = Vec::with_capacity(enc.len());
    for (i, &(s, e)) in enc.get_offsets().iter().enumerate() {
        if special[i] == 1 {
            out.push(None);
            continue;
        }
        let w = (s..e.max(s + 1)).find_map(|c| owner.get(c).copied().flatten());
        out.push(w);
    }
    let mut lone = vec![false; out.len()];
    if lone_space {
        let tokens = enc.get_tokens();
        for i in 0..out.len().saturating_sub(1) {
            if out[i].is_none() && special[i] == 0 && tokens[i] == "\u{2581}" {
                if let Some(next) = out[i + 1] {
                    out[i] = Some(next);
                    lone[i] = true;
                }
            }
        }
    }
    Ok((enc.get_ids().to_vec(), out, lone))
}

/// Classification examples (`Task::SequenceClassification` / `PairClassification`) from the
/// rows `indices` (all when `None`) of a corpus read by [`read_classification`] from `path`.
pub fn classification_split(
    corpus: &ClassificationCorpus,
    path: &Path,
    recipe: &Recipe,
    tok: &Tokenizer,
    indices: Option<&[usize]>,
) -> Result<Split> {
    let d = &recipe.data;
    let label_id: HashMap<&str, i64> = d
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as i64))
        .collect();
    let mut tok = tok.clone();
    tok.with_truncation(Some(TruncationParams {
        max_length: d.max_length,
        strategy: TruncationStrategy::OnlySecond,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut single = tok.clone();
    single
        .with_truncation(Some(TruncationParams {
            max_length: d.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let all: Vec<usize> = (0..corpus.examples.len()).collect();
    let indices = indices.unwrap_or(&all);
    let mut split = Split::default();
    for (item, &i) in indices.iter().enumerate() {
        let ex = corpus
            .examples
            .get(i)
            .context("dev split index out of range")?;
        let id = *label_id.get(ex.label.as_str()).ok_or_else(|| {
            anyhow::anyhow!(
                "{} line {}: label `{}` is not in data.labels {:?}",
                path.display(),
                ex.line,
                ex.label,
                d.labels
            )
        })?;
        let body = format!("{}{}", d.prefix, ex.text);
        let enc = match &ex.target {
            Some(t) => tok.encode((format!("{}{t}", d.prefix), body), true),
            None => single.encode(body, true),
        }
        .map_err(|e| anyhow::anyhow!("the tokenizer failed: {e}"))?;
        split.examples.push(Example {
            ids: enc.get_ids().to_vec(),
            labels: vec![id],
            first_of_word: Vec::new(),
            item,
        });
        split.gold.push(vec![ex.label.clone()]);
    }
    Ok(split)
}

/// Reads a classification file with the recipe's columns, keeping the rows `filter` names.
/// Rows the reader skips (empty text or label) are left out of training, as they are of
/// scoring.
pub fn read_classification(
    path: &Path,
    filter: &BTreeMap<String, String>,
    recipe: &Recipe,
) -> Result<ClassificationCorpus> {
    let d = &recipe.data;
    let text = d
        .text_column
        .clone()
        .context("classification recipes need data.text_column")?;
    let label = d
        .label_column
        .clone()
        .context("classification recipes need data.label_column")?;
    let mut opts = ColumnOptions::new(text, label);
    opts.text_fallback = d.text_fallback.clone();
    opts.filter = filter.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if recipe.task == Task::PairClassification {
        opts.target = Some(
            d.target_column
                .clone()
                .context("pair classification needs data.target_column")?,
        );
    }
    let corpus = ClassificationCorpus::read(path, None, &opts)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if corpus.examples.is_empty() {
        bail!(
            "{} holds no usable rows for columns {:?}/{:?} with filter {:?}",
            path.display(),
            d.text_column,
            d.label_column,
            filter
        );
    }
    Ok(corpus)
}
