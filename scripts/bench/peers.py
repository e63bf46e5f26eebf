#!/usr/bin/env python3
"""One peer engine of naba's side-by-side inference benchmark (`scripts/bench/run.py`).

Runs a Hugging Face-layout checkpoint (BertForTokenClassification or
*ForSequenceClassification) on windows that naba already tokenised, with ONE engine:

* torch-f32   transformers + torch, float32, `torch.inference_mode()`
* torch-bf16  the same model under `torch.autocast("cpu", dtype=torch.bfloat16)`
* ort-f32     onnxruntime on a `torch.onnx.export` (TorchScript exporter, opset 17) of it
* ort-int8    onnxruntime on `quantize_dynamic(..., weight_type=QInt8)` of that export

and writes one JSON object with the keys engine, threads, batch_size, windows, subwords, docs,
seconds, subwords_per_s, docs_per_s, latency_p50_ms, latency_p99_ms, startup_s, peak_rss_mb,
version (plus startup_exec_s, see below).

Normally run.py calls it; by hand (the venv has torch, transformers, onnxruntime, onnx):

    PY=~/.cache/naba-peers/bin/python
    # ONNX engines: export / quantise once, outside any timing (cached in --cache-dir)
    $PY scripts/bench/peers.py --prepare-only --engine ort-int8 \
        --checkpoint ~/.cache/naba/models/ner-anercorp --cache-dir ~/.cache/naba-peers/onnx
    $PY scripts/bench/peers.py --engine ort-int8 --threads 2 --batch-size 16 --latency-runs 100 \
        --checkpoint ~/.cache/naba/models/ner-anercorp --cache-dir ~/.cache/naba-peers/onnx \
        --windows windows.jsonl --latency-window latency.json --out ort-int8.json

Inputs. --windows is JSONL, one window per line, {"doc": int, "ids": [...], "type_ids": [...]}
(type_ids optional, zeros when absent), in the order naba batches them (longest first). Windows
are grouped in that order into batches of --batch-size and right-padded with the config's
pad_token_id (1 for E5 / XLM-R), attention mask 0 on padding. --latency-window is one JSON
object {"ids": [...]} (a line {"latency_ids": [...]} in --windows is accepted instead); without
either, the first window is used.

What is timed.
* Throughput: one pass over all windows after one warm-up batch (the first, i.e. longest,
  batch; not counted). Timed per batch: the model call and getting the logits out as a numpy
  float32 array. Not timed: reading the file and padding the windows into arrays (done before
  the clock starts). subwords_per_s counts real tokens only (padding is cost, not output);
  docs_per_s counts distinct "doc" values.
* Latency: --latency-runs single requests of the latency window (batch 1, no padding) after 3
  warm-ups; p50 / p99 in ms (numpy's linear-interpolation percentiles).
* startup_s: from `time.perf_counter()` on the first line of this script (before torch or
  onnxruntime is imported) to the model being ready for its first request: after
  `from_pretrained` + `eval()` for torch, after creating the InferenceSession for ORT. An ORT
  run imports only numpy and onnxruntime, never torch. startup_exec_s is the same end point
  measured from the process's start time in /proc (so it also counts the Python interpreter's
  own start-up; 10 ms resolution).
* peak_rss_mb: ru_maxrss of this process at the end (MiB).

ONNX files (ort-*) are made by `--prepare-only` in a separate process, so that export and
quantisation never count as start-up. They live in --cache-dir/<checkpoint name>-<path hash>/
and are remade when older than the checkpoint's model.safetensors (int8: older than the f32
file). A timed run that finds them missing or stale runs --prepare-only in a child process and
then runs itself again in a fresh child process, so its clock still starts fresh.

The export follows the plain recipe by default: the model as transformers loads it (SDPA
attention), traced by the TorchScript exporter; onnxruntime's session-level optimiser then
fuses only MatMul/Gelu/LayerNorm pieces, not attention. --ort-fuse exports eager attention
instead and runs onnxruntime's offline BERT optimiser (Attention, EmbedLayerNormalization,
SkipLayerNormalization; quantised: QAttention), i.e. what a user of Optimum's O2 level gets;
its files are cached under their own names and the version field says "fused BERT graph".

--dump-logits FILE writes the logits of the first --dump-n windows (default 8), taken from the
timed pass itself (so computed in the same padded batches), as JSON [[floats...], ...]: per
window the real tokens' logits flattened row-major (tokens x labels), or the labels' logits
for sequence classification.

--probe loads the engine, answers one short request (the first 16 tokens of the latency
window) and exits: run.py times such processes from the outside, the way it times naba's
start-up.
"""

import time

# Taken before any heavy import: start-up is measured from here.
T0 = time.perf_counter()

import argparse
import hashlib
import json
import os
import pathlib
import resource
import subprocess
import sys

ENGINES = ("torch-f32", "torch-bf16", "ort-f32", "ort-int8")
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
LATENCY_WARMUPS = 3
PROBE_TOKENS = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=pathlib.Path,
                   help="Hugging Face-layout model directory (config.json, model.safetensors)")
    p.add_argument("--engine", required=True, choices=ENGINES)
    p.add_argument("--windows", type=pathlib.Path, help="JSONL of pre-tokenised windows")
    p.add_argument("--latency-window", type=pathlib.Path,
                   help='JSON {"ids": [...]} used for the latency runs')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--latency-runs", type=int, default=100, help="0 skips the latency runs")
    p.add_argument("--cache-dir", type=pathlib.Path,
                   default=pathlib.Path.home() / ".cache" / "naba-peers" / "onnx",
                   help="where the ONNX exports are kept")
    p.add_argument("--out", type=pathlib.Path, help="write the JSON result here (also printed)")
    p.add_argument("--dump-logits", type=pathlib.Path,
                   help="write the logits of the first --dump-n windows here")
    p.add_argument("--dump-n", type=int, default=8)
    p.add_argument("--ort-fuse", action="store_true",
                   help="ort-*: export with eager attention and run onnxruntime's BERT optimiser "
                        "(fused Attention, EmbedLayerNormalization, SkipLayerNormalization) "
                        "before any quantisation, as Optimum's O2 recipe does")
    p.add_argument("--prepare-only", action="store_true",
                   help="make the ONNX file(s) the engine needs, then exit (no timing)")
    p.add_argument("--probe", action="store_true",
                   help="load, answer one short request, exit (timed from outside by run.py)")
    args = p.parse_args(argv)
    if not (args.prepare_only or args.probe) and args.windows is None:
        p.error("--windows is required (except with --prepare-only or --probe)")
    if args.threads < 1 or args.batch_size < 1:
        p.error("--threads and --batch-size must be at least 1")
    return args


# ---------------------------------------------------------------- checkpoint and ONNX cache

def read_config(checkpoint):
    return json.loads((checkpoint / "config.json").read_text())


def is_sequence_classifier(config):
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def onnx_paths(args):
    """(f32, int8) paths in the cache; the path hash keeps two checkpoints with the same
    directory name apart, and the fused graphs have names of their own."""
    ckpt = args.checkpoint.resolve()
    tag = hashlib.sha256(str(ckpt).encode()).hexdigest()[:10]
    d = args.cache_dir.expanduser().resolve() / f"{ckpt.name}-{tag}"
    suffix = "-fused" if args.ort_fuse else ""
    return d / f"model-f32{suffix}.onnx", d / f"model-int8{suffix}.onnx"


def fresh(path, source):
    """True when `path` exists and is newer than `source` (so still made from it)."""
    return path.exists() and path.stat().st_mtime > source.stat().st_mtime


def onnx_ready(args):
    f32, int8 = onnx_paths(args)
    weights = args.checkpoint / "model.safetensors"
    if not fresh(f32, weights):
        return False
    return args.engine != "ort-int8" or fresh(int8, f32)


def prepare_onnx(args):
    """Exports (and for ort-int8 quantises) the checkpoint into the cache, unless fresh.
    Every file is written under a temporary name and renamed, so an interrupted run never
    leaves a file that looks fresh but is truncated."""
    f32, int8 = onnx_paths(args)
    f32.parent.mkdir(parents=True, exist_ok=True)
    weights = args.checkpoint / "model.safetensors"
    if not fresh(f32, weights):
        export_onnx(args.checkpoint, f32, args.ort_fuse)
    if args.engine == "ort-int8" and not fresh(int8, f32):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = int8.with_suffix(".tmp.onnx")
        t = time.perf_counter()
        # DefaultTensorType: ONNX shape inference knows no types for the com.microsoft ops
        # of a fused graph (Attention, SkipLayerNormalization), and the quantiser stops
        # without a fallback; they are all float32 here.
        quantize_dynamic(str(f32), str(tmp), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        tmp.replace(int8)
        print(f"quantised {int8} in {time.perf_counter() - t:.1f} s", file=sys.stderr)


def export_onnx(checkpoint, path, fuse):
    import warnings

    import torch

    # The fusion patterns of onnxruntime's BERT optimiser match the eager attention
    # subgraph, not the one torch's scaled_dot_product_attention exports to.
    model = load_torch_model(checkpoint, attn="eager" if fuse else None)

    class LogitsOnly(torch.nn.Module):
        """Positional inputs and a bare logits output, so the ONNX graph has exactly the
        inputs INPUT_NAMES and one output "logits" (not a ModelOutput)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    # eval() on the wrapper too: the exporter restores the wrapper's train/eval mode after
    # tracing, recursively, and a wrapper left in training mode would switch dropout back on
    # in the inner model.
    wrapper = LogitsOnly(model).eval()
    # A padded second row so the traced graph keeps the attention-mask path (transformers may
    # drop the mask when it is all ones).
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    types = torch.zeros_like(ids)
    axes = {0: "batch", 1: "seq"}
    tmp = path.with_suffix(".tmp.onnx")
    t = time.perf_counter()
    with warnings.catch_warnings():
        # TracerWarnings about shape checks that are constant for this model, and the legacy
        # exporter's deprecation notice: expected, and they bury real errors.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (ids, mask, types), str(tmp),
            input_names=INPUT_NAMES, output_names=["logits"],
            dynamic_axes={name: axes for name in INPUT_NAMES + ["logits"]},
            opset_version=17, dynamo=False,
        )
    print(f"exported {path.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if fuse:
        from onnxruntime.transformers.optimizer import optimize_model

        config = model.config
        # opt_level 0: only the Python fusions (portable); the session still applies its own
        # graph optimisations when it loads the file.
        fused = optimize_model(str(tmp), model_type="bert", opt_level=0,
                               num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
        stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        print(f"fused: {stats}", file=sys.stderr)
        if not stats.get("Attention"):
            # Without fused attention the "fused" graph is just the plain one; better to
            # say so than to label a run with a recipe it did not get.
            raise SystemExit("onnxruntime's BERT optimiser fused no Attention node")
        fused.save_model_to_file(str(tmp))
    tmp.replace(path)


def load_torch_model(checkpoint, attn=None):
    import torch
    import transformers

    config = read_config(checkpoint)
    auto = (transformers.AutoModelForSequenceClassification if is_sequence_classifier(config)
            else transformers.AutoModelForTokenClassification)
    # Its weight-loading progress bar would only clutter run.py's logs.
    transformers.utils.logging.disable_progress_bar()
    extra = {"attn_implementation": attn} if attn else {}
    # dtype pinned: transformers 5 loads in the stored dtype by default, and f32 is the
    # reference whatever the checkpoint holds.
    model = auto.from_pretrained(str(checkpoint), dtype=torch.float32, **extra)
    return model.eval()


# ---------------------------------------------------------------- engines

class TorchEngine:
    def __init__(self, args):
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        self.torch = torch
        self.model = load_torch_model(args.checkpoint)
        self.bf16 = args.engine == "torch-bf16"
        self.version = f"torch {torch.__version__}, transformers {transformers.__version__}"

    def __call__(self, ids, mask, types):
        torch = self.torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=self.bf16):
            logits = self.model(input_ids=torch.from_numpy(ids),
                                attention_mask=torch.from_numpy(mask),
                                token_type_ids=torch.from_numpy(types)).logits
            # Under autocast the logits are bf16; users get float32 numbers out.
            return logits.to(torch.float32).numpy()


class OrtEngine:
    def __init__(self, args):
        import onnxruntime as ort

        f32, int8 = onnx_paths(args)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(int8 if args.engine == "ort-int8" else f32), opts,
            providers=["CPUExecutionProvider"])
        fused = " (fused BERT graph)" if args.ort_fuse else ""
        self.version = f"onnxruntime {ort.__version__}{fused}"
        # The exporter drops inputs the graph does not use (token_type_ids for a model
        # without token-type embeddings), and ORT rejects unknown input names.
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, ids, mask, types):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {name: feed[name] for name in self.inputs})[0]


# ---------------------------------------------------------------- inputs

def read_windows(path):
    """(windows, latency window or None); a window is (doc, ids, type_ids)."""
    windows, latency = [], None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "latency_ids" in obj:
                latency = (obj["latency_ids"], obj.get("latency_type_ids"))
                continue
            ids = obj["ids"]
            types = obj.get("type_ids") or [0] * len(ids)
            if len(types) != len(ids) or not ids:
                raise SystemExit(f"{path}:{n}: empty window or ids/type_ids of different lengths")
            windows.append((obj.get("doc", n), ids, types))
    if not windows:
        raise SystemExit(f"{path}: no windows")
    return windows, latency


def make_batch(np, rows, pad_id):
    """Right-pads (ids, type_ids) rows to the longest; int64 as both torch and the ONNX
    graph take it."""
    width = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for r, (row_ids, row_types) in enumerate(rows):
        ids[r, :len(row_ids)] = row_ids
        mask[r, :len(row_ids)] = 1
        types[r, :len(row_types)] = row_types
    return ids, mask, types


def process_start_seconds_ago():
    """Seconds since this process was started, from /proc (clock-tick resolution), or None."""
    try:
        stat = pathlib.Path("/proc/self/stat").read_text()
        # Field 22 (starttime, in clock ticks since boot); fields counted after the
        # parenthesised command name, which may itself contain spaces.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------- main

def main():
    args = parse_args()

    if args.engine.startswith("ort"):
        if args.prepare_only:
            prepare_onnx(args)
            return
        if not onnx_ready(args):
            # Prepare in a child, then do the run itself in a fresh child, so that export
            # time and torch's imports stay out of its start-up and memory figures (an exec
            # would keep this process's start time in /proc, and so spoil startup_exec_s).
            prepare = [sys.executable, __file__, "--prepare-only", "--engine", args.engine,
                       "--checkpoint", str(args.checkpoint), "--cache-dir", str(args.cache_dir)]
            subprocess.run(prepare + (["--ort-fuse"] if args.ort_fuse else []), check=True)
            sys.exit(subprocess.call([sys.executable, __file__] + sys.argv[1:]))
    elif args.prepare_only:
        return  # torch engines load the checkpoint directly

    # Before torch (or ORT) is imported: their OpenMP / MKL pools read these once.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # A local directory never needs the hub; this keeps a stray network call out of start-up.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import numpy as np

    engine = TorchEngine(args) if args.engine.startswith("torch") else OrtEngine(args)
    startup_s = time.perf_counter() - T0
    since_exec = process_start_seconds_ago()
    startup_exec_s = None if since_exec is None else round(since_exec, 3)

    config = read_config(args.checkpoint)
    pad_id = config.get("pad_token_id")
    pad_id = 1 if pad_id is None else pad_id

    if args.probe:
        if args.latency_window:
            ids = json.loads(args.latency_window.read_text())["ids"][:PROBE_TOKENS]
        else:
            # <s> and </s> around ordinary tokens: still a valid request.
            ids = [0] + [5] * (PROBE_TOKENS - 2) + [2]
        engine(*make_batch(np, [(ids, [0] * len(ids))], pad_id))
        return

    windows, latency = read_windows(args.windows)
    if args.latency_window:
        obj = json.loads(args.latency_window.read_text())
        latency = (obj["ids"], obj.get("type_ids"))
    if latency is None:
        latency = (windows[0][1], windows[0][2])
    latency_ids = latency[0]
    latency_types = latency[1] or [0] * len(latency_ids)

    batches = [make_batch(np, [(ids, types) for _, ids, types in windows[i:i + args.batch_size]],
                          pad_id)
               for i in range(0, len(windows), args.batch_size)]

    engine(*batches[0])  # warm-up: first-call allocations and kernel selection

    # Only references to the outputs are kept in the loop; slicing them for the dump happens
    # after the clock stops.
    dump_batches = -(-min(args.dump_n, len(windows)) // args.batch_size) if args.dump_logits else 0
    kept = []
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        logits = engine(*batch)
        if i < dump_batches:
            kept.append(logits)
    seconds = time.perf_counter() - start

    latencies_ms = []
    if args.latency_runs > 0:
        lat_batch = make_batch(np, [(latency_ids, latency_types)], pad_id)
        for _ in range(LATENCY_WARMUPS):
            engine(*lat_batch)
        for _ in range(args.latency_runs):
            t = time.perf_counter()
            engine(*lat_batch)
            latencies_ms.append((time.perf_counter() - t) * 1000.0)

    subwords = sum(len(ids) for _, ids, _ in windows)
    docs = len({doc for doc, _, _ in windows})
    result = {
        "engine": args.engine,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "windows": len(windows),
        "subwords": subwords,
        "docs": docs,
        "seconds": round(seconds, 4),
        "subwords_per_s": round(subwords / seconds, 1),
        "docs_per_s": round(docs / seconds, 3),
        "latency_p50_ms": round(float(np.percentile(latencies_ms, 50)), 3) if latencies_ms else None,
        "latency_p99_ms": round(float(np.percentile(latencies_ms, 99)), 3) if latencies_ms else None,
        "startup_s": round(startup_s, 3),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "version": engine.version,
        "startup_exec_s": startup_exec_s,
    }

    if args.dump_logits:
        dump = []
        for w in range(min(args.dump_n, len(windows))):
            logits = kept[w // args.batch_size][w % args.batch_size]
            if logits.ndim == 2:  # token classification: drop the padding rows
                logits = logits[:len(windows[w][1])]
            dump.append([float(x) for x in logits.reshape(-1)])
        args.dump_logits.write_text(json.dumps(dump))

    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
