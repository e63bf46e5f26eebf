//! The fast training engine against candle's autograd: the same network, batch, dropout masks
//! and loss through both, then every trained tensor's gradient compared.

use candle_core::{Tensor, Var};
use naba_kernels::Precision;
use naba_train::fast::{self, Packed};
use naba_train::net::{HeadType, Mode, TrainNet};
use naba_train::rng::Rng;
use std::collections::HashMap;

mod common;
use common::{fixture_model, max_abs, max_diff};

fn net(train_layers: usize) -> TrainNet {
    let base = naba_train::checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        9,
        train_layers,
        3,
    )
    .unwrap()
}

fn targets(rows: &[Vec<u32>]) -> Vec<i64> {
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    rows.iter()
        .flat_map(|r| {
            (0..s).map(move |i| {
                if i < r.len() && i % 3 != 1 {
                    (r[i] % 9) as i64
                } else {
                    -100
                }
            })
        })
        .collect()
}

fn loss(logits: &Tensor, rows: &[Vec<u32>]) -> Tensor {
    naba_train::loss::cross_entropy(
        &logits.reshape(((), 9)).unwrap(),
        &targets(rows),
        &[1.0; 9],
        0.0,
    )
    .unwrap()
    .unwrap()
}

/// Gradients of every trained tensor by candle's autograd over the padded batch.
fn reference(net: &TrainNet, rows: &[Vec<u32>], p: f64) -> (Tensor, HashMap<String, Tensor>) {
    let (x, mask) = net.embed(rows).unwrap();
    let mut rng = Rng::new(11);
    let h = net
        .blocks_forward(
            &x,
            &mask,
            net.first_trained,
            net.num_layers(),
            Mode::Train,
            Some((&mut rng, p)),
        )
        .unwrap();
    let logits = net.head_forward(&h, Some((&mut rng, p))).unwrap();
    let loss = loss(&logits, rows);
    let g = loss.backward().unwrap();
    let grads = net
        .trainable()
        .filter_map(|p| {
            let v = p.var.as_ref()?;
            Some((p.name.clone(), g.get(v.as_tensor())?.clone()))
        })
        .collect();
    (h, grads)
}

/// The same through the fast engine: packed blocks, candle for the head and loss only.
fn fast_grads(
    net: &TrainNet,
    rows: &[Vec<u32>],
    p: f64,
    products: Precision,
) -> (Tensor, HashMap<String, Tensor>) {
    let hidden = net.config.hidden_size;
    let (x, _) = net.embed(rows).unwrap();
    let x = x.to_vec3::<f32>().unwrap();
    let real: Vec<Vec<f32>> = rows
        .iter()
        .zip(&x)
        .map(|(r, xr)| xr[..r.len()].concat())
        .collect();
    let batch = Packed::from_rows(real.iter().map(Vec::as_slice), hidden);
    let mut rng = Rng::new(11);
    let (out, tape) = fast::forward(
        net,
        &batch,
        (net.first_trained, net.num_layers()),
        Some((&mut rng, p)),
        products,
    )
    .unwrap();
    let h = Var::from_tensor(&batch.to_padded(&out, hidden).unwrap()).unwrap();
    let logits = net
        .head_forward(h.as_tensor(), Some((&mut rng, p)))
        .unwrap();
    let loss = loss(&logits, rows);
    let g = loss.backward().unwrap();
    let dh = batch
        .from_padded(g.get(h.as_tensor()).unwrap(), hidden)
        .unwrap();
    let mut grads = fast::backward(net, tape, dh).unwrap();
    for p in net.trainable() {
        if let (Some(v), false) = (&p.var, grads.contains_key(&p.name)) {
            if let Some(t) = g.get(v.as_tensor()) {
                grads.insert(p.name.clone(), t.clone());
            }
        }
    }
    (h.as_tensor().clone(), grads)
}

fn compare(rows: &[Vec<u32>], train_layers: usize, p: f64) {
    compare_in(rows, train_layers, p, Precision::F32, (1e-5, 1e-4));
}

/// The fast engine against autograd, hidden states within `tol.0` and gradients within
/// `tol.1` of the largest.
fn compare_in(
    rows: &[Vec<u32>],
    train_layers: usize,
    p: f64,
    products: Precision,
    tol: (f32, f32),
) {
    let net = net(train_layers);
    let (h_ref, g_ref) = reference(&net, rows, p);
    let (h_fast, g_fast) = fast_grads(&net, rows, p, products);
    for (r, row) in rows.iter().enumerate() {
        let n = row.len();
        let a = h_ref.get(r).unwrap().narrow(0, 0, n).unwrap();
        let b = h_fast.get(r).unwrap().narrow(0, 0, n).unwrap();
        let d = max_diff(&a, &b);
        assert!(d < tol.0, "row {r}: hidden states differ by {d}");
    }
    let trained: Vec<_> = net.trainable().map(|p| p.name.clone()).collect();
    assert_eq!(g_ref.len(), trained.len(), "the reference lacks a gradient");
    for name in &trained {
        let a = &g_ref[name];
        let b = g_fast
            .get(name)
            .unwrap_or_else(|| panic!("the fast engine gave no gradient for {name}"));
        assert_eq!(a.dims(), b.dims(), "{name}");
        let (d, m) = (max_diff(a, b), max_abs(a));
        assert!(
            d <= tol.1 * m.max(1e-3),
            "{name}: gradients differ by {d} (largest {m})"
        );
    }
}

#[test]
fn gradients_match_autograd_on_ragged_rows_without_dropout() {
    let rows = vec![
        vec![2u32, 10, 20, 30, 40, 50, 3],
        vec![2u32, 11, 12, 3],
        vec![2u32, 7, 9, 13, 17, 19, 23, 29, 31, 3],
    ];
    compare(&rows, 2, 0.0);
    compare(&rows, 1, 0.0);
}

#[test]
fn gradients_match_autograd_with_dropout() {
    // Equal lengths: padded and packed layouts coincide, so both engines draw the same masks.
    let rows = vec![
        vec![2u32, 10, 20, 30, 40, 50, 3],
        vec![2u32, 11, 12, 14, 15, 16, 3],
    ];
    compare(&rows, 2, 0.3);
}

#[test]
fn bf16_products_stay_near_autograd() {
    // bf16 keeps 8 bits of each operand: hidden states within a few hundredths, gradients
    // within a few percent of the largest. A product with its operands swapped or a panel
    // misread is off by the whole value, far outside this.
    if !naba_kernels::bf16::supported() {
        eprintln!("this CPU has no AVX512-BF16: the fast engine's bf16 products are not run");
        return;
    }
    let rows = vec![
        vec![2u32, 10, 20, 30, 40, 50, 3],
        vec![2u32, 11, 12, 3],
        vec![2u32, 7, 9, 13, 17, 19, 23, 29, 31, 3],
    ];
    compare_in(&rows, 2, 0.0, Precision::Bf16, (5e-2, 5e-2));
}

#[test]
fn adapters_are_left_to_autograd() {
    let base = naba_train::checkpoint::open_base(fixture_model().to_str().unwrap(), false).unwrap();
    let net = TrainNet::load(
        &base.weights,
        &base.config,
        &base.prefix,
        HeadType::Token,
        9,
        naba_train::net::Trainable {
            layers: 1,
            lora_rank: 2,
        },
        3,
    )
    .unwrap();
    assert!(fast::unsupported(&net).is_some());
}
