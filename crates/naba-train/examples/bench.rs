//! Throughput of training options on real data: `cargo run --release -p naba-train --example
//! bench -- TRAIN.txt N_SENTENCES STEPS LAYERS...` (needs `naba models fetch`). Each LAYERS is
//! a count of top layers that train (`12`), or that count with the rank of low-rank adapters
//! that train in their place (`12r8`).

use anyhow::Result;
use naba_train::data;
use naba_train::net::{HeadType, Mode, TrainNet, Trainable};
use naba_train::rng::Rng;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .cloned()
        .unwrap_or("../shared/datasets/anercorp/train.txt".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let layers = args
        .iter()
        .skip(4)
        .map(|s| {
            let (l, r) = s.split_once('r').unwrap_or((s, "0"));
            Ok(Trainable {
                layers: l.parse()?,
                lora_rank: r.parse()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let base = naba_train::checkpoint::open_base("multilingual-e5-small-q4", false)?;
    let tok = naba_models::tokenizer::load(&base.dir)?;
    let sents = data::read_conll_sentences(path.as_ref())?;
    let refs: Vec<_> = sents.iter().take(n).collect();
    let labels: Vec<String> = [
        "O", "B-PERS", "I-PERS", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let split = data::ner_split(&refs, &tok, &labels, 256, "", false, false)?;
    println!(
        "{} examples, {} sub-words",
        split.examples.len(),
        split.tokens()
    );
    for &tl in &layers {
        let label = format!("{}r{}", tl.layers, tl.lora_rank);
        let net = TrainNet::load(
            &base.weights,
            &base.config,
            &base.prefix,
            HeadType::Token,
            9,
            tl,
            1,
        )?;
        // Cache cost (frozen part) over all examples.
        let t = Instant::now();
        let mut cached = Vec::new();
        for b in split.examples.chunks(16) {
            let rows: Vec<Vec<u32>> = b.iter().map(|e| e.ids.clone()).collect();
            let (x, mask) = net.embed(&rows)?;
            let h = net.blocks_forward(&x, &mask, 0, net.first_trained, Mode::Infer, None)?;
            cached.push((
                h,
                mask,
                b.iter()
                    .flat_map(|e| {
                        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
                        let mut l = e.labels.clone();
                        l.resize(s, -100);
                        l
                    })
                    .collect::<Vec<i64>>(),
                rows.iter().map(Vec::len).sum::<usize>(),
            ));
        }
        let cache_s = t.elapsed().as_secs_f64();
        let vars: Vec<_> = net
            .trainable()
            .filter_map(|p| p.var.clone().map(|v| (p.name.clone(), v, 1e-4, p.decay)))
            .collect();
        let nparams: usize = vars.iter().map(|v| v.1.elem_count()).sum();
        let mut opt = naba_train::optim::AdamW::new(
            vars,
            naba_train::optim::AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            },
        )?;
        let t = Instant::now();
        let mut toks = 0;
        for s in 0..steps {
            let (h, mask, targets, nt) = &cached[s % cached.len()];
            let mut rng = Rng::new(s as u64);
            let out = net.blocks_forward(
                h,
                mask,
                net.first_trained,
                net.num_layers(),
                Mode::Train,
                Some((&mut rng, 0.1)),
            )?;
            let logits = net.head_forward(&out, Some((&mut rng, 0.1)))?;
            let flat = logits.reshape(((), 9))?;
            let loss = naba_train::loss::cross_entropy(&flat, targets, &[1.0; 9], 0.0)?.unwrap();
            let g = loss.backward()?;
            let mut grads = std::collections::HashMap::new();
            for sl in &opt.slots {
                if let Some(gt) = g.get(sl.var.as_tensor()) {
                    grads.insert(sl.name.clone(), gt.clone());
                }
            }
            opt.apply(&grads, 1.0)?;
            toks += nt;
        }
        let train_s = t.elapsed().as_secs_f64();
        println!(
            "train_layers {label:>5}: {nparams} trainable params; frozen-part cache {:.0} sub-words/s; train fwd+bwd+step {:.0} sub-words/s ({toks} sub-words in {train_s:.1}s)",
            split.tokens() as f64 / cache_s,
            toks as f64 / train_s
        );
    }
    Ok(())
}
