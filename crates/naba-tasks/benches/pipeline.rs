//! Criterion benchmarks of the three stages a request goes through: tokenisation into windows,
//! the encoder forward pass, and post-processing (sub-word scores into entities). They use the
//! installed `ner-anercorp` model and the two example articles in `../shared/examples` when
//! present (`naba models fetch`), else the tiny parity fixture and a built-in text, so they
//! always run. `cargo bench -p naba-tasks`.

use criterion::{criterion_group, criterion_main, Criterion};
use naba_models::{Batch, LoadOptions, Model};
use naba_tasks::{
    aggregate_windows_decoded, AggregationStrategy, Decoding, NerOptions, Pipeline,
    PipelineOptions, TokenScores,
};
use std::path::PathBuf;

const FALLBACK_TEXT: &str = "أجرى الرئيس الأمريكي جو بايدن اتصالا هاتفيا مع نظيره الروسي \
    فلاديمير بوتين، وقال البيت الأبيض إن المحادثات تناولت الحد من التسلح والأمن في أوروبا. ";

fn model_spec() -> String {
    let installed = naba_models::fetch::cache_root().join("models/ner-anercorp");
    if installed.join("config.json").is_file() {
        return installed.to_string_lossy().into_owned();
    }
    format!(
        "{}/tests/fixtures/parity/bert-token-cls",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn articles() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/examples");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        out.push(FALLBACK_TEXT.repeat(12));
    }
    out
}

fn stages(c: &mut Criterion) {
    let spec = model_spec();
    let model = Model::load(&spec, &LoadOptions::default()).expect("benchmark model loads");
    let pipeline = Pipeline::new(model, &PipelineOptions::default()).expect("pipeline");
    let texts = articles();
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);

    g.bench_function("tokenise-windows", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| pipeline.windows(t, None).expect("windows").len())
                .sum::<usize>()
        })
    });

    let windows: Vec<_> = texts
        .iter()
        .flat_map(|t| pipeline.windows(t, None).expect("windows"))
        .collect();
    let model = pipeline.model();
    let ids: Vec<Vec<u32>> = windows.iter().map(|e| e.get_ids().to_vec()).collect();
    let batch = Batch::from_rows(
        &ids,
        None,
        model.config.pad_token_id,
        model.encoder.device(),
    )
    .expect("batch");
    g.bench_function("encoder-forward", |b| {
        b.iter(|| model.encoder.forward(&batch).expect("forward"))
    });

    // Post-processing alone: fixed, made-up probabilities over the real windows' tokens.
    let labels = &model.config.labels;
    let n = labels.len().max(1);
    let probs: Vec<Vec<f32>> = windows
        .iter()
        .map(|e| {
            (0..e.len() * n)
                .map(|i| {
                    if i % n == (i / n) % n {
                        0.9
                    } else {
                        0.1 / n as f32
                    }
                })
                .collect()
        })
        .collect();
    let text = &texts[0];
    let first = pipeline.windows(text, None).expect("windows");
    let rows: Vec<Vec<TokenScores>> = first
        .iter()
        .zip(&probs)
        .map(|(e, p)| {
            (0..e.len())
                .map(|i| {
                    let (s, end) = e.get_offsets()[i];
                    TokenScores {
                        token: &e.get_tokens()[i],
                        start: s.min(text.chars().count()),
                        end: end.min(text.chars().count()),
                        special: e.get_special_tokens_mask()[i] == 1,
                        unk: false,
                        scores: &p[i * n..(i + 1) * n],
                        index: i,
                    }
                })
                .collect()
        })
        .collect();
    g.bench_function("post-process-entities", |b| {
        b.iter(|| {
            aggregate_windows_decoded(
                text,
                &rows,
                labels,
                Some("▁"),
                AggregationStrategy::First,
                Decoding::Iob2,
                &["O"],
            )
        })
    });

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    g.bench_function("ner-end-to-end", |b| {
        b.iter(|| pipeline.ner(&refs, &NerOptions::default()))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
