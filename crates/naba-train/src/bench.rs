//! Training throughput on real sentences, for the side-by-side benchmark
//! (`scripts/bench/run.py --train-data`): every encoder layer and the head of a
//! token-classification checkpoint train on packed CoNLL sentences for a fixed number of steps,
//! with the trainer's own micro-batch step, dropout, gradient clipping and AdamW. The batches
//! are written out so a PyTorch peer trains on exactly the same ones.

use crate::net::{HeadType, TrainNet, Trainable};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::recipe::TrainEngine;
use crate::rng::Rng;
use crate::trainer::{batch_targets, frozen_cache, micro_batch, MicroBatch};
use crate::{checkpoint, data};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A token-classification checkpoint (directory or installed model) or the base.
    pub model: String,
    /// CoNLL sentences; consecutive ones are packed into windows of `max_length` sub-words.
    pub data: PathBuf,
    /// Sentences read from the start of `data`.
    pub sentences: usize,
    pub batch_size: usize,
    pub max_length: usize,
    /// Timed optimiser steps, after `warmup_steps` untimed ones.
    pub steps: usize,
    pub warmup_steps: usize,
    pub engine: TrainEngine,
    /// Where to write the batches, one JSON line per step (`ids`, `labels`: one list per row).
    pub batches_out: Option<PathBuf>,
    /// Dropout on hidden states, as in a recipe.
    pub dropout: f64,
    pub lr: f64,
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub engine: String,
    pub threads: usize,
    pub steps: usize,
    pub warmup_steps: usize,
    /// Real (unpadded) sub-words of the timed steps.
    pub sub_words: usize,
    pub seconds: f64,
    pub sub_words_per_s: f64,
    /// The loss of every step, warm-up included.
    pub losses: Vec<f64>,
    pub trainable_params: usize,
    pub batch_size: usize,
    pub max_length: usize,
    pub windows: usize,
}

/// Trains for `warmup_steps + steps` steps and times the last `steps`.
pub fn bench(o: &BenchOptions) -> Result<BenchReport> {
    if o.steps == 0 || o.batch_size == 0 {
        bail!("--steps and --batch-size must be at least 1");
    }
    let base = checkpoint::open_base(&o.model, false)?;
    let tok = naba_models::tokenizer::load(&base.dir)?;
    let labels = base.config.labels.clone();
    if labels.is_empty() {
        bail!(
            "{} has no labels: give a token-classification checkpoint (an NER model such as \
             ner-anercorp), whose labels the benchmark trains on",
            o.model
        );
    }
    let max_len = o.max_length.min(base.config.max_position_embeddings);
    let all = data::read_conll_sentences(&o.data)?;
    let idx: Vec<usize> = (0..all.len().min(o.sentences)).collect();
    let packs = data::pack_sentences(&all, &idx, &tok, max_len, "")?;
    let refs: Vec<_> = packs.iter().collect();
    let split = data::ner_split(&refs, &tok, &labels, max_len, "", false, false)
        .context("turning the sentences into windows")?;
    if split.examples.is_empty() {
        bail!("{} gave no sentences to train on", o.data.display());
    }
    let layers = base.config.num_layers;
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        labels.len(),
        Trainable::from(layers),
        13,
    )?;
    let fast = crate::fast::chosen(o.engine, &net)
        .map_err(|why| anyhow::anyhow!("the fast engine cannot train this model: {why}"))?;
    // The products `naba train` would use here (`auto`: bf16 where the CPU has it).
    let products = crate::recipe::TrainPrecision::Auto.resolve();
    let fast = fast.then_some(products);
    // Every layer trains: the first trained layer's input is the embeddings' output.
    let inputs = frozen_cache(&net, &split.examples)?;
    let total = o.warmup_steps + o.steps;
    let n = split.examples.len();
    let batches: Vec<Vec<usize>> = (0..total)
        .map(|s| {
            (0..o.batch_size)
                .map(|j| (s * o.batch_size + j) % n)
                .collect()
        })
        .collect();
    if let Some(path) = &o.batches_out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        for b in &batches {
            let ids: Vec<&[u32]> = b
                .iter()
                .map(|&i| split.examples[i].ids.as_slice())
                .collect();
            let lab: Vec<&[i64]> = b
                .iter()
                .map(|&i| split.examples[i].labels.as_slice())
                .collect();
            serde_json::to_writer(&mut f, &serde_json::json!({ "ids": ids, "labels": lab }))?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    let vars: Vec<_> = net
        .trainable()
        .filter_map(|p| p.var.clone().map(|v| (p.name.clone(), v, o.lr, p.decay)))
        .collect();
    let trainable_params = vars.iter().map(|v| v.1.elem_count()).sum();
    let mut opt = AdamW::new(
        vars,
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )?;
    let weights = vec![1.0; labels.len()];
    let mut losses = Vec::with_capacity(total);
    let mut sub_words = 0;
    let mut t0 = Instant::now();
    for (s, b) in batches.iter().enumerate() {
        if s == o.warmup_steps {
            t0 = Instant::now();
        }
        let rows: Vec<&[f32]> = b.iter().map(|&i| inputs[i].as_slice()).collect();
        let targets = batch_targets(&split.examples, b, true);
        let mb = MicroBatch {
            rows: &rows,
            targets: &targets,
            label_weights: &weights,
            smoothing: 0.0,
            scale: 1.0,
        };
        let mut rng = Rng::derive(13, 2, s as u64);
        let Some((loss, g)) = micro_batch(&net, fast, &mb, (&mut rng, o.dropout))? else {
            bail!("batch {s} has no labelled sub-word");
        };
        let mut grads: HashMap<_, _> = g.into_iter().collect();
        clip_grad_norm(&mut grads, 1.0)?;
        opt.apply(&grads, 1.0)?;
        losses.push(loss);
        if s >= o.warmup_steps {
            sub_words += b
                .iter()
                .map(|&i| split.examples[i].ids.len())
                .sum::<usize>();
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(BenchReport {
        engine: match fast {
            Some(p) => format!("naba-{} ({} products)", o.engine.as_str(), p.name()),
            None => format!("naba-{}", o.engine.as_str()),
        },
        threads: naba_kernels::threads(),
        steps: o.steps,
        warmup_steps: o.warmup_steps,
        sub_words,
        seconds,
        sub_words_per_s: sub_words as f64 / seconds.max(1e-9),
        losses,
        trainable_params,
        batch_size: o.batch_size,
        max_length: max_len,
        windows: n,
    })
}
