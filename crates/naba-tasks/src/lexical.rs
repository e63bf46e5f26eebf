//! A lexical member beside a topic model: TF-IDF features with a multinomial logistic
//! regression, whose probabilities are averaged with the encoder's.
//!
//! The encoder reads an article in windows and sees sub-words; a bag of hashed word and
//! character n-grams sees every word of the whole article at once and catches names and terms
//! that settle a topic. The two err on different articles, so their average beats each (on ANT
//! dev the average gained about two points over either). The member is fitted by
//! `naba lexical` (`naba_train::lexical`) on the training split only, and the share it gets in
//! the average is chosen on dev.
//!
//! It lives beside the model in [`PARAMS_FILE`] and [`WEIGHTS_FILE`]; a model without them is
//! read by the encoder alone.

use crate::pipeline::TaskError;
use candle_core::{DType, Device, Tensor};
use naba_text::{normalize, NormalizeOptions};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The member's settings and labels, in the model's directory.
pub const PARAMS_FILE: &str = "lexical.json";
/// Its IDF table, weights (f16, one row of label weights per bucket) and biases.
pub const WEIGHTS_FILE: &str = "lexical.safetensors";

/// How text becomes features: n-grams hashed into `buckets` slots.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeatureSpec {
    pub buckets: u32,
    /// Word n-gram lengths, inclusive (words are runs of two or more letters or digits).
    pub word_ngrams: (usize, usize),
    /// Character n-gram lengths inside each word padded with a space on both sides.
    pub char_ngrams: (usize, usize),
}

impl Default for FeatureSpec {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            word_ngrams: (1, 2),
            char_ngrams: (2, 5),
        }
    }
}

/// What `naba lexical` writes to [`PARAMS_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LexicalParams {
    pub features: FeatureSpec,
    /// The model's labels, in its order.
    pub labels: Vec<String>,
    /// The member's share of the average: p = (1 - mix) * encoder + mix * lexical.
    pub mix: f32,
    /// Stance: the member reads a text against a target (see [`FeatureSpec::counts`]) and
    /// blends only with inputs that have one; otherwise only with inputs that have none.
    #[serde(default)]
    pub pairs: bool,
    /// What it was fitted on and how `mix` was chosen, for the model card.
    #[serde(default)]
    pub fitted_on: String,
}

/// A sparse feature vector: (bucket, value), buckets ascending and distinct.
pub type Sparse = Vec<(u32, f32)>;

/// Raw n-gram counts of one text, one sparse list per feature family.
pub type Counts = Vec<Vec<(u32, f32)>>;

/// Arabic normalisation (every fold) and lower case: spelling variants count as one n-gram.
fn fold(text: &str) -> String {
    normalize(text, &NormalizeOptions::all())
        .text
        .to_lowercase()
}

impl FeatureSpec {
    fn check(&self) -> Result<(), String> {
        let ok = |(lo, hi): (usize, usize)| lo >= 1 && lo <= hi && hi <= 8;
        if self.buckets == 0 || !ok(self.word_ngrams) || !ok(self.char_ngrams) {
            return Err(format!(
                "features need buckets > 0 and n-gram ranges 1 <= low <= high <= 8, got {self:?}"
            ));
        }
        Ok(())
    }

    /// Each distinct bucket of `text` with its raw count, buckets ascending, one list per
    /// family: word n-grams and character n-grams; with a stance `target`, the same two again
    /// hashed together with the target, so that a phrase can lean one way toward one target
    /// and the other way toward another.
    pub fn counts(&self, text: &str, target: Option<&str>) -> Counts {
        let normalized = fold(text);
        let words: Vec<&str> = normalized
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let long: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| w.chars().nth(1).is_some())
            .collect();
        let target = target.map(fold);
        let salts: Vec<Option<&str>> = match &target {
            Some(t) => vec![None, Some(t.trim())],
            None => vec![None],
        };
        let mut families = Vec::with_capacity(2 * salts.len());
        for salt in salts {
            let mut word = HashMap::new();
            for n in self.word_ngrams.0..=self.word_ngrams.1 {
                for gram in long.windows(n) {
                    *word.entry(self.bucket(b'w', salt, gram)).or_insert(0.0) += 1.0;
                }
            }
            let mut chars = HashMap::new();
            let mut padded: Vec<char> = Vec::new();
            let mut buf = String::new();
            for w in &words {
                padded.clear();
                padded.push(' ');
                padded.extend(w.chars());
                padded.push(' ');
                for n in self.char_ngrams.0..=self.char_ngrams.1.min(padded.len()) {
                    for gram in padded.windows(n) {
                        buf.clear();
                        buf.extend(gram);
                        *chars
                            .entry(self.bucket(b'c', salt, &[buf.as_str()]))
                            .or_insert(0.0) += 1.0;
                    }
                }
            }
            families.push(sorted(word));
            families.push(sorted(chars));
        }
        families
    }

    /// TF-IDF of `text` (read against `target` for stance): sublinear counts (1 + ln tf) times
    /// `idf`, each family scaled to unit length, the families summed.
    pub fn tfidf(&self, text: &str, target: Option<&str>, idf: &[f32]) -> Sparse {
        tfidf_of_counts(self.counts(text, target), idf)
    }

    /// FNV-1a over the family tag, the salt (a target) and the n-gram's parts joined by spaces:
    /// stable across platforms and Rust versions, as a shipped model needs.
    fn bucket(&self, family: u8, salt: Option<&str>, parts: &[&str]) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        eat(family);
        if let Some(salt) = salt {
            salt.bytes().for_each(&mut eat);
            eat(0x1f);
        }
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                eat(b' ');
            }
            p.bytes().for_each(&mut eat);
        }
        (h % u64::from(self.buckets)) as u32
    }
}

/// [`FeatureSpec::tfidf`] from counts already taken.
pub fn tfidf_of_counts(counts: Counts, idf: &[f32]) -> Sparse {
    let mut out: HashMap<u32, f32> = HashMap::new();
    for family in counts {
        let weighted: Vec<(u32, f32)> = family
            .into_iter()
            .map(|(b, tf)| {
                (
                    b,
                    (1.0 + tf.ln()) * idf.get(b as usize).copied().unwrap_or(0.0),
                )
            })
            .collect();
        let norm = weighted.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (b, v) in weighted {
                *out.entry(b).or_insert(0.0) += v / norm;
            }
        }
    }
    sorted(out)
}

fn sorted(map: HashMap<u32, f32>) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = map.into_iter().collect();
    v.sort_unstable_by_key(|(b, _)| *b);
    v
}

/// A fitted member: settings, IDF and a linear layer over the buckets.
#[derive(Debug, Clone)]
pub struct Lexical {
    pub params: LexicalParams,
    pub idf: Vec<f32>,
    /// `buckets x labels`, row-major: a bucket's weights for every label side by side.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Lexical {
    /// Checks the shapes agree with the settings.
    pub fn new(
        params: LexicalParams,
        idf: Vec<f32>,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self, String> {
        params.features.check()?;
        let (b, k) = (params.features.buckets as usize, params.labels.len());
        if k < 2 || idf.len() != b || weights.len() != b * k || bias.len() != k {
            return Err(format!(
                "{k} labels and {b} buckets need an IDF of {b}, weights of {} and biases of {k}; \
                 got {}, {} and {}",
                b * k,
                idf.len(),
                weights.len(),
                bias.len()
            ));
        }
        if !(0.0..=1.0).contains(&params.mix) {
            return Err(format!("mix must lie in [0, 1], got {}", params.mix));
        }
        Ok(Self {
            params,
            idf,
            weights,
            bias,
        })
    }

    /// Label probabilities of `text` (against `target` for a stance member), in the params'
    /// label order.
    pub fn probabilities(&self, text: &str, target: Option<&str>) -> Vec<f32> {
        let x = self.params.features.tfidf(text, target, &self.idf);
        predict(&self.weights, &self.bias, &x)
    }

    /// Whether this member reads inputs with (stance) or without (topic) a target.
    pub fn reads(&self, target: Option<&str>) -> bool {
        self.params.pairs == target.is_some()
    }

    /// Averages the encoder's probabilities `p` of `text` with this member's, by `mix`.
    pub fn blend(&self, text: &str, target: Option<&str>, p: &mut [f32]) {
        average_into(p, &self.probabilities(text, target), self.params.mix);
    }

    /// This member as [`Lexical::write`] stores it and [`Lexical::read`] returns it, weights
    /// rounded through f16, so a share chosen in memory is chosen for what will run.
    pub fn as_stored(mut self) -> Result<Self, TaskError> {
        self.weights = Tensor::from_slice(&self.weights, self.weights.len(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())?;
        Ok(self)
    }

    /// Reads the member beside a model; `None` when the directory has none. An error when
    /// only one of the two files is there, or they do not hold a member.
    pub fn read(dir: &Path) -> Result<Option<Self>, TaskError> {
        let (pp, wp) = (dir.join(PARAMS_FILE), dir.join(WEIGHTS_FILE));
        if !pp.is_file() && !wp.is_file() {
            return Ok(None);
        }
        let bad = |why: String| {
            TaskError::Tokenizer(format!(
                "{} does not hold a lexical member ({why}); refit it with `naba lexical` or \
                 delete {PARAMS_FILE} and {WEIGHTS_FILE} to read with the encoder alone",
                dir.display()
            ))
        };
        let text = std::fs::read_to_string(&pp).map_err(|e| bad(format!("{PARAMS_FILE}: {e}")))?;
        let params: LexicalParams =
            serde_json::from_str(&text).map_err(|e| bad(format!("{PARAMS_FILE}: {e}")))?;
        let tensors = candle_core::safetensors::load(&wp, &Device::Cpu)
            .map_err(|e| bad(format!("{WEIGHTS_FILE}: {e}")))?;
        let get = |name: &str| -> Result<Vec<f32>, TaskError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("{WEIGHTS_FILE} has no tensor `{name}`")))?;
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(format!("{name}: {e}")))
        };
        let member = Self::new(params, get("idf")?, get("weight")?, get("bias")?).map_err(bad)?;
        Ok(Some(member))
    }

    /// Writes both files into `dir`, weights rounded to f16 (what is read back is what runs).
    /// Each is written beside its place and renamed into it, so an interrupted write leaves the
    /// old file, not half a new one.
    pub fn write(&self, dir: &Path) -> Result<(), TaskError> {
        let err = |e: String| TaskError::Tokenizer(format!("cannot write {}: {e}", dir.display()));
        let (b, k) = (self.idf.len(), self.bias.len());
        let cpu = Device::Cpu;
        let tensor = |v: &[f32], shape: &[usize], dtype: DType| {
            Tensor::from_slice(v, shape, &cpu).and_then(|t| t.to_dtype(dtype))
        };
        let tensors: HashMap<String, Tensor> = [
            ("idf", tensor(&self.idf, &[b], DType::F32)),
            ("weight", tensor(&self.weights, &[b, k], DType::F16)),
            ("bias", tensor(&self.bias, &[k], DType::F32)),
        ]
        .into_iter()
        .map(|(n, t)| t.map(|t| (n.to_string(), t)))
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
        let partial = |name: &str| dir.join(format!(".{name}.partial"));
        candle_core::safetensors::save(&tensors, partial(WEIGHTS_FILE))
            .map_err(|e| err(e.to_string()))?;
        let json = serde_json::to_string_pretty(&self.params).map_err(|e| err(e.to_string()))?;
        std::fs::write(partial(PARAMS_FILE), json + "\n").map_err(|e| err(e.to_string()))?;
        for name in [WEIGHTS_FILE, PARAMS_FILE] {
            std::fs::rename(partial(name), dir.join(name)).map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }
}

/// Label probabilities of one feature row: softmax(`bias` + x · `weights`).
pub fn predict(weights: &[f32], bias: &[f32], x: &[(u32, f32)]) -> Vec<f32> {
    let mut z = bias.to_vec();
    logits_into(weights, x, &mut z);
    crate::scores::softmax(&z)
}

/// `p = (1 - mix) * p + mix * q`: the encoder's probabilities averaged with the member's.
pub fn average_into(p: &mut [f32], q: &[f32], mix: f32) {
    for (a, b) in p.iter_mut().zip(q) {
        *a = (1.0 - mix) * *a + mix * b;
    }
}

/// `z += x · W` for a sparse `x` over a `buckets x labels` row-major `W`.
pub fn logits_into(weights: &[f32], x: &[(u32, f32)], z: &mut [f32]) {
    let k = z.len();
    for &(b, v) in x {
        let row = &weights[b as usize * k..][..k];
        for (zi, w) in z.iter_mut().zip(row) {
            *zi += v * w;
        }
    }
}

/// How [`fit`] trains the linear layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    pub epochs: usize,
    /// Adam's step size at the start; it falls linearly to zero over the run.
    pub lr: f32,
    /// Decoupled weight decay (AdamW), the regulariser.
    pub weight_decay: f32,
    pub batch_size: usize,
    /// Weigh each example by `n / (labels * count of its label)`, as scikit-learn's
    /// `class_weight="balanced"`.
    pub balanced: bool,
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            epochs: 10,
            lr: 0.02,
            weight_decay: 0.1,
            batch_size: 32,
            balanced: true,
            seed: 13,
        }
    }
}

/// IDF of every bucket over the training counts: `ln((1 + n) / (1 + df)) + 1`, scikit-learn's
/// smoothed form; a bucket counts once per document whichever family hit it.
pub fn idf_of(counts: &[Counts], buckets: u32) -> Vec<f32> {
    let mut df = vec![0u32; buckets as usize];
    let mut seen = vec![u32::MAX; buckets as usize];
    for (doc, families) in counts.iter().enumerate() {
        for &(b, _) in families.iter().flatten() {
            let b = b as usize;
            if seen[b] != doc as u32 {
                seen[b] = doc as u32;
                df[b] += 1;
            }
        }
    }
    let n = counts.len() as f32;
    df.iter()
        .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
        .collect()
}

/// The TF-IDF rows of `(text, target)` pairs with the IDF they define: a training set for
/// [`fit`] in one call, on one thread (`naba lexical` does the same steps on all of them).
pub fn featurize(spec: &FeatureSpec, docs: &[(&str, Option<&str>)]) -> (Vec<Sparse>, Vec<f32>) {
    let counts: Vec<Counts> = docs.iter().map(|(t, g)| spec.counts(t, *g)).collect();
    let idf = idf_of(&counts, spec.buckets);
    let xs = counts
        .into_iter()
        .map(|c| tfidf_of_counts(c, &idf))
        .collect();
    (xs, idf)
}

/// Fits a multinomial logistic regression on sparse rows `xs` with labels `ys` (indices below
/// `labels`) by mini-batch AdamW; `on_epoch(epoch, weights, bias, mean loss)` runs after each
/// epoch (progress, dev scoring). Returns the `buckets x labels` weights and the biases.
/// Deterministic for a seed: one thread, fixed order.
pub fn fit(
    xs: &[Sparse],
    ys: &[usize],
    labels: usize,
    buckets: u32,
    opts: &FitOptions,
    mut on_epoch: impl FnMut(usize, &[f32], &[f32], f32),
) -> Result<(Vec<f32>, Vec<f32>), String> {
    if xs.is_empty() || xs.len() != ys.len() {
        return Err(format!(
            "need as many labels as examples, and at least one: {} examples, {} labels",
            xs.len(),
            ys.len()
        ));
    }
    if let Some(y) = ys.iter().find(|&&y| y >= labels) {
        return Err(format!("label index {y} is not below the {labels} labels"));
    }
    if opts.epochs == 0
        || opts.batch_size == 0
        || !(opts.lr.is_finite() && opts.lr > 0.0)
        || opts.weight_decay.is_nan()
        || opts.weight_decay < 0.0
    {
        return Err(format!(
            "epochs, batch size and lr must be positive: {opts:?}"
        ));
    }
    let k = labels;
    let n = xs.len();
    let mut count = vec![0usize; k];
    ys.iter().for_each(|&y| count[y] += 1);
    let class_weight: Vec<f32> = count
        .iter()
        .map(|&c| match (opts.balanced, c) {
            (false, _) | (_, 0) => 1.0,
            (true, c) => n as f32 / (k * c) as f32,
        })
        .collect();
    let size = buckets as usize * k;
    // Parameters, then Adam's two moments, for weights and biases alike.
    let (mut w, mut mw, mut vw) = (vec![0f32; size], vec![0f32; size], vec![0f32; size]);
    let (mut b, mut mb, mut vb) = (vec![0f32; k], vec![0f32; k], vec![0f32; k]);
    let mut gw = vec![0f32; size];
    let mut gb = vec![0f32; k];
    let mut touched: Vec<u32> = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    let steps_per_epoch = n.div_ceil(opts.batch_size);
    let total = (steps_per_epoch * opts.epochs) as f32;
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut rng = naba_eval::SplitMix64::new(opts.seed);
    let mut step = 0usize;
    for epoch in 0..opts.epochs {
        // Fisher-Yates with the seeded generator.
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut loss_sum = 0f64;
        for batch in order.chunks(opts.batch_size) {
            step += 1;
            let norm: f32 = batch.iter().map(|&i| class_weight[ys[i]]).sum();
            for &i in batch {
                let p = predict(&w, &b, &xs[i]);
                let cw = class_weight[ys[i]] / norm;
                loss_sum += f64::from(-(p[ys[i]].max(1e-30)).ln() * class_weight[ys[i]]);
                let mut g = p;
                g[ys[i]] -= 1.0;
                g.iter_mut().for_each(|v| *v *= cw);
                for (a, gi) in gb.iter_mut().zip(&g) {
                    *a += gi;
                }
                for &(bucket, v) in &xs[i] {
                    let row = &mut gw[bucket as usize * k..][..k];
                    if row.iter().all(|&r| r == 0.0) {
                        touched.push(bucket);
                    }
                    for (a, gi) in row.iter_mut().zip(&g) {
                        *a += v * gi;
                    }
                }
            }
            let lr = opts.lr * (1.0 - (step - 1) as f32 / total);
            let (c1, c2) = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
            // Every weight decays and carries its momentum each step, so the whole table is
            // walked; the gradient is non-zero only in the rows this batch touched.
            let decay = 1.0 - lr * opts.weight_decay;
            let adam = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *p = *p * decay - lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            };
            for (((p, m), v), g) in w.iter_mut().zip(&mut mw).zip(&mut vw).zip(&gw) {
                adam(p, m, v, *g);
            }
            for (((p, m), v), g) in b.iter_mut().zip(&mut mb).zip(&mut vb).zip(&gb) {
                adam(p, m, v, *g);
            }
            for bucket in touched.drain(..) {
                gw[bucket as usize * k..][..k].fill(0.0);
            }
            gb.fill(0.0);
        }
        let total_weight: f64 = ys.iter().map(|&y| f64::from(class_weight[y])).sum();
        on_epoch(epoch + 1, &w, &b, (loss_sum / total_weight) as f32);
    }
    Ok((w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FeatureSpec {
        FeatureSpec {
            buckets: 1 << 12,
            ..FeatureSpec::default()
        }
    }

    #[test]
    fn counts_see_words_bigrams_and_padded_characters() {
        let counts = spec().counts("فاز المنتخب، فاز!", None);
        let [words, chars] = &counts[..] else {
            panic!("two families without a target")
        };
        // Words: فاز twice, المنتخب; bigrams: "فاز المنتخب", "المنتخب فاز".
        let total: f32 = words.iter().map(|(_, c)| c).sum();
        assert_eq!(total, 5.0);
        assert!(words.iter().any(|&(_, c)| c == 2.0));
        // " فاز " has 4 + 3 + 2 + 1 n-grams of 2..5 characters; twice; " المنتخب " 8+7+6+5.
        let total: f32 = chars.iter().map(|(_, c)| c).sum();
        assert_eq!(total, 2.0 * 10.0 + 26.0);
    }

    #[test]
    fn normalisation_and_case_do_not_change_features() {
        let s = spec();
        assert_eq!(
            s.counts("أحمد Football", None),
            s.counts("احمد football", None)
        );
        assert_eq!(s.counts("كُرة", None), s.counts("كره", None));
    }

    #[test]
    fn a_target_adds_crossed_families_that_differ_by_target() {
        let s = spec();
        let plain = s.counts("نؤيد القرار", None);
        let a = s.counts("نؤيد القرار", Some("اللقاح"));
        let b = s.counts("نؤيد القرار", Some("التحول الرقمي"));
        assert_eq!(a.len(), 4);
        assert_eq!(a[..2], plain[..]);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        assert_eq!(a, s.counts("نؤيد القرار", Some(" اللُّقاح ")));
    }

    #[test]
    fn tfidf_families_have_unit_length() {
        let s = spec();
        let idf = vec![1.0; s.buckets as usize];
        let x = s.tfidf("الاقتصاد ينمو والبورصة ترتفع", None, &idf);
        let norm2: f32 = x.iter().map(|(_, v)| v * v).sum();
        // Two unit vectors summed: 2 when they share no bucket, a little more when they do.
        assert!((norm2 - 2.0).abs() < 0.2, "{norm2}");
        assert!(x.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(s.tfidf("", None, &idf).is_empty());
    }

    #[test]
    fn a_written_member_reads_back_and_blends() {
        let s = spec();
        let b = s.buckets as usize;
        let idf: Vec<f32> = (0..b).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect();
        let weights: Vec<f32> = (0..b * 3)
            .map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let params = LexicalParams {
            features: s,
            labels: vec!["a".into(), "b".into(), "c".into()],
            mix: 0.25,
            pairs: false,
            fitted_on: "test".into(),
        };
        let m = Lexical::new(params, idf, weights, vec![0.1, -0.2, 0.0]).unwrap();
        let dir = std::env::temp_dir().join(format!("naba-lexical-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        m.write(&dir).unwrap();
        let back = Lexical::read(&dir).unwrap().unwrap();
        let (p, q) = (
            m.probabilities("نص قصير", None),
            back.probabilities("نص قصير", None),
        );
        for (a, b) in p.iter().zip(&q) {
            assert!(
                (a - b).abs() < 1e-3,
                "f16 weights moved a probability: {a} vs {b}"
            );
        }
        let mut enc = vec![1.0, 0.0, 0.0];
        back.blend("نص قصير", None, &mut enc);
        assert!((enc[0] - (0.75 + 0.25 * q[0])).abs() < 1e-6);
        assert!((enc.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        std::fs::remove_file(dir.join(PARAMS_FILE)).unwrap();
        let err = Lexical::read(&dir).unwrap_err().to_string();
        assert!(err.contains("lexical.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Lexical::read(&dir).unwrap().is_none());
    }

    #[test]
    fn fit_learns_a_topic_from_words_and_repeats_exactly() {
        let s = spec();
        let docs = [
            ("فاز المنتخب بالمباراة وسجل الهداف هدفين", 0),
            ("خسر الفريق المباراة أمام المنتخب", 0),
            ("الهداف يقود الفريق إلى الفوز", 0),
            ("ارتفعت أسعار النفط والبورصة", 1),
            ("البنك المركزي يرفع أسعار الفائدة", 1),
            ("تراجع التضخم وارتفعت البورصة", 1),
            ("البورصة والنفط والتضخم", 1),
        ];
        let texts: Vec<(&str, Option<&str>)> = docs.iter().map(|(t, _)| (*t, None)).collect();
        let (xs, idf) = featurize(&s, &texts);
        let ys: Vec<usize> = docs.iter().map(|(_, y)| *y).collect();
        let opts = FitOptions {
            epochs: 30,
            lr: 0.05,
            batch_size: 2,
            ..FitOptions::default()
        };
        let mut losses = Vec::new();
        let (w, b) = fit(&xs, &ys, 2, s.buckets, &opts, |_, _, _, l| losses.push(l)).unwrap();
        assert!(losses[29] < losses[0] * 0.2, "{losses:?}");
        let params = LexicalParams {
            features: s,
            labels: vec!["sport".into(), "economy".into()],
            mix: 1.0,
            pairs: false,
            fitted_on: String::new(),
        };
        let m = Lexical::new(params, idf, w.clone(), b).unwrap();
        assert!(m.probabilities("سجل الهداف في المباراة", None)[0] > 0.5);
        assert!(m.probabilities("أسعار البورصة", None)[1] > 0.5);
        let (again, _) = fit(&xs, &ys, 2, s.buckets, &opts, |_, _, _, _| {}).unwrap();
        assert_eq!(w, again);
        assert!(fit(&xs, &ys[1..], 2, s.buckets, &opts, |_, _, _, _| {}).is_err());
        assert!(fit(
            &xs,
            &vec![2; xs.len()],
            2,
            s.buckets,
            &opts,
            |_, _, _, _| {}
        )
        .is_err());
    }
}
