//! The training loop: data, the frozen-layer cache, micro-batches with gradient accumulation,
//! clipping, AdamW with warm-up and decay, dev evaluation every epoch, best-checkpoint keeping,
//! early stopping, resumable state, and the final assembly and test scoring.

use crate::checkpoint::{self, EpochRecord, PartsManifest, StateMeta};
use crate::data::{self, Example, Split};
use crate::fast;
use crate::loss::cross_entropy;
use crate::net::{HeadType, Mode, TrainNet, Trainable};
use crate::optim::{clip_grad_norm, schedule, AdamW, AdamWConfig};
use crate::recipe::{Recipe, Task};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// File names inside the output directory.
pub const STATE_FILE: &str = "state.safetensors";
pub const BEST_PARTS_DIR: &str = "best-parts";
pub const MODEL_DIR: &str = "model";

/// How to run (what the recipe does not say).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub out: PathBuf,
    /// Continue from `out/state.safetensors`.
    pub resume: bool,
    /// Stop (saving the state) after this many optimiser steps in total.
    pub max_steps: Option<usize>,
    /// Show a progress bar (a line every few seconds when stderr is not a terminal).
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop at the next step boundary, saving the state.
    pub stop: Option<Arc<AtomicBool>>,
    /// The command line, for the model card.
    pub command: String,
    /// Assemble the full checkpoint in `out/model` and score the test files at the end.
    pub finish: bool,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Completed,
    EarlyStopped,
    MaxSteps,
    Interrupted,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub stop: Stop,
    pub step: usize,
    pub meta: StateMeta,
    /// Scores of the test files with the best checkpoint (strict micro-F1 or macro-F1), by path.
    pub tests: Vec<(String, Score)>,
    pub best_dev_rounded: Option<Score>,
    pub cache_seconds: f64,
    pub cache_tokens_per_second: f64,
    /// The engine that ran the trained layers: `reference`, or `fast, f32 products` /
    /// `fast, bf16 products`.
    pub engine: String,
}

/// A split's score: the headline and its details.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Score {
    /// Strict IOB2 entity micro-F1 (NER) or macro-F1 (classification).
    pub main: f64,
    pub precision: f64,
    pub recall: f64,
    /// Per type (NER) or label.
    pub detail: BTreeMap<String, f64>,
    /// seqeval's default (lenient) micro-F1 for NER, accuracy for classification.
    pub secondary: f64,
}

struct Prepared {
    split: Split,
    cache: Vec<Vec<f32>>,
}

/// Runs a recipe.
pub fn train(recipe: &Recipe, opts: &TrainOptions) -> Result<TrainOutcome> {
    recipe.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create the output directory {}", opts.out.display()))?;
    let recipe_toml = recipe.to_toml()?;
    let state_path = opts.out.join(STATE_FILE);
    if state_path.is_file() && !opts.resume {
        bail!(
            "{} already holds a training state: pass --resume to continue it, or another --out",
            opts.out.display()
        );
    }
    let base = checkpoint::open_base(&recipe.base, true)?;
    let tokenizer = naba_models::tokenizer::load(&base.dir)?;
    let head_type = match recipe.task {
        Task::TokenClassification => HeadType::Token,
        _ => HeadType::Sequence,
    };
    if head_type == HeadType::Sequence
        && base.config.architecture == naba_models::Architecture::XlmRoberta
    {
        bail!("sequence heads are built BERT-style (pooler + classifier); an XLM-R base is not supported for classification yet");
    }
    let labels = recipe.data.labels.clone();
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        head_type,
        labels.len(),
        Trainable {
            layers: recipe.model.train_layers,
            lora_rank: recipe.model.lora_rank,
        },
        recipe.seed,
    )?;
    let max_len = recipe
        .data
        .max_length
        .min(base.config.max_position_embeddings);
    let (train_split, dev_split) = load_splits(recipe, &tokenizer, max_len)?;
    let progress = opts.progress;
    let say = |m: &str| {
        if progress {
            eprintln!("{m}");
        }
    };
    let how = match recipe.model.lora_rank {
        0 => String::new(),
        r => format!(" through rank-{r} adapters"),
    };
    let fast_engine = fast::chosen(recipe.optim.engine, &net).unwrap_or_else(|why| {
        say(&format!("training through candle's autograd: {why}"));
        false
    });
    // The fast engine's products: None trains through the reference engine.
    let products = fast_engine.then(|| recipe.optim.precision.resolve());
    let engine = match products {
        Some(p) => format!("fast, {} products", p.name()),
        None => "reference".to_string(),
    };
    let how = match products {
        Some(p) => format!("{how}, fast engine ({} products)", p.name()),
        None => format!("{how}, reference engine"),
    };
    say(&format!(
        "train: {} examples ({} sub-words), dev: {} examples ({} sub-words); {} of {} layers train{how}",
        train_split.examples.len(),
        train_split.tokens(),
        dev_split.examples.len(),
        dev_split.tokens(),
        recipe.model.train_layers,
        net.num_layers()
    ));
    let t_cache = Instant::now();
    let cache_dir = opts.out.join("cache");
    let train = Prepared {
        cache: cached_frozen(&net, &train_split.examples, &base, &cache_dir)?,
        split: train_split,
    };
    let dev = Prepared {
        cache: cached_frozen(&net, &dev_split.examples, &base, &cache_dir)?,
        split: dev_split,
    };
    let cache_seconds = t_cache.elapsed().as_secs_f64();
    let cache_tps = (train.split.tokens() + dev.split.tokens()) as f64 / cache_seconds.max(1e-9);
    say(&format!(
        "cached the frozen layers' output in {cache_seconds:.1}s ({cache_tps:.0} sub-words/s)"
    ));

    let o = &recipe.optim;
    let mut slots = Vec::new();
    for p in net.trainable() {
        let lr = match p.depth {
            None => o.lr_head,
            Some(d) => o.lr_encoder * o.layer_lr_decay.powi(d as i32),
        };
        if let Some(v) = &p.var {
            slots.push((p.name.clone(), v.clone(), lr, p.decay));
        }
    }
    let mut opt = AdamW::new(
        slots,
        AdamWConfig {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
    )?;
    let n_train = train.split.examples.len();
    if n_train == 0 {
        bail!("the training split is empty");
    }
    let micro_per_epoch = n_train.div_ceil(o.batch_size);
    let steps_per_epoch = micro_per_epoch.div_ceil(o.grad_accum);
    let total_steps = steps_per_epoch * o.epochs;
    let warmup = ((total_steps as f64) * o.warmup_fraction).round() as usize;
    let mut meta = if opts.resume && state_path.is_file() {
        let meta = checkpoint::load_state(&state_path, &mut opt)?;
        if meta.recipe_toml != recipe_toml {
            bail!(
                "{} was saved by a run with another recipe (or other overrides); resume with the \
                 same recipe and flags, or train into another --out",
                state_path.display()
            );
        }
        say(&format!(
            "resuming at step {} (epoch {}, batch {})",
            meta.step,
            meta.epoch + 1,
            meta.batch_in_epoch
        ));
        meta
    } else {
        StateMeta {
            recipe_toml: recipe_toml.clone(),
            ..StateMeta::default()
        }
    };
    let weights = recipe.label_weights();
    let token_task = recipe.task == Task::TokenClassification;
    let parts_manifest = PartsManifest {
        base: base.name.clone(),
        base_sha256: base.sha256.clone(),
        task: recipe.task.as_str().into(),
        tensors: Vec::new(),
        dtype: recipe.model.parts_dtype.clone(),
    };
    // A sequence head learns from the first `max_len` tokens of each text; serving then reads
    // long texts in windows of that size, so every window looks like what training saw,
    // unless the recipe names a window chosen on dev.
    let extras = naba_models::config::NabaExtras {
        prefix: recipe.data.prefix.clone(),
        version: Some(format!("{} (naba-train, base {})", recipe.name, base.name)),
        window: (head_type == HeadType::Sequence).then(|| recipe.model.window.unwrap_or(max_len)),
        pack_words: recipe.model.pack_words,
    };
    let config_json = checkpoint::hf_config(
        &net.config,
        head_type,
        &labels,
        recipe.model.dropout,
        &extras,
    );
    let mut stop = Stop::Completed;
    let session_start = Instant::now();
    let train_seconds_before = meta.train_seconds;
    'epochs: while meta.epoch < o.epochs {
        let epoch = meta.epoch;
        let batches = epoch_batches(&train.split.examples, o.batch_size, recipe.seed, epoch);
        let bar = make_bar(progress, batches.len() as u64, epoch, o.epochs);
        bar.set_position(meta.batch_in_epoch as u64);
        let t_epoch = Instant::now();
        let mut tokens_seen = 0usize;
        let mut loss_sum = 0f64;
        let mut loss_n = 0usize;
        let mut last_line = Instant::now();
        let mut micro = meta.batch_in_epoch;
        while micro < batches.len() {
            let group_end = (micro + o.grad_accum).min(batches.len());
            let mut grads: HashMap<String, Tensor> = HashMap::new();
            let mut group_loss = 0f64;
            for (mi, batch) in batches[micro..group_end].iter().enumerate() {
                let global_micro = epoch * batches.len() + micro + mi;
                let mut rng = Rng::derive(recipe.seed, 2, global_micro as u64);
                tokens_seen += batch
                    .iter()
                    .map(|&i| train.split.examples[i].ids.len())
                    .sum::<usize>();
                let rows: Vec<&[f32]> = batch.iter().map(|&i| train.cache[i].as_slice()).collect();
                let targets = batch_targets(&train.split.examples, batch, token_task);
                let step = MicroBatch {
                    rows: &rows,
                    targets: &targets,
                    label_weights: &weights,
                    smoothing: o.label_smoothing,
                    scale: 1.0 / (group_end - micro) as f64,
                };
                let p = recipe.model.dropout;
                let Some((loss, gs)) = micro_batch(&net, products, &step, (&mut rng, p))? else {
                    continue;
                };
                group_loss += loss;
                for (name, gt) in gs {
                    match grads.entry(name) {
                        std::collections::hash_map::Entry::Occupied(mut e) => {
                            let sum = (e.get() + &gt)?;
                            e.insert(sum);
                        }
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(gt);
                        }
                    }
                }
            }
            if o.grad_clip > 0.0 {
                clip_grad_norm(&mut grads, o.grad_clip)?;
            }
            opt.apply(&grads, schedule(meta.step, warmup, total_steps))?;
            meta.step = opt.step;
            loss_sum += group_loss;
            loss_n += 1;
            micro = group_end;
            meta.batch_in_epoch = micro;
            let elapsed = t_epoch.elapsed().as_secs_f64();
            let tps = tokens_seen as f64 / elapsed.max(1e-9);
            bar.set_position(micro as u64);
            bar.set_message(format!(
                "loss {:.4}  {tps:.0} sub-words/s",
                loss_sum / loss_n as f64
            ));
            if progress && bar.is_hidden() && last_line.elapsed().as_secs_f64() > 30.0 {
                last_line = Instant::now();
                eprintln!(
                    "epoch {}/{} batch {micro}/{} step {} loss {:.4} {tps:.0} sub-words/s",
                    epoch + 1,
                    o.epochs,
                    batches.len(),
                    meta.step,
                    loss_sum / loss_n as f64
                );
            }
            let interrupted = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
            let at_max = opts.max_steps.is_some_and(|m| meta.step >= m);
            if interrupted || at_max || (o.save_every > 0 && meta.step % o.save_every == 0) {
                meta.train_seconds = train_seconds_before + session_start.elapsed().as_secs_f64();
                if micro < batches.len() || interrupted || at_max {
                    checkpoint::save_state(&state_path, &opt, &meta)?;
                }
            }
            if interrupted || at_max {
                bar.abandon();
                stop = if interrupted {
                    Stop::Interrupted
                } else {
                    Stop::MaxSteps
                };
                if micro < batches.len() {
                    break 'epochs;
                }
            }
        }
        bar.finish_and_clear();
        // Epoch end: dev score, best checkpoint, state.
        let secs = t_epoch.elapsed().as_secs_f64();
        let score = evaluate(&net, &dev, recipe, &labels)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: if loss_n > 0 {
                loss_sum / loss_n as f64
            } else {
                f64::NAN
            },
            dev_score: score.main,
            dev_detail: score.detail.clone(),
            seconds: secs,
            tokens_per_second: tokens_seen as f64 / secs.max(1e-9),
        };
        say(&format!(
            "epoch {}/{}: train loss {:.4}, dev {:.4} (P {:.4} R {:.4}) {:?}, {:.0}s, {:.0} sub-words/s",
            epoch + 1,
            o.epochs,
            record.train_loss,
            score.main,
            score.precision,
            score.recall,
            score.detail,
            secs,
            record.tokens_per_second
        ));
        meta.history.push(record);
        if meta.best_score.is_none_or(|b| score.main > b) {
            meta.best_score = Some(score.main);
            meta.best_epoch = Some(epoch + 1);
            meta.epochs_without_gain = 0;
            checkpoint::write_parts(
                &opts.out.join(BEST_PARTS_DIR),
                &net,
                &base,
                &config_json,
                &parts_manifest,
            )?;
        } else {
            meta.epochs_without_gain += 1;
        }
        meta.epoch = epoch + 1;
        meta.batch_in_epoch = 0;
        meta.train_seconds = train_seconds_before + session_start.elapsed().as_secs_f64();
        checkpoint::save_state(&state_path, &opt, &meta)?;
        if stop != Stop::Completed {
            break;
        }
        if o.patience > 0 && meta.epochs_without_gain >= o.patience && meta.epoch < o.epochs {
            say(&format!(
                "no better dev score for {} epochs: stopping early",
                o.patience
            ));
            stop = Stop::EarlyStopped;
            break;
        }
    }
    let mut outcome = TrainOutcome {
        stop,
        step: meta.step,
        meta: meta.clone(),
        tests: Vec::new(),
        best_dev_rounded: None,
        cache_seconds,
        cache_tokens_per_second: cache_tps,
        engine,
    };
    let done = matches!(stop, Stop::Completed | Stop::EarlyStopped);
    if done && opts.finish && opts.out.join(BEST_PARTS_DIR).is_dir() {
        // Score the parts as they will ship (rounded to the parts dtype).
        load_parts_into(&net, &base, &opts.out.join(BEST_PARTS_DIR))?;
        outcome.best_dev_rounded = Some(evaluate(&net, &dev, recipe, &labels)?);
        for t in &recipe.data.test {
            let split = load_eval_split(recipe, &tokenizer, max_len, t)?;
            let prepared = Prepared {
                cache: frozen_cache(&net, &split.examples)?,
                split,
            };
            let s = evaluate(&net, &prepared, recipe, &labels)?;
            say(&format!(
                "test {}: {:.4} {:?}",
                t.display(),
                s.main,
                s.detail
            ));
            outcome.tests.push((t.display().to_string(), s));
        }
        let n = checkpoint::assemble(&opts.out.join(BEST_PARTS_DIR), &opts.out.join(MODEL_DIR))?;
        say(&format!(
            "assembled {} tensors into {}",
            n,
            opts.out.join(MODEL_DIR).display()
        ));
        let wall = started.elapsed().as_secs_f64();
        let card = crate::card::model_card(recipe, opts, &outcome, &base, wall)?;
        checkpoint::write_atomic(&opts.out.join("README.md"), card.as_bytes())?;
        checkpoint::write_atomic(
            &opts.out.join(BEST_PARTS_DIR).join("README.md"),
            card.as_bytes(),
        )?;
        checkpoint::write_atomic(
            &opts.out.join(BEST_PARTS_DIR).join("recipe.toml"),
            recipe_toml.as_bytes(),
        )?;
        checkpoint::write_atomic(
            &opts.out.join("metrics.json"),
            serde_json::to_string_pretty(&serde_json::json!({
                "history": outcome.meta.history,
                "best_epoch": outcome.meta.best_epoch,
                "best_dev": outcome.meta.best_score,
                "best_dev_as_shipped": outcome.best_dev_rounded,
                "tests": outcome.tests.iter().map(|(p, s)| serde_json::json!({"file": p, "score": s})).collect::<Vec<_>>(),
                "train_seconds": outcome.meta.train_seconds,
                "cache_seconds": cache_seconds,
                "wall_seconds_this_session": wall,
            }))?
            .as_bytes(),
        )?;
    }
    Ok(outcome)
}

fn make_bar(progress: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} elapsed {elapsed} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

fn load_splits(
    recipe: &Recipe,
    tok: &tokenizers::Tokenizer,
    max_len: usize,
) -> Result<(Split, Split)> {
    let d = &recipe.data;
    let dev_seed = d.dev_seed.unwrap_or(recipe.seed);
    match recipe.task {
        Task::TokenClassification => {
            let train_all = data::read_conll_sentences(&d.train)?;
            let pack = |all: &[naba_eval::NerSentence], idx: &[usize]| {
                if d.pack_sentences {
                    data::pack_sentences(all, idx, tok, max_len, &d.prefix)
                } else {
                    Ok(idx.iter().map(|&i| all[i].clone()).collect())
                }
            };
            let (mut train_idx, dev_sents) = match &d.dev {
                Some(dev) => {
                    let dev = data::read_conll_sentences(dev)?;
                    let all: Vec<usize> = (0..dev.len()).collect();
                    ((0..train_all.len()).collect(), pack(&dev, &all)?)
                }
                None => {
                    let (t, dv) = match d.dev_block() {
                        1 => data::carve_dev(train_all.len(), d.dev_fraction, dev_seed),
                        block => {
                            let (n, f) = (train_all.len(), d.dev_fraction);
                            data::carve_dev_blocks(n, f, dev_seed, block)
                        }
                    };
                    (t, pack(&train_all, &dv)?)
                }
            };
            if let Some(n) = d.limit_train {
                train_idx.truncate(n);
            }
            let mut train_sents = pack(&train_all, &train_idx)?;
            for extra in &d.extra_train {
                let more = data::read_conll_sentences(extra)?;
                let all: Vec<usize> = (0..more.len()).collect();
                train_sents.extend(pack(&more, &all)?);
            }
            let train_refs: Vec<&naba_eval::NerSentence> = train_sents.iter().collect();
            let dev_refs: Vec<&naba_eval::NerSentence> = dev_sents.iter().collect();
            let la = recipe.model.label_all_subwords;
            let ls = recipe.model.label_lone_space;
            Ok((
                data::ner_split(&train_refs, tok, &d.labels, max_len, &d.prefix, la, ls)?,
                data::ner_split(&dev_refs, tok, &d.labels, max_len, &d.prefix, la, ls)?,
            ))
        }
        Task::SequenceClassification | Task::PairClassification => {
            let mut r = recipe.clone();
            r.data.max_length = max_len;
            let train = data::read_classification(&d.train, &d.train_filter, &r)?;
            let (mut train_idx, dev) = match &d.dev {
                Some(dev) => {
                    let corpus = data::read_classification(dev, &d.dev_filter, &r)?;
                    (
                        (0..train.examples.len()).collect::<Vec<_>>(),
                        data::classification_split(&corpus, dev, &r, tok, None)?,
                    )
                }
                None => {
                    let (t, dv) = data::carve_dev(train.examples.len(), d.dev_fraction, dev_seed);
                    (
                        t,
                        data::classification_split(&train, &d.train, &r, tok, Some(&dv))?,
                    )
                }
            };
            if let Some(n) = d.limit_train {
                train_idx.truncate(n);
            }
            Ok((
                data::classification_split(&train, &d.train, &r, tok, Some(&train_idx))?,
                dev,
            ))
        }
    }
}

fn load_eval_split(
    recipe: &Recipe,
    tok: &tokenizers::Tokenizer,
    max_len: usize,
    path: &Path,
) -> Result<Split> {
    let d = &recipe.data;
    match recipe.task {
        Task::TokenClassification => {
            let mut s = data::read_conll_sentences(path)?;
            if d.pack_sentences {
                let all: Vec<usize> = (0..s.len()).collect();
                s = data::pack_sentences(&s, &all, tok, max_len, &d.prefix)?;
            }
            let refs: Vec<&naba_eval::NerSentence> = s.iter().collect();
            // Scoring always labels first sub-words, whatever training did.
            let ls = recipe.model.label_lone_space;
            data::ner_split(&refs, tok, &d.labels, max_len, &d.prefix, false, ls)
        }
        _ => {
            let mut r = recipe.clone();
            r.data.max_length = max_len;
            let corpus = data::read_classification(path, &d.test_filter, &r)?;
            data::classification_split(&corpus, path, &r, tok, None)
        }
    }
}

/// Micro-batches of one epoch: a seeded shuffle, then examples of similar length grouped
/// (sorted within chunks of 50 batches) so little compute goes to padding, then the batches
/// shuffled again. The same seed and epoch give the same batches.
pub fn epoch_batches(
    examples: &[Example],
    batch: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::derive(seed, 3, epoch as u64);
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    rng.shuffle(&mut idx);
    let chunk = batch * 50;
    let mut batches = Vec::new();
    for c in idx.chunks_mut(chunk) {
        c.sort_by_key(|&i| examples[i].ids.len());
        for b in c.chunks(batch) {
            batches.push(b.to_vec());
        }
    }
    rng.shuffle(&mut batches);
    batches
}

/// [`frozen_cache`], kept on disk under `dir` keyed by the base's checksums, the frozen depth
/// and every example's ids, so a rerun (a resume, another learning rate) skips it.
fn cached_frozen(
    net: &TrainNet,
    examples: &[Example],
    base: &checkpoint::Base,
    dir: &Path,
) -> Result<Vec<Vec<f32>>> {
    if net.first_trained == 0 || examples.is_empty() {
        return frozen_cache(net, examples);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    for (k, v) in &base.sha256 {
        for b in k.bytes().chain(v.bytes()) {
            eat(u64::from(b));
        }
    }
    eat(base.dir.to_string_lossy().len() as u64);
    eat(net.first_trained as u64);
    for e in examples {
        eat(e.ids.len() as u64);
        for &i in &e.ids {
            eat(u64::from(i));
        }
    }
    let path = dir.join(format!("frozen-{h:016x}.f32"));
    let hidden = net.config.hidden_size;
    let total: usize = examples.iter().map(|e| e.ids.len() * hidden).sum();
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == total * 4 {
            let mut out = Vec::with_capacity(examples.len());
            let mut off = 0;
            for e in examples {
                let n = e.ids.len() * hidden;
                out.push(
                    bytes[off * 4..(off + n) * 4]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                );
                off += n;
            }
            return Ok(out);
        }
    }
    let out = frozen_cache(net, examples)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bytes = Vec::with_capacity(total * 4);
    for v in &out {
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    checkpoint::write_atomic(&path, &bytes)?;
    Ok(out)
}

/// The frozen part (embeddings and the layers below the first trained one), run once per
/// example with the inference kernels; each example's `[len, hidden]` rows kept in f32.
pub(crate) fn frozen_cache(net: &TrainNet, examples: &[Example]) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); examples.len()];
    let budget = 8192usize; // sub-words per forward call
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() {
            let len = examples[order[end]].ids.len();
            if end > start && (end - start + 1) * len > budget {
                break;
            }
            end += 1;
        }
        let rows: Vec<Vec<u32>> = order[start..end]
            .iter()
            .map(|&i| examples[i].ids.clone())
            .collect();
        let (x, mask) = net.embed(&rows)?;
        let h = net.blocks_forward(&x, &mask, 0, net.first_trained, Mode::Infer, None)?;
        for (r, &i) in order[start..end].iter().enumerate() {
            let len = examples[i].ids.len();
            out[i] = h
                .get(r)?
                .narrow(0, 0, len)?
                .flatten_all()?
                .to_vec1::<f32>()?;
        }
        start = end;
    }
    Ok(out)
}

/// Pads cached rows of a batch into `[b, s, h]`, with the mask and the flattened targets.
/// Gradients by trainable tensor name.
pub type Grads = Vec<(String, Tensor)>;

/// A micro-batch as the trainer hands it to [`micro_batch`].
pub struct MicroBatch<'a> {
    /// Each example's input to the first trained layer, `[len · hidden]`.
    pub rows: &'a [&'a [f32]],
    /// Token labels right-padded to the longest row (token tasks) or one per row, `IGNORE`
    /// where nothing is learned.
    pub targets: &'a [i64],
    pub label_weights: &'a [f64],
    pub smoothing: f64,
    /// The loss's factor (`1 / micro-batches per step` under gradient accumulation).
    pub scale: f64,
}

/// One micro-batch's forward and backward pass: its scaled loss and the gradient of every
/// trainable tensor, by name; `None` when no row has a label. `fast` picks the hand-written
/// passes of [`fast`] for the encoder layers, with their products in the precision given
/// (the head and loss are candle's either way).
pub fn micro_batch(
    net: &TrainNet,
    fast: Option<naba_kernels::Precision>,
    mb: &MicroBatch,
    (rng, p): (&mut Rng, f64),
) -> Result<Option<(f64, Grads)>> {
    let hidden = net.config.hidden_size;
    let (logits, fast_tape) = if let Some(products) = fast {
        let packed = fast::Packed::from_rows(mb.rows.iter().copied(), hidden);
        let (out, tape) = fast::forward(
            net,
            &packed,
            (net.first_trained, net.num_layers()),
            Some((&mut *rng, p)),
            products,
        )?;
        let h = Var::from_tensor(&packed.to_padded(&out, hidden)?)?;
        let logits = net.head_forward(h.as_tensor(), Some((&mut *rng, p)))?;
        (logits, Some((packed, tape, h)))
    } else {
        let (x, mask) = padded(net, mb.rows)?;
        let h = net.blocks_forward(
            &x,
            &mask,
            net.first_trained,
            net.num_layers(),
            Mode::Train,
            Some((&mut *rng, p)),
        )?;
        (net.head_forward(&h, Some((&mut *rng, p)))?, None)
    };
    let c = logits.dim(D::Minus1)?;
    let flat = logits.reshape(((), c))?;
    let Some(loss) = cross_entropy(&flat, mb.targets, mb.label_weights, mb.smoothing)? else {
        return Ok(None);
    };
    let loss = (loss * mb.scale)?;
    let value = f64::from(loss.to_scalar::<f32>()?);
    let g = loss.backward()?;
    let mut grads = HashMap::new();
    if let Some((packed, tape, h)) = fast_tape {
        let dh = match g.get(h.as_tensor()) {
            Some(d) => packed.from_padded(d, hidden)?,
            None => vec![0f32; packed.x.len()],
        };
        grads = fast::backward(net, tape, dh)?;
    }
    let mut out = Vec::new();
    for p in net.trainable() {
        let Some(v) = &p.var else { continue };
        if let Some(gt) = grads
            .remove(&p.name)
            .or_else(|| g.get(v.as_tensor()).cloned())
        {
            out.push((p.name.clone(), gt));
        }
    }
    Ok(Some((value, out)))
}

/// Rows right-padded into `[rows, longest, hidden]` with their `[rows, longest]` mask.
fn padded(net: &TrainNet, rows: &[&[f32]]) -> Result<(Tensor, Tensor)> {
    let h = net.config.hidden_size;
    let s = rows.iter().map(|r| r.len() / h).max().unwrap_or(0);
    let b = rows.len();
    let mut x = vec![0f32; b * s * h];
    let mut mask = vec![0f32; b * s];
    for (r, row) in rows.iter().enumerate() {
        let len = row.len() / h;
        x[r * s * h..r * s * h + len * h].copy_from_slice(row);
        mask[r * s..r * s + len].fill(1.0);
    }
    let dev = net.device();
    Ok((
        Tensor::from_vec(x, (b, s, h), dev)?,
        Tensor::from_vec(mask, (b, s), dev)?,
    ))
}

/// The targets of a batch of examples: token labels right-padded with `IGNORE` to the longest
/// row, or each row's one label.
pub fn batch_targets(examples: &[Example], batch: &[usize], token: bool) -> Vec<i64> {
    let s = batch
        .iter()
        .map(|&i| examples[i].ids.len())
        .max()
        .unwrap_or(0);
    let mut targets = Vec::new();
    for &i in batch {
        let e = &examples[i];
        if token {
            targets.extend_from_slice(&e.labels);
            targets.extend(std::iter::repeat_n(data::IGNORE, s - e.ids.len()));
        } else {
            targets.push(e.labels.first().copied().unwrap_or(data::IGNORE));
        }
    }
    targets
}

/// Scores a split with the inference kernels: NER by strict IOB2 micro-F1 over words (the
/// first sub-word's argmax; a stray `I-X` starts an entity, as serving's aggregation does),
/// classification by macro-F1.
fn evaluate(net: &TrainNet, data: &Prepared, recipe: &Recipe, labels: &[String]) -> Result<Score> {
    let task = recipe.task;
    let ex = &data.split.examples;
    let mut order: Vec<usize> = (0..ex.len()).collect();
    order.sort_by_key(|&i| ex[i].ids.len());
    let mut preds: Vec<Vec<String>> = data
        .split
        .gold
        .iter()
        .map(|g| vec!["O".to_string(); g.len()])
        .collect();
    for chunk in order.chunks(32) {
        let rows: Vec<&[f32]> = chunk.iter().map(|&i| data.cache[i].as_slice()).collect();
        let (x, mask) = padded(net, &rows)?;
        let h = net.blocks_forward(
            &x,
            &mask,
            net.first_trained,
            net.num_layers(),
            Mode::Infer,
            None,
        )?;
        let logits = net.head_forward(&h, None)?;
        let am = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?;
        match task {
            Task::TokenClassification => {
                let am = am.to_vec2::<u32>()?;
                for (r, &i) in chunk.iter().enumerate() {
                    for (pos, w) in ex[i].first_of_word.iter().enumerate() {
                        if let Some(w) = w {
                            let l = labels
                                .get(am[r][pos] as usize)
                                .cloned()
                                .unwrap_or_else(|| "O".into());
                            if let Some(slot) = preds[ex[i].item].get_mut(*w) {
                                *slot = l;
                            }
                        }
                    }
                }
            }
            _ => {
                let am = am.to_vec1::<u32>()?;
                for (r, &i) in chunk.iter().enumerate() {
                    preds[ex[i].item] =
                        vec![labels.get(am[r] as usize).cloned().unwrap_or_default()];
                }
            }
        }
    }
    match task {
        Task::TokenClassification => {
            for p in &mut preds {
                repair_iob2(p);
            }
            let m = naba_eval::ner_metrics(&data.split.gold, &preds)?;
            Ok(Score {
                main: m.strict.micro.f1,
                precision: m.strict.micro.precision,
                recall: m.strict.micro.recall,
                detail: m
                    .strict
                    .per_type
                    .iter()
                    .map(|(k, v)| (k.clone(), v.f1))
                    .collect(),
                secondary: m.lenient.micro.f1,
            })
        }
        _ => {
            let gold: Vec<&str> = data.split.gold.iter().map(|g| g[0].as_str()).collect();
            let pred: Vec<&str> = preds.iter().map(|p| p[0].as_str()).collect();
            let m = naba_eval::classification_metrics(&gold, &pred)?;
            Ok(Score {
                main: recipe.headline(&m),
                precision: m.macro_avg.precision,
                recall: m.macro_avg.recall,
                detail: m.per_label.iter().map(|(k, v)| (k.clone(), v.f1)).collect(),
                secondary: m.accuracy,
            })
        }
    }
}

/// `I-X` that does not continue an `X` entity becomes `B-X`.
pub fn repair_iob2(tags: &mut [String]) {
    let mut prev_type: Option<String> = None;
    for t in tags.iter_mut() {
        if let Some(ty) = t.strip_prefix("I-") {
            if prev_type.as_deref() != Some(ty) {
                *t = format!("B-{ty}");
            }
        }
        prev_type = t
            .strip_prefix("B-")
            .or_else(|| t.strip_prefix("I-"))
            .map(str::to_string);
    }
}

/// Overwrites the trainable variables with a parts file's tensors (as shipped, so rounded).
pub fn load_parts_into(net: &TrainNet, base: &checkpoint::Base, parts_dir: &Path) -> Result<()> {
    let parts = checkpoint::load_parts_stored(&parts_dir.join(checkpoint::PARTS_FILE), &|n| {
        base.tensor_for(n)
    })?;
    for p in net.trainable() {
        let t = parts
            .get(&p.name)
            .with_context(|| format!("{} lacks `{}`", parts_dir.display(), p.name))?;
        if let Some(v) = &p.var {
            v.set(&t.to_dtype(DType::F32)?)?;
        }
    }
    Ok(())
}
