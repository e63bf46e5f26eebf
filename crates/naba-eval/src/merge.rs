//! `naba eval merge`: the shard reports of one job combined into the report an unsharded run
//! would have written.
//!
//! Each shard report keeps every scored item with its position in the whole job
//! (`shard_items.jsonl`). The merge puts the items back in job order and scores them with the
//! same code, options and bootstrap seed as a single run, so every figure, confidence intervals
//! included, equals the unsharded run's as long as the model gave the same answers. Summing
//! per-shard counts would have given the point figures but not the intervals, which need the
//! documents themselves.

use crate::bootstrap::BootstrapConfig;
use crate::error::{EvalError, Result};
use crate::read::{ClassificationCorpus, ClassificationExample, NerCorpus, NerSentence};
use crate::report::{
    files, read_metrics, ClassItem, ClassPrediction, EvalOptions, MetricsFile, NerItem, Report,
    RunInfo, TaskScores,
};
use crate::shard::{MergedShard, ShardInfo};
use crate::RunStats;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One shard report as read.
struct Part {
    dir: PathBuf,
    metrics: MetricsFile,
    shard: ShardInfo,
}

/// Combine the shard reports in `dirs` (report directories or their metrics.json files, in any
/// order) into one report.
///
/// # Errors
/// [`EvalError::Merge`] when a directory is not a shard report, when the reports are not the
/// shards of one job (another model, task, naba version, data, sample, settings, bootstrap or
/// shard count), when a shard is missing or given twice, or when a shard's items are damaged;
/// I/O errors when a file cannot be read.
pub fn merge_shards(dirs: &[PathBuf]) -> Result<Report> {
    if dirs.is_empty() {
        return Err(EvalError::Merge(
            "no shard reports given: pass the report directories of every `naba eval --shard \
             I/N` run of the job"
                .into(),
        ));
    }
    let mut parts = Vec::with_capacity(dirs.len());
    for path in dirs {
        let metrics = read_metrics(path)?;
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        let shard = metrics.shard.clone().ok_or_else(|| {
            EvalError::Merge(format!(
                "{} is not a shard report (its metrics.json has no `shard`); merge takes the \
                 report directories written by `naba eval --shard I/N`",
                path.display()
            ))
        })?;
        parts.push(Part {
            dir,
            metrics,
            shard,
        });
    }
    for p in &parts[1..] {
        check_fit(&parts[0], p)?;
    }
    parts.sort_by_key(|p| p.shard.index);
    for w in parts.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            return Err(EvalError::Merge(format!(
                "shard {}/{} is given twice ({} and {}); give each shard once",
                w[0].shard.index,
                w[0].shard.count,
                w[0].dir.display(),
                w[1].dir.display()
            )));
        }
    }
    let count = parts[0].shard.count;
    let have: Vec<usize> = parts.iter().map(|p| p.shard.index).collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(EvalError::Merge(format!(
            "shard {} missing: the job was split {count} ways and all {count} shard reports \
             are needed (got {})",
            missing.join(", "),
            have.iter()
                .map(|i| format!("{i}/{count}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    let first = &parts[0].metrics;
    let info = RunInfo {
        model: first.model.clone(),
        data_path: first.data_path.clone(),
        naba_version: first.naba_version.clone(),
        timestamp: crate::report::now_rfc3339(),
        label_map: first.label_map.clone(),
        settings: first.settings.clone(),
    };
    let mut opts = EvalOptions {
        bootstrap: BootstrapConfig {
            resamples: first.bootstrap.resamples,
            seed: first.bootstrap.seed,
        },
        selected_labels: selected_labels(first),
        run: None,
        shard: None,
    };
    let issues = first.data_issues.issues.clone();
    let total = parts[0].shard.total;
    let mut report = match &first.scores {
        TaskScores::Classification(_) => {
            let items: Vec<ClassItem> = in_job_order(&parts, total)?;
            opts.run = merged_run(&parts, items.iter().map(|i| i.ms));
            let corpus = ClassificationCorpus {
                source: PathBuf::from(&first.data_path),
                examples: items
                    .iter()
                    .map(|i| ClassificationExample {
                        id: i.id.clone(),
                        line: i.line,
                        text: i.text.clone(),
                        target: i.target.clone(),
                        label: i.gold.clone(),
                    })
                    .collect(),
                issues,
                sample: first.sample.clone(),
                ..ClassificationCorpus::default()
            };
            let predictions: Vec<ClassPrediction> = items
                .into_iter()
                .map(|i| ClassPrediction {
                    label: i.predicted,
                    scores: i.scores,
                })
                .collect();
            Report::classification(&corpus, &predictions, info, &opts)?
        }
        TaskScores::Ner(_) => {
            let items: Vec<NerItem> = in_job_order(&parts, total)?;
            opts.run = merged_run(&parts, items.iter().map(|i| i.ms));
            let mut predictions = Vec::with_capacity(items.len());
            let sentences = items
                .into_iter()
                .map(|i| {
                    predictions.push(i.predicted);
                    NerSentence {
                        id: i.id,
                        line: i.line,
                        tokens: i.tokens,
                        tags: i.gold,
                        token_lines: i.token_lines,
                        raw_lines: i.raw_lines,
                    }
                })
                .collect();
            let corpus = NerCorpus {
                source: PathBuf::from(&first.data_path),
                sentences,
                issues,
                sample: first.sample.clone(),
            };
            Report::ner(&corpus, &predictions, info, &opts)?
        }
    };
    report.metrics.merged_from = parts
        .iter()
        .map(|p| MergedShard {
            index: p.shard.index,
            report: p.dir.display().to_string(),
            items: p.shard.items,
            timestamp: p.metrics.timestamp.clone(),
            wall_seconds: p.metrics.run.map(|r| r.wall_seconds),
        })
        .collect();
    Ok(report)
}

fn selected_labels(m: &MetricsFile) -> Vec<String> {
    match &m.scores {
        TaskScores::Classification(s) => s
            .selected_f1
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default(),
        TaskScores::Ner(_) => Vec::new(),
    }
}

/// Refuses `b` unless it is another shard of `a`'s job, naming the first difference.
fn check_fit(a: &Part, b: &Part) -> Result<()> {
    let differ = |what: &str, x: String, y: String| -> Result<()> {
        if x == y {
            return Ok(());
        }
        Err(EvalError::Merge(format!(
            "{} and {} are not shards of one run: their {what} differs (`{x}` against `{y}`); \
             merge only the reports of one `naba eval --shard I/N` run, every shard with the \
             same model, data and settings",
            a.dir.display(),
            b.dir.display()
        )))
    };
    let (ma, mb) = (&a.metrics, &b.metrics);
    differ(
        "shard count",
        a.shard.count.to_string(),
        b.shard.count.to_string(),
    )?;
    differ(
        "task",
        ma.scores.task().to_string(),
        mb.scores.task().to_string(),
    )?;
    differ("model", ma.model.clone(), mb.model.clone())?;
    differ(
        "naba version",
        ma.naba_version.clone(),
        mb.naba_version.clone(),
    )?;
    // The digest covers every item's id, line, text and gold label after filters, label map
    // and sample, so shards of one data set read from different paths still fit.
    if (a.shard.total, &a.shard.digest) != (b.shard.total, &b.shard.digest) {
        return Err(EvalError::Merge(format!(
            "{} and {} are not shards of one run: they were made from different data ({} items \
             of `{}`, digest {}, against {} items of `{}`, digest {}); merge only the reports \
             of one run, every shard reading the same file with the same columns, filters, \
             label map and --limit/--seed",
            a.dir.display(),
            b.dir.display(),
            a.shard.total,
            ma.data_path,
            a.shard.digest,
            b.shard.total,
            mb.data_path,
            b.shard.digest
        )));
    }
    differ(
        "split (--batch-size, --pack-words)",
        a.shard.dealt.clone(),
        b.shard.dealt.clone(),
    )?;
    differ(
        "label map",
        format!("{:?}", ma.label_map),
        format!("{:?}", mb.label_map),
    )?;
    differ(
        "settings",
        format!("{:?}", ma.settings),
        format!("{:?}", mb.settings),
    )?;
    differ(
        "sample (--limit/--seed)",
        format!("{:?}", ma.sample),
        format!("{:?}", mb.sample),
    )?;
    differ(
        "bootstrap (--bootstrap/--seed)",
        format!(
            "{} resamples, seed {}",
            ma.bootstrap.resamples, ma.bootstrap.seed
        ),
        format!(
            "{} resamples, seed {}",
            mb.bootstrap.resamples, mb.bootstrap.seed
        ),
    )?;
    differ(
        "selected labels",
        selected_labels(ma).join(","),
        selected_labels(mb).join(","),
    )?;
    if ma.data_issues != mb.data_issues {
        return Err(EvalError::Merge(format!(
            "{} and {} found different data issues ({} against {}) in their data; merge only \
             the reports of one run",
            a.dir.display(),
            b.dir.display(),
            ma.data_issues.total,
            mb.data_issues.total
        )));
    }
    Ok(())
}

/// Every shard's items, each put at its position in the job; refuses damaged or overlapping
/// shards.
fn in_job_order<T: DeserializeOwned + HasPosition>(parts: &[Part], total: usize) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = (0..total).map(|_| None).collect();
    for p in parts {
        let path = p.dir.join(files::SHARD_ITEMS);
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io("read", &path, e))?;
        let damaged = |why: String| {
            EvalError::Merge(format!(
                "{}: {why}; the shard report is damaged: run shard {}/{} again",
                path.display(),
                p.shard.index,
                p.shard.count
            ))
        };
        let mut n = 0;
        for (k, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let item: T = serde_json::from_str(line).map_err(|e| {
                damaged(format!(
                    "line {} is not a {} item ({e})",
                    k + 1,
                    p.metrics.scores.task()
                ))
            })?;
            let pos = item.position();
            match slots.get_mut(pos) {
                Some(slot @ None) => *slot = Some(item),
                Some(Some(_)) => {
                    return Err(damaged(format!(
                        "line {}: position {pos} is also in another shard",
                        k + 1
                    )))
                }
                None => {
                    return Err(damaged(format!(
                        "line {}: position {pos} is outside the job's {total} items",
                        k + 1
                    )))
                }
            }
            n += 1;
        }
        if n != p.shard.items {
            return Err(damaged(format!(
                "it holds {n} items but metrics.json says {}",
                p.shard.items
            )));
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(pos, s)| {
            s.ok_or_else(|| {
                EvalError::Merge(format!(
                    "item {pos} of {total} is in none of the shards; the shard reports are \
                     damaged: run the shards again"
                ))
            })
        })
        .collect()
}

pub(crate) trait HasPosition {
    fn position(&self) -> usize;
}

impl HasPosition for ClassItem {
    fn position(&self) -> usize {
        self.position
    }
}

impl HasPosition for NerItem {
    fn position(&self) -> usize {
        self.position
    }
}

/// Run statistics of the whole job: latency percentiles over every item, tokens and wall time
/// added up over the shards (the machine time the job took, so throughput compares with an
/// unsharded run's). `None` when a shard has no timings.
fn merged_run(parts: &[Part], ms: impl Iterator<Item = Option<f64>>) -> Option<RunStats> {
    let runs: Vec<RunStats> = parts.iter().map(|p| p.metrics.run).collect::<Option<_>>()?;
    let timings: Vec<Duration> = ms
        .map(|m| m.and_then(|m| Duration::try_from_secs_f64(m / 1000.0).ok()))
        .collect::<Option<_>>()?;
    let tokens = runs.iter().map(|r| r.tokens).sum();
    let wall: f64 = runs.iter().map(|r| r.wall_seconds).sum();
    let wall = Duration::try_from_secs_f64(wall).ok()?;
    RunStats::from_timings(&timings, tokens, Some(wall)).ok()
}
