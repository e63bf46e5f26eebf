//! `naba lexical`: fits the TF-IDF + logistic-regression member that a topic or stance model
//! averages its probabilities with (`naba_tasks::lexical`), on a recipe's training split, and
//! chooses the member's share of the average on the recipe's dev split.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use naba_eval::ClassificationCorpus;
use naba_models::{HeadKind, LoadOptions, Model};
use naba_tasks::lexical::{
    average_into, fit, idf_of, predict, tfidf_of_counts, FeatureSpec, FitOptions, Lexical,
    LexicalParams, Sparse,
};
use naba_tasks::{ClassifyInput, ClassifyOptions, Pipeline, PipelineOptions};
use naba_train::{data, Recipe, Task};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct LexicalArgs {
    /// The model's recipe (topic or stance): its data, labels and dev split are used.
    #[arg(long)]
    pub recipe: PathBuf,
    /// The model's own dev predictions, `predictions.jsonl` of `naba eval` over the recipe's
    /// dev rows (joined by file line), made with `--no-lexical` when the model already has a
    /// member. The member's share of the average is chosen on them.
    #[arg(long, required_unless_present_any = ["mix", "model"], conflicts_with = "model")]
    pub dev_predictions: Option<PathBuf>,
    /// Or: the model (a name or directory), run here over the recipe's dev rows without any
    /// member it has, as `naba eval --no-lexical` would read them (long stance texts without a
    /// relatedness gate).
    #[arg(long)]
    pub model: Option<String>,
    /// Use this share instead of choosing one on dev.
    #[arg(long)]
    pub mix: Option<f32>,
    /// Where to write lexical.json and lexical.safetensors (the model's directory to ship it).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// AdamW step size at the start (it falls linearly to zero).
    #[arg(long, default_value_t = 0.02)]
    pub lr: f32,
    /// Decoupled weight decay: the regulariser.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Hash buckets the n-grams share (log2).
    #[arg(long, default_value_t = 18)]
    pub buckets_log2: u32,
    /// Word n-gram lengths, LOW-HIGH.
    #[arg(long, default_value = "1-2", value_parser = parse_range)]
    pub word_ngrams: (usize, usize),
    /// Character n-gram lengths inside each word, LOW-HIGH.
    #[arg(long, default_value = "2-5", value_parser = parse_range)]
    pub char_ngrams: (usize, usize),
    /// Weigh every example alike instead of by `n / (labels * count of its label)`.
    #[arg(long)]
    pub no_balance: bool,
    /// Seeds the example order [default: the recipe's seed].
    #[arg(long)]
    pub seed: Option<u64>,
}

struct Rows {
    texts: Vec<String>,
    /// Stance targets (pair recipes).
    targets: Vec<Option<String>>,
    labels: Vec<usize>,
    lines: Vec<usize>,
}

pub fn run(args: LexicalArgs) -> Result<ExitCode> {
    let recipe = Recipe::from_file(&args.recipe)?;
    let pairs = match recipe.task {
        Task::SequenceClassification => false,
        Task::PairClassification => true,
        other => bail!(
            "the lexical member labels whole texts: recipe task `{}` is not supported, use a \
             sequence-classification (topic) or pair-classification (stance) recipe",
            other.as_str()
        ),
    };
    if !(1..=24).contains(&args.buckets_log2) {
        bail!(
            "--buckets-log2 must lie in 1..=24, got {}",
            args.buckets_log2
        );
    }
    if let Some(m) = args.mix {
        if !(0.0..=1.0).contains(&m) {
            bail!("--mix must lie in [0, 1], got {m}");
        }
    }
    let (train, dev) = splits(&recipe)?;
    let labels = &recipe.data.labels;
    // The model's own dev probabilities first: a wrong model or file fails before the fit, and
    // nothing is written until the share is chosen.
    let encoder_dev = match (args.mix, &args.dev_predictions, &args.model) {
        (Some(_), _, _) => None,
        (None, Some(path), _) => Some(read_predictions(path, &dev.lines, labels)?),
        (None, None, Some(model)) => Some(run_model(model, &dev, labels)?),
        (None, None, None) => bail!("give --dev-predictions, --model or --mix"),
    };
    let spec = FeatureSpec {
        buckets: 1 << args.buckets_log2,
        word_ngrams: args.word_ngrams,
        char_ngrams: args.char_ngrams,
    };
    eprintln!(
        "lexical: {} training and {} dev texts, {} buckets",
        train.texts.len(),
        dev.texts.len(),
        spec.buckets
    );
    let counts: Vec<_> = (0..train.texts.len())
        .into_par_iter()
        .map(|i| spec.counts(&train.texts[i], train.targets[i].as_deref()))
        .collect();
    let idf = idf_of(&counts, spec.buckets);
    let xs: Vec<Sparse> = counts
        .into_par_iter()
        .map(|c| tfidf_of_counts(c, &idf))
        .collect();
    let dev_xs: Vec<Sparse> = (0..dev.texts.len())
        .into_par_iter()
        .map(|i| spec.tfidf(&dev.texts[i], dev.targets[i].as_deref(), &idf))
        .collect();
    let score = |probs: &[Vec<f32>]| -> Result<(f64, f64)> {
        let gold: Vec<&str> = dev.labels.iter().map(|&y| labels[y].as_str()).collect();
        let pred: Vec<&str> = probs.iter().map(|p| labels[argmax(p)].as_str()).collect();
        let m = naba_eval::classification_metrics(&gold, &pred)?;
        Ok((recipe.headline(&m), m.accuracy))
    };
    let opts = FitOptions {
        epochs: args.epochs,
        lr: args.lr,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size,
        balanced: !args.no_balance,
        seed: args.seed.unwrap_or(recipe.seed),
    };
    let started = std::time::Instant::now();
    let mut epoch_err = None;
    let (weights, bias) = fit(
        &xs,
        &train.labels,
        labels.len(),
        spec.buckets,
        &opts,
        |epoch, w, b, loss| match score(&probabilities(&dev_xs, w, b)) {
            Ok((main, acc)) => eprintln!(
                "epoch {epoch}/{}: train loss {loss:.4}, dev {main:.4} (accuracy {acc:.4}), {:.0}s",
                opts.epochs,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => epoch_err = Some(e),
        },
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(e) = epoch_err {
        return Err(e);
    }
    let fit_seconds = started.elapsed().as_secs_f64();
    // The share is chosen for the member as it will be stored, f16 rounding included.
    let mut member = Lexical::new(
        LexicalParams {
            features: spec,
            labels: labels.clone(),
            mix: args.mix.unwrap_or(0.0),
            pairs,
            fitted_on: String::new(),
        },
        idf,
        weights,
        bias,
    )
    .map_err(anyhow::Error::msg)?
    .as_stored()?;
    let lexical_dev = probabilities(&dev_xs, &member.weights, &member.bias);
    let (lex_main, lex_acc) = score(&lexical_dev)?;
    let how = match (args.mix, encoder_dev) {
        (Some(m), _) => {
            format!("mix {m} given; dev {lex_main:.4} / accuracy {lex_acc:.4} for the member alone")
        }
        (None, Some(encoder)) => {
            let (enc_main, enc_acc) = score(&encoder)?;
            let mut best = (0.0f32, enc_main, enc_acc);
            eprintln!("dev, share of the lexical member -> headline / accuracy:");
            for step in 0..=20 {
                let m = step as f32 / 20.0;
                let blended: Vec<Vec<f32>> = encoder
                    .iter()
                    .zip(&lexical_dev)
                    .map(|(p, q)| {
                        let mut p = p.clone();
                        average_into(&mut p, q, m);
                        p
                    })
                    .collect();
                let (main, acc) = score(&blended)?;
                eprintln!("  {m:.2}: {main:.4} / {acc:.4}");
                // Strictly better only: ties keep the smaller share.
                if main > best.1 + 1e-9 {
                    best = (m, main, acc);
                }
            }
            member.params.mix = best.0;
            format!(
                "mix {:.2} chosen on dev ({} rows) by the headline score: model alone {enc_main:.4} \
                 (accuracy {enc_acc:.4}), member alone {lex_main:.4} ({lex_acc:.4}), blend {:.4} \
                 ({:.4})",
                best.0,
                dev.texts.len(),
                best.1,
                best.2
            )
        }
        (None, None) => bail!("give --dev-predictions, --model or --mix"),
    };
    member.params.fitted_on = format!(
        "{} training rows of {} ({} epochs, lr {}, weight decay {}, batch {}, {}, seed {}, \
         {fit_seconds:.0}s); {how}",
        train.texts.len(),
        recipe.data.train.display(),
        opts.epochs,
        opts.lr,
        opts.weight_decay,
        opts.batch_size,
        if opts.balanced {
            "classes balanced"
        } else {
            "examples weighed alike"
        },
        opts.seed,
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    member.write(&args.out)?;
    eprintln!("{}", member.params.fitted_on);
    eprintln!("written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// The recipe's training rows and its dev rows: the dev file, or the same held-out carve the
/// trainer makes when there is none.
fn splits(recipe: &Recipe) -> Result<(Rows, Rows)> {
    let d = &recipe.data;
    let label_id: HashMap<&str, usize> = d
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let rows = |corpus: &ClassificationCorpus, idx: &[usize]| -> Result<Rows> {
        let mut out = Rows {
            texts: Vec::new(),
            targets: Vec::new(),
            labels: Vec::new(),
            lines: Vec::new(),
        };
        for &i in idx {
            let ex = &corpus.examples[i];
            let y = *label_id.get(ex.label.as_str()).with_context(|| {
                format!(
                    "{} line {}: label `{}` is not in the recipe's data.labels",
                    corpus.source.display(),
                    ex.line,
                    ex.label
                )
            })?;
            out.texts.push(ex.text.clone());
            out.targets.push(ex.target.clone());
            out.labels.push(y);
            out.lines.push(ex.line);
        }
        Ok(out)
    };
    let train = data::read_classification(&d.train, &d.train_filter, recipe)?;
    let all = |c: &ClassificationCorpus| (0..c.examples.len()).collect::<Vec<_>>();
    match &d.dev {
        Some(dev) => {
            let dev = data::read_classification(dev, &d.dev_filter, recipe)?;
            Ok((rows(&train, &all(&train))?, rows(&dev, &all(&dev))?))
        }
        None => {
            let seed = d.dev_seed.unwrap_or(recipe.seed);
            let (t, dv) = data::carve_dev(train.examples.len(), d.dev_fraction, seed);
            Ok((rows(&train, &t)?, rows(&train, &dv)?))
        }
    }
}

/// The model's dev probabilities, in the recipe's label order, from running it here.
fn run_model(spec: &str, dev: &Rows, labels: &[String]) -> Result<Vec<Vec<f32>>> {
    let opts = LoadOptions {
        head_hint: Some(HeadKind::SequenceClassification),
        ..LoadOptions::default()
    };
    let model = Model::load(spec, &opts).with_context(|| format!("cannot load model `{spec}`"))?;
    if model.config.labels != labels {
        bail!(
            "model `{spec}` has the labels {:?}, the recipe {:?}: name the model the recipe trains",
            model.config.labels,
            labels
        );
    }
    let pipeline = Pipeline::new(model, &PipelineOptions::default())?;
    let bar = ProgressBar::new(dev.texts.len() as u64).with_style(
        ProgressStyle::with_template("dev {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut out = Vec::with_capacity(dev.texts.len());
    let n = dev.texts.len();
    for start in (0..n).step_by(32) {
        let chunk = start..(start + 32).min(n);
        let inputs: Vec<ClassifyInput> = chunk
            .clone()
            .map(|i| ClassifyInput {
                text: &dev.texts[i],
                target: dev.targets[i].as_deref(),
            })
            .collect();
        for (i, result) in chunk
            .clone()
            .zip(pipeline.classify(&inputs, &ClassifyOptions::default()))
        {
            let scored =
                result.with_context(|| format!("dev row at data line {}", dev.lines[i]))?;
            let by_label: HashMap<&str, f32> = scored
                .labels
                .iter()
                .map(|s| (s.label.as_str(), s.score))
                .collect();
            out.push(
                labels
                    .iter()
                    .map(|l| by_label.get(l.as_str()).copied().unwrap_or(0.0))
                    .collect(),
            );
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The model's dev probabilities from a `naba eval` predictions file, in dev order.
fn read_predictions(
    path: &std::path::Path,
    lines: &[usize],
    labels: &[String],
) -> Result<Vec<Vec<f32>>> {
    #[derive(serde::Deserialize)]
    struct Row {
        line: usize,
        scores: HashMap<String, f32>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut by_line = HashMap::new();
    for (n, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: Row = serde_json::from_str(l).with_context(|| {
            format!(
                "{} line {}: not a naba eval prediction with `line` and `scores`",
                path.display(),
                n + 1
            )
        })?;
        by_line.insert(row.line, row.scores);
    }
    lines
        .iter()
        .map(|line| {
            let scores = by_line.get(line).with_context(|| {
                format!(
                    "{} has no prediction for data line {line}: run `naba eval` over the \
                     recipe's dev rows (same file and filter) to make it",
                    path.display()
                )
            })?;
            labels
                .iter()
                .map(|l| {
                    scores.get(l).copied().with_context(|| {
                        format!(
                            "{}: no score for label `{l}` on line {line}",
                            path.display()
                        )
                    })
                })
                .collect()
        })
        .collect()
}

fn probabilities(xs: &[Sparse], w: &[f32], b: &[f32]) -> Vec<Vec<f32>> {
    xs.par_iter().map(|x| predict(w, b, x)).collect()
}

/// `LOW-HIGH` (or one number) as an inclusive n-gram range, 1 <= LOW <= HIGH <= 8.
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not LOW-HIGH, e.g. 1-2"))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if !(1 <= lo && lo <= hi && hi <= 8) {
        return Err(format!("`{s}`: n-gram lengths need 1 <= LOW <= HIGH <= 8"));
    }
    Ok((lo, hi))
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}
