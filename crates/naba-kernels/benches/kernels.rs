//! Criterion benchmarks of each kernel at the encoder's shapes (hidden 384, FFN 1536, 12
//! heads, windows of 256 tokens), on every instruction-set family this CPU has, beside the
//! candle op it replaces, so a regression shows. `cargo bench -p naba-kernels`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use naba_kernels::linear::{linear, Epilogue};
use naba_kernels::packed::PackedMatrix;
use naba_kernels::{attention, math, norm, Isa, Precision};

const TOKENS: usize = 512;
const HIDDEN: usize = 384;
const FFN: usize = 1536;
const HEADS: usize = 12;

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn gelu(c: &mut Criterion) {
    let mut g = c.benchmark_group("gelu");
    let xs = data(TOKENS * FFN);
    g.throughput(Throughput::Elements(xs.len() as u64));
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::new("naba", isa.name()), |b| {
            let mut v = xs.clone();
            b.iter(|| math::gelu_inplace(isa, &mut v))
        });
    }
    let t = Tensor::from_vec(xs.clone(), (TOKENS, FFN), &Device::Cpu).expect("tensor");
    g.bench_function("candle", |b| b.iter(|| t.gelu_erf().expect("gelu")));
    g.finish();
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax-256");
    let xs = data(256 * 256);
    g.throughput(Throughput::Elements(xs.len() as u64));
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::new("naba", isa.name()), |b| {
            let mut v = xs.clone();
            b.iter(|| {
                for row in v.chunks_exact_mut(256) {
                    math::softmax_inplace(isa, row, 0.17)
                }
            })
        });
    }
    g.finish();
}

fn layer_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("add-layer-norm");
    let xs = data(TOKENS * HIDDEN);
    let r = data(TOKENS * HIDDEN);
    let gamma = vec![1.0; HIDDEN];
    let beta = vec![0.0; HIDDEN];
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::new("naba", isa.name()), |b| {
            b.iter(|| {
                let mut v = xs.clone();
                norm::add_layer_norm(isa, &mut v, Some(&r), &gamma, &beta, 1e-12);
                v
            })
        });
    }
    g.finish();
}

fn ffn_in(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear-ffn-in-gelu");
    let x = data(TOKENS * HIDDEN);
    let w = data(FFN * HIDDEN);
    let bias = data(FFN);
    g.throughput(Throughput::Elements((2 * TOKENS * HIDDEN * FFN) as u64));
    let isa = Isa::best();
    g.bench_function(BenchmarkId::new("naba", isa.name()), |b| {
        let mut out = vec![0f32; TOKENS * FFN];
        b.iter(|| {
            linear(
                isa,
                &x,
                &w,
                Some(&bias),
                &mut out,
                TOKENS,
                HIDDEN,
                FFN,
                Epilogue::Gelu,
            )
        })
    });
    let xt = Tensor::from_vec(x.clone(), (TOKENS, HIDDEN), &Device::Cpu).expect("x");
    let wt = Tensor::from_vec(w.clone(), (FFN, HIDDEN), &Device::Cpu).expect("w");
    let bt = Tensor::from_vec(bias.clone(), FFN, &Device::Cpu).expect("b");
    g.bench_function("candle", |b| {
        b.iter(|| {
            xt.matmul(&wt.t().expect("t"))
                .and_then(|y| y.broadcast_add(&bt))
                .and_then(|y| y.gelu_erf())
                .expect("candle linear")
        })
    });
    g.finish();
}

/// The four products of a block at a full batch (16 windows of 256 tokens).
fn block_products(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear-block-4096");
    g.sample_size(10);
    let m = 4096;
    let isa = Isa::best();
    for (name, k, n) in [
        ("qkv", HIDDEN, 3 * HIDDEN),
        ("attn-out", HIDDEN, HIDDEN),
        ("ffn-in", HIDDEN, FFN),
        ("ffn-out", FFN, HIDDEN),
    ] {
        let x = data(m * k);
        let w = data(n * k);
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(BenchmarkId::new("gemm-crate", name), |b| {
            let mut out = vec![0f32; m * n];
            b.iter(|| linear(isa, &x, &w, None, &mut out, m, k, n, Epilogue::None))
        });
        let packed = PackedMatrix::pack(isa, &w, n, k);
        g.bench_function(BenchmarkId::new("packed", name), |b| {
            let mut out = vec![0f32; m * n];
            b.iter(|| packed.linear(&x, None, &mut out, m, Epilogue::None))
        });
        if naba_kernels::bf16::supported() {
            let packed = PackedMatrix::pack_for(isa, Precision::Bf16, &w, n, k);
            g.bench_function(BenchmarkId::new("packed-bf16", name), |b| {
                let mut out = vec![0f32; m * n];
                b.iter(|| packed.linear(&x, None, &mut out, m, Epilogue::None))
            });
        }
        if naba_kernels::int8::supported() {
            let packed = PackedMatrix::pack_for(isa, Precision::Int8, &w, n, k);
            g.bench_function(BenchmarkId::new("packed-int8", name), |b| {
                let mut out = vec![0f32; m * n];
                b.iter(|| packed.linear(&x, None, &mut out, m, Epilogue::None))
            });
        }
        // The slower paths of CPUs without AVX-512 (or without VNNI), where this one has more.
        for &path in naba_kernels::int8::paths().iter().skip(1) {
            let panels = naba_kernels::int8::Panels::for_path(path, &w, n, k);
            let id = BenchmarkId::new(format!("int8-{}", path.name()), name);
            g.bench_function(id, |b| {
                let mut out = vec![0f32; m * n];
                b.iter(|| {
                    let rows = naba_kernels::int8::Rows::from_slice_for(Some(path), &x, m, k);
                    naba_kernels::int8::product_on(
                        path,
                        &rows,
                        &panels,
                        None,
                        &mut out,
                        Epilogue::None,
                    )
                })
            });
        }
    }
    g.finish();
}

fn attention_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention-2x256");
    let qkv = data(TOKENS * 3 * HIDDEN);
    let offsets = vec![0, 256, TOKENS];
    let isa = Isa::best();
    g.throughput(Throughput::Elements(TOKENS as u64));
    g.bench_function(BenchmarkId::new("naba", isa.name()), |b| {
        let mut out = vec![0f32; TOKENS * HIDDEN];
        b.iter(|| attention::packed_attention(isa, &qkv, &offsets, HEADS, 0.17, &mut out))
    });
    g.finish();
}

criterion_group!(
    benches,
    gelu,
    softmax,
    layer_norm,
    ffn_in,
    block_products,
    attention_bench
);
criterion_main!(benches);
