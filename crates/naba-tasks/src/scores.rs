//! Scoring helpers for classification heads, with the semantics of the Hugging Face
//! `transformers` text-classification pipeline (checked against transformers 5.17).
//!
//! * [`softmax`] and [`sigmoid`] compute in `f32` the way the pipeline's NumPy code does:
//!   softmax subtracts the row maximum before `exp` and divides by a sum taken in NumPy's
//!   order (pairwise summation, see [`numpy_sum`]).
//! * [`ScoreFunction::for_config`] picks the function the pipeline applies by default from a
//!   model config's `problem_type` and `num_labels`.
//! * [`top_k`] orders labels best first, as the pipeline does when `top_k` is given.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Sum of `values` in exactly the order NumPy uses for a contiguous 1-D `float32` reduction
/// (`np.sum`, the reduction inside `np.mean`/`np.nanmean` and `arr.sum(axis=-1)` over the
/// last axis): fewer than 8 values are added left to right, up to 128 values go through
/// eight interleaved accumulators, and longer runs are split in two recursively.
///
/// Rounding matches NumPy bit for bit, which keeps averaged scores identical to the
/// pipeline's, not merely close.
pub fn numpy_sum(values: &[f32]) -> f32 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        let mut res = 0.0f32;
        for &v in values {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += values[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&values[..half]) + numpy_sum(&values[half..])
    }
}

/// `np.max` over a row: the largest value, or NaN if any value is NaN (NaN propagates).
/// Returns `None` for an empty row.
pub(crate) fn numpy_max(values: &[f32]) -> Option<f32> {
    let (&first, rest) = values.split_first()?;
    let mut best = first;
    if best.is_nan() {
        return Some(best);
    }
    for &v in rest {
        if v.is_nan() {
            return Some(v);
        }
        if v > best {
            best = v;
        }
    }
    Some(best)
}

/// `np.argmax` over a row: the index of the first maximum, or of the first NaN if there is
/// one (NumPy treats NaN as the maximum). Returns `None` for an empty row.
pub(crate) fn numpy_argmax(values: &[f32]) -> Option<usize> {
    let (&first, rest) = values.split_first()?;
    if first.is_nan() {
        return Some(0);
    }
    let mut best = 0;
    let mut best_value = first;
    for (i, &v) in rest.iter().enumerate() {
        if v.is_nan() {
            return Some(i + 1);
        }
        if v > best_value {
            best = i + 1;
            best_value = v;
        }
    }
    Some(best)
}

/// `np.nanmean` over a 1-D `float32` array: NaNs are left out of both the sum and the count,
/// the sum is taken in NumPy's pairwise order; all-NaN or empty input gives NaN.
pub(crate) fn numpy_nanmean(values: &[f32]) -> f32 {
    let mut count = 0usize;
    let cleaned: Vec<f32> = values
        .iter()
        .map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                count += 1;
                v
            }
        })
        .collect();
    // NumPy divides the float32 total by an integer count in float64 and rounds back to
    // float32; for counts below 2^24 that equals a correctly rounded float32 division.
    numpy_sum(&cleaned) / count as f32
}

/// Numerically stable softmax over one row of logits, as the pipelines compute it:
/// `exp(x - max(x)) / sum(exp(x - max(x)))` in `f32`, the sum in NumPy's order.
///
/// An empty row gives an empty vector. As in NumPy, a NaN anywhere makes every output NaN.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let Some(max) = numpy_max(logits) else {
        return Vec::new();
    };
    let shifted: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let total = numpy_sum(&shifted);
    shifted.into_iter().map(|e| e / total).collect()
}

/// Logistic sigmoid of each value, `1 / (1 + exp(-x))` in `f32`, as the text-classification
/// pipeline computes it.
pub fn sigmoid(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|&x| sigmoid_one(x)).collect()
}

/// Logistic sigmoid of one value, `1 / (1 + exp(-x))` in `f32`.
pub fn sigmoid_one(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The function that turns a classification head's logits into scores
/// (the pipeline's `function_to_apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunction {
    /// Softmax across the labels: single-label classification.
    Softmax,
    /// Independent sigmoid per label: multi-label classification or a single logit.
    Sigmoid,
    /// The raw logits: regression.
    None,
}

impl ScoreFunction {
    /// The function the transformers text-classification pipeline applies when the caller
    /// does not choose one, decided from the model config. The rules are tried in order:
    ///
    /// 1. `problem_type == "regression"` → [`ScoreFunction::None`];
    /// 2. `problem_type == "multi_label_classification"` **or** `num_labels == 1` →
    ///    [`ScoreFunction::Sigmoid`] (so a single-label model with one logit gets a sigmoid
    ///    even when its `problem_type` is `"single_label_classification"`);
    /// 3. `problem_type == "single_label_classification"` **or** `num_labels > 1` →
    ///    [`ScoreFunction::Softmax`];
    /// 4. otherwise (no labels and no problem type) → [`ScoreFunction::None`].
    ///
    /// (The pipeline would also honour a `function_to_apply` attribute on the config in
    /// case 4; no stock config carries one, so it is not modelled here.)
    pub fn for_config(problem_type: Option<&str>, num_labels: usize) -> Self {
        match problem_type {
            Some("regression") => Self::None,
            Some("multi_label_classification") => Self::Sigmoid,
            _ if num_labels == 1 => Self::Sigmoid,
            Some("single_label_classification") => Self::Softmax,
            _ if num_labels > 1 => Self::Softmax,
            _ => Self::None,
        }
    }

    /// Applies the function to one row of logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Softmax => softmax(logits),
            Self::Sigmoid => sigmoid(logits),
            Self::None => logits.to_vec(),
        }
    }

    /// The lower-case name used by transformers (`"softmax"`, `"sigmoid"`, `"none"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Sigmoid => "sigmoid",
            Self::None => "none",
        }
    }
}

impl fmt::Display for ScoreFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no [`ScoreFunction`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown score function `{input}`: expected one of softmax, sigmoid, none")]
pub struct ParseScoreFunctionError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for ScoreFunction {
    type Err = ParseScoreFunctionError;

    /// Parses `"softmax"`, `"sigmoid"` or `"none"`, ignoring ASCII case as transformers does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "softmax" => Ok(Self::Softmax),
            "sigmoid" => Ok(Self::Sigmoid),
            "none" => Ok(Self::None),
            _ => Err(ParseScoreFunctionError {
                input: s.to_owned(),
            }),
        }
    }
}

/// One label with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label name (`id2label[i]`).
    pub label: String,
    /// Its score after the [`ScoreFunction`].
    pub score: f32,
}

/// Error from [`top_k`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// The label list and the score row differ in length.
    #[error("{labels} labels but {scores} scores")]
    LengthMismatch {
        /// Number of labels given.
        labels: usize,
        /// Number of scores given.
        scores: usize,
    },
}

/// Labels with their scores, best first, at most `k` of them (`None` keeps all; a `k`
/// larger than the number of labels is fine, `Some(0)` gives nothing).
///
/// Ties keep label order: of two equal scores, the label with the lower index comes first.
/// This is what the pipeline's stable `sort(key=score, reverse=True)` does. NaN scores,
/// whose place Python's sort leaves undefined, are put after every number.
///
/// `top_k(.., Some(1))` gives the pipeline's default single answer (`argmax`) whenever no
/// score is NaN.
pub fn top_k(
    labels: &[String],
    scores: &[f32],
    k: Option<usize>,
) -> Result<Vec<LabelScore>, ScoreError> {
    if labels.len() != scores.len() {
        return Err(ScoreError::LengthMismatch {
            labels: labels.len(),
            scores: scores.len(),
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // `sort_by` is stable, so equal scores stay in label order.
    order.sort_by(|&a, &b| descending_nan_last(scores[a], scores[b]));
    let take = k.unwrap_or(order.len());
    Ok(order
        .into_iter()
        .take(take)
        .map(|i| LabelScore {
            label: labels[i].clone(),
            score: scores[i],
        })
        .collect())
}

/// Ordering for a best-first sort: larger values first, NaN after all numbers, and equal
/// values (including two NaNs) compare equal so a stable sort keeps their order.
fn descending_nan_last(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6
    }

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!(close(p.iter().sum::<f32>(), 1.0));
        assert!(close(p[0], 0.090_030_57));
        assert!(close(p[1], 0.244_728_48));
        assert!(close(p[2], 0.665_240_94));
        // Huge logits would overflow exp without the max subtraction.
        let big = softmax(&[1000.0, 1001.0, 1002.0]);
        assert_eq!(big, p);
        let neg = softmax(&[-1e30, 0.0]);
        assert_eq!(neg, vec![0.0, 1.0]);
    }

    #[test]
    fn softmax_edge_cases() {
        assert!(softmax(&[]).is_empty());
        assert_eq!(softmax(&[5.0]), vec![1.0]);
        let with_nan = softmax(&[1.0, f32::NAN]);
        assert!(with_nan.iter().all(|v| v.is_nan()));
        assert_eq!(softmax(&[2.0, 2.0]), vec![0.5, 0.5]);
    }

    #[test]
    fn sigmoid_values() {
        let s = sigmoid(&[0.0, 2.0, -2.0, 100.0, -100.0]);
        assert_eq!(s[0], 0.5);
        assert!(close(s[1], 0.880_797_1));
        assert!(close(s[2], 0.119_202_92));
        assert_eq!(s[3], 1.0);
        assert!(s[4] >= 0.0 && s[4] < 1e-40);
        assert_eq!(sigmoid_one(0.0), 0.5);
    }

    #[test]
    fn numpy_sum_orders() {
        assert_eq!(numpy_sum(&[]), 0.0);
        assert_eq!(numpy_sum(&[1.0, 2.0, 3.0]), 6.0);
        let v: Vec<f32> = (0..300).map(|i| i as f32 * 0.5).collect();
        assert_eq!(numpy_sum(&v), (0..300).map(|i| i as f32 * 0.5).sum::<f32>());
        // A case where pairwise differs from left-to-right: 8 accumulators keep the small
        // values from being swallowed by the large one.
        let mut w = vec![1e8f32];
        w.extend(std::iter::repeat_n(1.0f32, 15));
        let sequential: f32 = w.iter().sum();
        assert_eq!(sequential, 1e8);
        assert_eq!(numpy_sum(&w), 1e8 + 8.0);
    }

    #[test]
    fn argmax_and_max_follow_numpy() {
        assert_eq!(numpy_argmax(&[]), None);
        assert_eq!(numpy_argmax(&[0.2, 0.5, 0.5, 0.1]), Some(1));
        assert_eq!(numpy_argmax(&[0.2, f32::NAN, 0.9]), Some(1));
        assert_eq!(numpy_argmax(&[f32::NAN, 0.9]), Some(0));
        assert_eq!(numpy_max(&[]), None);
        assert_eq!(numpy_max(&[0.2, 0.7]), Some(0.7));
        assert!(numpy_max(&[0.2, f32::NAN, 0.9]).is_some_and(f32::is_nan));
    }

    #[test]
    fn nanmean_skips_nan() {
        assert_eq!(numpy_nanmean(&[1.0, f32::NAN, 3.0]), 2.0);
        assert!(numpy_nanmean(&[f32::NAN]).is_nan());
        assert!(numpy_nanmean(&[]).is_nan());
    }

    #[test]
    fn score_function_defaults() {
        use ScoreFunction as F;
        assert_eq!(F::for_config(None, 3), F::Softmax);
        assert_eq!(F::for_config(None, 2), F::Softmax);
        assert_eq!(F::for_config(None, 1), F::Sigmoid);
        assert_eq!(F::for_config(None, 0), F::None);
        assert_eq!(F::for_config(Some("regression"), 1), F::None);
        assert_eq!(F::for_config(Some("regression"), 5), F::None);
        assert_eq!(
            F::for_config(Some("multi_label_classification"), 5),
            F::Sigmoid
        );
        assert_eq!(
            F::for_config(Some("single_label_classification"), 5),
            F::Softmax
        );
        // num_labels == 1 wins over single_label_classification, as in the pipeline.
        assert_eq!(
            F::for_config(Some("single_label_classification"), 1),
            F::Sigmoid
        );
        assert_eq!(
            F::for_config(Some("single_label_classification"), 0),
            F::Softmax
        );
        assert_eq!(F::for_config(Some("something_else"), 4), F::Softmax);
    }

    #[test]
    fn score_function_parse_display_apply() {
        assert_eq!(
            "SoftMax".parse::<ScoreFunction>(),
            Ok(ScoreFunction::Softmax)
        );
        assert_eq!(
            "sigmoid".parse::<ScoreFunction>(),
            Ok(ScoreFunction::Sigmoid)
        );
        assert_eq!("none".parse::<ScoreFunction>(), Ok(ScoreFunction::None));
        let err = "relu".parse::<ScoreFunction>().unwrap_err();
        assert!(err.to_string().contains("relu"));
        assert_eq!(ScoreFunction::Sigmoid.to_string(), "sigmoid");
        assert_eq!(ScoreFunction::None.apply(&[3.0, -1.0]), vec![3.0, -1.0]);
        assert_eq!(ScoreFunction::Sigmoid.apply(&[0.0]), vec![0.5]);
        assert_eq!(ScoreFunction::Softmax.apply(&[0.0, 0.0]), vec![0.5, 0.5]);
    }

    #[test]
    fn top_k_orders_best_first_with_stable_ties() {
        let l = labels(&["neg", "neu", "pos", "mixed"]);
        let s = [0.2, 0.3, 0.3, 0.2];
        let all = top_k(&l, &s, None).unwrap();
        let names: Vec<&str> = all.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(names, ["neu", "pos", "neg", "mixed"]);
        let two = top_k(&l, &s, Some(2)).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].label, "neu");
        assert_eq!(top_k(&l, &s, Some(10)).unwrap().len(), 4);
        assert!(top_k(&l, &s, Some(0)).unwrap().is_empty());
    }

    #[test]
    fn top_k_nan_last_and_length_mismatch() {
        let l = labels(&["a", "b", "c"]);
        let r = top_k(&l, &[f32::NAN, 0.1, 0.9], None).unwrap();
        assert_eq!(r[0].label, "c");
        assert_eq!(r[1].label, "b");
        assert_eq!(r[2].label, "a");
        assert_eq!(
            top_k(&l, &[0.5], None),
            Err(ScoreError::LengthMismatch {
                labels: 3,
                scores: 1
            })
        );
        assert!(top_k(&[], &[], Some(3)).unwrap().is_empty());
    }
}
