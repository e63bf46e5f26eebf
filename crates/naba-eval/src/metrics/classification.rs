//! Single-label classification metrics, as scikit-learn computes them.

use super::{averages, scores_of, Averages, Counts, LabelScores};
use crate::error::{EvalError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A confusion matrix: `matrix[i][j]` counts examples whose gold label is `labels[i]` and whose
/// predicted label is `labels[j]` (rows gold, columns predicted, as scikit-learn).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Row and column labels, sorted.
    pub labels: Vec<String>,
    /// Counts, rows = gold, columns = predicted.
    pub matrix: Vec<Vec<u64>>,
}

/// Classification metrics with scikit-learn's definitions (`zero_division=0`).
///
/// The labels are the sorted union of gold and predicted labels (scikit-learn's
/// `unique_labels`), so a label that appears only in the predictions is part of the macro
/// average with precision, recall and F1 of 0 and support 0, and a gold label never predicted
/// has precision 0.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationMetrics {
    /// Number of examples.
    pub examples: usize,
    /// Fraction of examples predicted correctly (`accuracy_score`).
    pub accuracy: f64,
    /// Micro average (equal to accuracy for single-label data).
    pub micro: Averages,
    /// Unweighted mean over labels.
    pub macro_avg: Averages,
    /// Mean over labels weighted by support.
    pub weighted: Averages,
    /// Scores per label, sorted by label.
    pub per_label: BTreeMap<String, LabelScores>,
    /// The confusion matrix over the same labels.
    pub confusion: ConfusionMatrix,
}

impl ClassificationMetrics {
    /// The mean F1 of the given labels, as `f1_score(labels=..., average="macro",
    /// zero_division=0)`; a label absent from gold and predictions counts as F1 0. This is
    /// Mawqif/StanceEval's official score with `["Favor", "Against"]`. Returns 0 for no labels.
    pub fn mean_f1(&self, labels: &[&str]) -> f64 {
        if labels.is_empty() {
            return 0.0;
        }
        let sum: f64 = labels
            .iter()
            .map(|l| self.per_label.get(*l).map_or(0.0, |s| s.f1))
            .sum();
        sum / labels.len() as f64
    }
}

/// Compute [`ClassificationMetrics`] from gold and predicted labels (same length, same order).
///
/// # Errors
/// When the lengths differ or there are no examples.
pub fn classification_metrics<S: AsRef<str>>(
    gold: &[S],
    pred: &[S],
) -> Result<ClassificationMetrics> {
    let encoded = Encoded::new(gold, pred)?;
    let weights = vec![1u32; encoded.gold.len()];
    Ok(encoded.metrics(&weights))
}

/// The mean F1 of chosen labels straight from gold and predictions; see
/// [`ClassificationMetrics::mean_f1`].
///
/// # Errors
/// As [`classification_metrics`].
pub fn mean_f1_of_labels<S: AsRef<str>>(gold: &[S], pred: &[S], labels: &[&str]) -> Result<f64> {
    Ok(classification_metrics(gold, pred)?.mean_f1(labels))
}

/// Gold and predicted labels as indices into a sorted label list; reused by the bootstrap.
pub(crate) struct Encoded {
    pub labels: Vec<String>,
    pub gold: Vec<usize>,
    pub pred: Vec<usize>,
}

impl Encoded {
    pub(crate) fn new<S: AsRef<str>>(gold: &[S], pred: &[S]) -> Result<Self> {
        if gold.len() != pred.len() {
            return Err(EvalError::LengthMismatch {
                what: "examples".into(),
                gold: gold.len(),
                predicted: pred.len(),
            });
        }
        if gold.is_empty() {
            return Err(EvalError::Empty(
                "there are no examples (is the data file empty, or were all rows skipped? see \
                 the data issues)"
                    .into(),
            ));
        }
        let set: BTreeSet<&str> = gold.iter().chain(pred).map(AsRef::as_ref).collect();
        let labels: Vec<String> = set.iter().map(|s| (*s).to_string()).collect();
        let index: BTreeMap<&str, usize> = set.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let encode = |xs: &[S]| -> Vec<usize> {
            xs.iter()
                .map(|x| index.get(x.as_ref()).copied().unwrap_or(0))
                .collect()
        };
        Ok(Encoded {
            gold: encode(gold),
            pred: encode(pred),
            labels,
        })
    }

    /// Metrics with example `i` counted `weights[i]` times (all 1 for the point estimate, a
    /// bootstrap resample otherwise). Labels that occur in neither gold nor predictions of the
    /// weighted sample are left out, as scikit-learn would on that sample.
    pub(crate) fn metrics(&self, weights: &[u32]) -> ClassificationMetrics {
        let k = self.labels.len();
        let mut matrix = vec![vec![0u64; k]; k];
        let mut n = 0u64;
        let mut correct = 0u64;
        for ((&g, &p), &w) in self.gold.iter().zip(&self.pred).zip(weights) {
            if w == 0 {
                continue;
            }
            let w = u64::from(w);
            matrix[g][p] += w;
            n += w;
            if g == p {
                correct += w;
            }
        }
        let mut present = Vec::new();
        let mut per_label_counts = Vec::new();
        for i in 0..k {
            let gold: u64 = matrix[i].iter().sum();
            let pred: u64 = matrix.iter().map(|row| row[i]).sum();
            if gold + pred == 0 {
                continue;
            }
            let c = Counts {
                tp: matrix[i][i] as f64,
                pred: pred as f64,
                gold: gold as f64,
            };
            present.push(i);
            per_label_counts.push((c, scores_of(c)));
        }
        let (micro, macro_avg, weighted) = averages(&per_label_counts);
        let per_label = present
            .iter()
            .zip(&per_label_counts)
            .map(|(&i, (_, s))| (self.labels[i].clone(), *s))
            .collect();
        let confusion = ConfusionMatrix {
            labels: present.iter().map(|&i| self.labels[i].clone()).collect(),
            matrix: present
                .iter()
                .map(|&i| present.iter().map(|&j| matrix[i][j]).collect())
                .collect(),
        };
        ClassificationMetrics {
            examples: n as usize,
            accuracy: super::div0(correct as f64, n as f64),
            micro,
            macro_avg,
            weighted,
            per_label,
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        let gold = ["a", "a", "b", "b", "c"];
        let pred = ["a", "b", "b", "b", "d"];
        let m = classification_metrics(&gold, &pred).unwrap();
        assert_eq!(m.confusion.labels, ["a", "b", "c", "d"]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        let a = m.per_label["a"];
        assert_eq!((a.precision, a.recall), (1.0, 0.5));
        let c = m.per_label["c"];
        assert_eq!((c.precision, c.recall, c.f1, c.support), (0.0, 0.0, 0.0, 1));
        let d = m.per_label["d"];
        assert_eq!((d.precision, d.recall, d.f1, d.support), (0.0, 0.0, 0.0, 0));
        // macro over 4 labels: a f1 = 2/3, b f1 = 0.8
        assert!((m.macro_avg.f1 - (2.0 / 3.0 + 0.8) / 4.0).abs() < 1e-12);
        assert!((m.micro.f1 - 0.6).abs() < 1e-12);
        assert!((m.mean_f1(&["a", "zzz"]) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn errors() {
        assert!(classification_metrics(&["a"], &["a", "b"]).is_err());
        let empty: [&str; 0] = [];
        assert!(classification_metrics(&empty, &empty).is_err());
    }
}
