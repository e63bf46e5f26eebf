#!/usr/bin/env python3
"""Side-by-side CPU inference benchmark: naba (Rust, candle) against torch and onnxruntime
running the same checkpoint on the same windows; optionally also a training benchmark, naba's
trainer against transformers + torch on the same batches.

Each engine runs in its own process, one after the other, with the same thread count, the same
windows and the same batch size:

1. `naba --threads N bench ...` tokenises the documents exactly as naba's pipeline does,
   writes the windows in the order it batches them (windows.jsonl) and the single-request
   latency window (latency.json), then times itself (naba.json).
2. naba's start-up: `naba --threads N predict --task ner --model DIR "<short text>"`, run
   --startup-runs times as separate processes; the median wall time is naba's startup_s and
   the child's peak RSS (wait4) is kept as startup_rss_mb.
3. Each peer engine (torch-f32, torch-bf16, ort-f32, ort-int8) through peers.py on those
   windows, after a separate `--prepare-only` process for the ONNX engines (so export and
   quantisation never count). Each peer is also started --startup-runs times with --probe
   (load, answer one 16-token request, exit), timed from here exactly like naba's predict
   process: that is the "first answer s" column, the one start-up figure defined the same way
   for every engine. peers.py's own startup_s (inside the process, to the model being ready,
   interpreter start excluded) is the "start-up s" column for the peers.

Then it prints a markdown table and writes it, with every raw JSON and log, to --out-dir.
An engine that fails gets its error in its row; the others still run. Every child process is
killed after --timeout seconds.

    python3 scripts/bench/run.py --naba target/release/naba \\
        --model ~/.cache/naba/models/ner-anercorp \\
        --data ../shared/datasets/antcorpus/ant_corpus_v1.1.jsonl --docs 200 \\
        --threads 2 --batch-size 16 --out-dir .cache/bench/ner-t2

The peers run in their own virtual environment (--python, default
~/.cache/naba-peers/bin/python); --setup creates it when missing (torch, transformers,
onnxruntime, onnx from PyPI). run.py itself needs only the standard library; it reads the
logit dumps with json, so the accuracy check needs no numpy either.

Training rows (--train-data CONLL_FILE; after the inference rows, or alone with --train-only).
Every engine fine-tunes the --train-model checkpoint (default --model) for --train-warmup
untimed and then --train-steps timed steps, with the same threads, on the same batches of
--train-batch-size sentences:

1. naba (`--train-engines` naba): `naba --threads N bench-train --model DIR --data CONLL_FILE
   --sentences S --batch-size B --max-length L --steps T --warmup-steps W --engine fast
   --batches-out train-batches.jsonl --out naba-train.json` reads the first S sentences,
   tokenises and batches them exactly as `naba train` does, writes the W + T batches it trains
   on (train-batches.jsonl), then trains and times itself. It runs whenever a torch engine is
   asked for too, since its batches are theirs.
2. naba-f32: the same command with NABA_PRECISION=f32 (the fast engine's products in f32
   where "naba" multiplies in bf16), its own --batches-out (not used).
3. naba-reference: the same command with `--engine reference` (naba's plain, unoptimised
   trainer), its own --batches-out (not used) and --out naba-reference-train.json.
4. torch-f32, torch-bf16: train_peer.py (in the peers' environment) on train-batches.jsonl,
   bf16 under CPU autocast; see its docstring for the model, optimizer and what is timed.

The second table gives sub-words/s (real sub-words of the timed steps per second; padding is
cost), the ratio to torch-f32, the timed seconds, the first and last loss (losses differ through
the dropout masks, which no two engines draw alike), and the peak RSS of the process. It is
appended to results.md and stored under "train" in results.json.

    python3 scripts/bench/run.py --naba target/release/naba \\
        --model ~/.cache/naba/models/ner-anercorp --train-only \\
        --train-data ../shared/datasets/anercorp/train.txt --train-sentences 200 \\
        --train-batch-size 4 --train-steps 20 --train-warmup 2 \\
        --threads 2 --out-dir .cache/bench/train-t2

Files in --out-dir: windows.jsonl, latency.json, <engine>.json, <engine>.logits.json,
<engine>.log (the child's stdout and stderr), results.md, results.json; with --train-data also
train-batches.jsonl, <engine>-train.json and <engine>-train.log for each training engine.
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
PEERS = HERE / "peers.py"
TRAIN_PEER = HERE / "train_peer.py"
PEER_ENGINES = ("torch-f32", "torch-bf16", "ort-f32", "ort-int8")
# naba-f32 / naba-bf16 / naba-int8: naba with its products forced to one precision
# (NABA_PRECISION; a CPU without the instructions runs the next one down), so a run also shows
# the f32 path every fast path must stay near, and each fast path.
NABA_ENGINES = ("naba", "naba-f32", "naba-bf16", "naba-int8")
ALL_ENGINES = NABA_ENGINES + PEER_ENGINES
DEFAULT_PYTHON = pathlib.Path.home() / ".cache" / "naba-peers" / "bin" / "python"
REFERENCE = "torch-f32"
NABA_TRAIN_ENGINES = ("naba", "naba-f32", "naba-reference")
TRAIN_PEER_ENGINES = ("torch-f32", "torch-bf16")
ALL_TRAIN_ENGINES = NABA_TRAIN_ENGINES + TRAIN_PEER_ENGINES
DEFAULT_TRAIN_ENGINES = ("naba", "naba-f32", "torch-f32", "torch-bf16")
TRAIN_REFERENCE = "torch-f32"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
# A short news-like sentence with two entities: enough to exercise the whole pipeline once.
STARTUP_TEXT = "استقبل الرئيس التونسي في قصر قرطاج وزير الخارجية الفرنسي صباح اليوم."
STANCE_TARGET = "الحكومة"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--naba", type=pathlib.Path, help="the naba binary")
    p.add_argument("--model", required=True, type=pathlib.Path, help="checkpoint directory")
    p.add_argument("--data", type=pathlib.Path, help="JSONL documents (passed to naba bench)")
    p.add_argument("--docs", type=int, default=200, help="documents to read (naba bench)")
    p.add_argument("--filter", default="split=test",
                   help="naba bench's --filter ('' passes none)")
    p.add_argument("--text-col", default="text", help="naba bench's --text-col ('' passes none)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--dump-n", type=int, default=8,
                   help="windows whose logits every engine dumps for the accuracy line")
    p.add_argument("--engines", default=",".join(ALL_ENGINES),
                   help=f"comma list, from {','.join(ALL_ENGINES)}")
    p.add_argument("--out-dir", required=True, type=pathlib.Path)
    p.add_argument("--python", type=pathlib.Path, default=DEFAULT_PYTHON,
                   help="interpreter of the peers' virtual environment")
    p.add_argument("--setup", action="store_true",
                   help="create the peers' virtual environment if --python does not exist")
    p.add_argument("--cache-dir", type=pathlib.Path,
                   default=pathlib.Path.home() / ".cache" / "naba-peers" / "onnx",
                   help="where peers.py keeps its ONNX exports")
    p.add_argument("--ort-fuse", action="store_true",
                   help="ORT engines use onnxruntime's fused BERT graph (see peers.py)")
    p.add_argument("--startup-runs", type=int, default=3,
                   help="start-up processes per engine (median reported); 0 skips them")
    p.add_argument("--startup-text", default=STARTUP_TEXT)
    p.add_argument("--naba-task", choices=("ner", "topic", "stance"),
                   help="task of naba's start-up probe (default: from the config)")
    p.add_argument("--windows", type=pathlib.Path,
                   help="reuse these windows instead of running naba bench (naba is then skipped)")
    p.add_argument("--latency-window", type=pathlib.Path,
                   help="with --windows: the latency window to reuse")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    t = p.add_argument_group("training rows")
    t.add_argument("--train-data", type=pathlib.Path,
                   help="CoNLL file: run the training comparison after the inference rows")
    t.add_argument("--train-only", action="store_true",
                   help="with --train-data: skip the inference rows")
    t.add_argument("--train-model", type=pathlib.Path,
                   help="checkpoint to fine-tune (default: --model)")
    t.add_argument("--train-sentences", type=int, default=200,
                   help="sentences naba reads from --train-data")
    t.add_argument("--train-batch-size", type=int, default=4, help="sentences per step")
    t.add_argument("--train-steps", type=int, default=20, help="timed steps")
    t.add_argument("--train-warmup", type=int, default=2, help="untimed steps before them")
    t.add_argument("--train-max-length", type=int, default=256,
                   help="sub-words per row at most (naba bench-train's --max-length)")
    t.add_argument("--train-engines", default=",".join(DEFAULT_TRAIN_ENGINES),
                   help=f"comma list, from {','.join(ALL_TRAIN_ENGINES)}")
    args = p.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ALL_ENGINES]
    if unknown:
        p.error(f"unknown engine(s): {', '.join(unknown)}")
    args.train_engines = [e.strip() for e in args.train_engines.split(",") if e.strip()]
    unknown = [e for e in args.train_engines if e not in ALL_TRAIN_ENGINES]
    if unknown:
        p.error(f"unknown training engine(s): {', '.join(unknown)}")
    if args.train_model is None:
        args.train_model = args.model
    if args.train_only and args.train_data is None:
        p.error("--train-only needs --train-data")
    if args.train_data is not None:
        if args.naba is None:
            # Even the torch rows need it: naba makes the batches they train on.
            p.error("--train-data needs --naba (naba makes the training batches)")
        if not args.train_engines:
            p.error("--train-engines is empty")
        for name in ("train_sentences", "train_batch_size", "train_steps", "train_max_length"):
            if getattr(args, name) < 1:
                p.error(f"--{name.replace('_', '-')} must be at least 1")
        if args.train_warmup < 0:
            p.error("--train-warmup must not be negative")
    if args.train_only:
        pass  # no inference rows: neither windows nor --data are needed
    elif args.windows is None:
        if args.naba is None or args.data is None:
            p.error("--naba and --data are needed to make the windows (or give --windows)")
    elif any(e in args.engines for e in NABA_ENGINES):
        print("note: --windows given, so naba bench does not run and naba is skipped",
              file=sys.stderr)
        args.engines = [e for e in args.engines if e not in NABA_ENGINES]
    return args


# ---------------------------------------------------------------- child processes

class Child:
    """What one child process did: exit code (None if it never ran or was killed), wall
    seconds, peak RSS in MiB (its own, from wait4), and an error line or None."""

    def __init__(self, rc, wall_s, rss_mb, error):
        self.rc, self.wall_s, self.rss_mb, self.error = rc, wall_s, rss_mb, error


def run_child(cmd, log_path, timeout, env=None):
    """Runs `cmd` (with `env` added to the environment) with stdout and stderr appended to `log_path`, killed (with its process
    group) after `timeout` seconds. Waits with wait4 so the child's own rusage comes back,
    not a total over every child this script has had."""
    cmd = [str(c) for c in cmd]
    with open(log_path, "ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **env} if env else None)
        except OSError as err:
            return Child(None, 0.0, None, f"could not start {cmd[0]}: {err}")
        lock = threading.Lock()
        state = {"exited": False, "killed": False}

        def kill():
            # Under the lock and only while the child is unreaped, so the group id cannot
            # belong to some later process.
            with lock:
                if not state["exited"]:
                    state["killed"] = True
                    os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        # Wait without reaping (the zombie keeps its pid and group), mark it, then reap.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        with lock:
            state["exited"] = True
        timer.cancel()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss_mb = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
    if state["killed"]:
        return Child(None, wall, rss_mb, f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        return Child(proc.returncode, wall, rss_mb,
                     f"exit {proc.returncode}: {last_error_line(log_path)}")
    return Child(0, wall, rss_mb, None)


def last_error_line(log_path):
    """The line of the log most likely to name the failure: the last one mentioning an
    error, else the last non-empty one."""
    lines = [l.strip() for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
    lines = [l for l in lines if not l.startswith("$ ")]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def startup_probe(cmd, runs, log_path, timeout, env=None):
    """Median wall seconds and the largest peak RSS over `runs` processes of `cmd`, or an
    error string."""
    walls, rss = [], []
    for _ in range(runs):
        child = run_child(cmd, log_path, timeout, env)
        if child.error:
            return None, None, child.error
        walls.append(child.wall_s)
        rss.append(child.rss_mb)
    return round(statistics.median(walls), 3), max(rss), None


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"error": f"no result in {path.name}: {err}"}


# ---------------------------------------------------------------- engines

def naba_task(args, config):
    if args.naba_task:
        return args.naba_task
    archs = config.get("architectures") or []
    if any(a.endswith("ForTokenClassification") for a in archs):
        return "ner"
    return "topic"


def run_naba(args, config, out, engine="naba"):
    """naba bench (which, as engine "naba", also writes the windows), then naba's start-up
    probe. Engines "naba-f32", "naba-bf16" and "naba-int8" run the same with NABA_PRECISION
    set to their suffix.
    Returns the result dict (with "error" on failure)."""
    env = {"NABA_PRECISION": engine.split("-")[1]} if engine != "naba" else None
    log = out / f"{engine}.log"
    cmd = [args.naba, "--threads", args.threads, "bench",
           "--model", args.model, "--data", args.data, "--docs", args.docs,
           *(["--filter", args.filter] if args.filter else []),
           *(["--text-col", args.text_col] if args.text_col else []),
           "--batch-size", args.batch_size, "--latency-runs", args.latency_runs,
           *(["--windows-out", out / "windows.jsonl",
              "--latency-window-out", out / "latency.json"] if engine == "naba" else []),
           "--dump-logits", out / f"{engine}.logits.json", "--dump-n", args.dump_n,
           "--out", out / f"{engine}.json"]
    print(f"{engine} bench ...", file=sys.stderr)
    child = run_child(cmd, log, args.timeout, env)
    if child.error:
        return {"engine": engine, "error": child.error}
    result = read_json(out / f"{engine}.json")
    if "error" in result:
        return {"engine": engine, **result}
    result["engine"] = engine
    if result.get("peak_rss_mb") is None:
        result["peak_rss_mb"] = child.rss_mb  # same measure, taken from outside
    if args.startup_runs > 0:
        task = naba_task(args, config)
        probe = [args.naba, "--threads", args.threads, "predict", "--task", task,
                 "--model", args.model]
        if task == "stance":
            probe += ["--target", STANCE_TARGET]
        probe.append(args.startup_text)
        print(f"{engine} start-up ({args.startup_runs} runs) ...", file=sys.stderr)
        wall, rss, err = startup_probe(probe, args.startup_runs, log, args.timeout, env)
        if err:
            result["startup_error"] = err
        # For naba one figure serves both columns: its predict process is the first answer.
        result["startup_s"] = wall
        result["first_answer_s"] = wall
        result["startup_rss_mb"] = rss
    return result


def run_peer(args, engine, windows, latency, out):
    log = out / f"{engine}.log"
    base = [args.python, PEERS, "--checkpoint", args.model, "--engine", engine,
            "--threads", args.threads, "--cache-dir", args.cache_dir]
    if args.ort_fuse:
        base.append("--ort-fuse")
    if engine.startswith("ort"):
        print(f"{engine}: preparing ONNX ...", file=sys.stderr)
        child = run_child(base + ["--prepare-only"], log, args.timeout)
        if child.error:
            return {"engine": engine, "error": f"prepare: {child.error}"}
    print(f"{engine} ...", file=sys.stderr)
    cmd = base + ["--windows", windows, "--batch-size", args.batch_size,
                  "--latency-runs", args.latency_runs, "--out", out / f"{engine}.json",
                  "--dump-logits", out / f"{engine}.logits.json", "--dump-n", args.dump_n]
    if latency:
        cmd += ["--latency-window", latency]
    child = run_child(cmd, log, args.timeout)
    if child.error:
        return {"engine": engine, "error": child.error}
    result = read_json(out / f"{engine}.json")
    if "error" in result:
        return {"engine": engine, **result}
    if args.startup_runs > 0:
        probe = base + ["--probe"] + (["--latency-window", latency] if latency else [])
        print(f"{engine} start-up ({args.startup_runs} runs) ...", file=sys.stderr)
        wall, rss, err = startup_probe(probe, args.startup_runs, log, args.timeout)
        if err:
            result["startup_error"] = err
        result["first_answer_s"] = wall
        result["startup_rss_mb"] = rss
    return result


# ---------------------------------------------------------------- training rows

def count_lines(path):
    """Non-empty lines of `path`, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def run_naba_train(args, engine, out):
    """naba bench-train with naba's fast engine ("naba", which also writes the batches the
    torch rows train on), the same with its products forced to f32 ("naba-f32",
    NABA_PRECISION=f32), or its reference engine ("naba-reference"); the last two write
    batches files of their own, not used. Returns the result dict (with "error" on
    failure)."""
    reference = engine == "naba-reference"
    env = {"NABA_PRECISION": "f32"} if engine == "naba-f32" else None
    batches_out = out / ("train-batches.jsonl" if engine == "naba"
                         else f"{engine}-train-batches.jsonl")
    cmd = [args.naba, "--threads", args.threads, "bench-train",
           "--model", args.train_model, "--data", args.train_data,
           "--sentences", args.train_sentences, "--batch-size", args.train_batch_size,
           "--max-length", args.train_max_length, "--steps", args.train_steps,
           "--warmup-steps", args.train_warmup,
           "--engine", "reference" if reference else "fast",
           "--batches-out", batches_out, "--out", out / f"{engine}-train.json"]
    print(f"{engine} bench-train ...", file=sys.stderr)
    child = run_child(cmd, out / f"{engine}-train.log", args.timeout, env)
    if child.error:
        return {"engine": engine, "error": child.error}
    result = read_json(out / f"{engine}-train.json")
    if "error" in result:
        return {"engine": engine, **result}
    result.setdefault("engine", engine)
    if result.get("peak_rss_mb") is None:
        result["peak_rss_mb"] = child.rss_mb
    return result


def run_train_peer(args, engine, batches, out):
    """train_peer.py (torch-f32 or torch-bf16) on naba's batches."""
    cmd = [args.python, TRAIN_PEER, "--model", args.train_model, "--batches", batches,
           "--warmup-steps", args.train_warmup, "--threads", args.threads,
           "--out", out / f"{engine}-train.json"]
    if engine == "torch-bf16":
        cmd.append("--bf16")
    print(f"{engine} training ...", file=sys.stderr)
    child = run_child(cmd, out / f"{engine}-train.log", args.timeout)
    if child.error:
        return {"engine": engine, "error": child.error}
    result = read_json(out / f"{engine}-train.json")
    if "error" in result:
        return {"engine": engine, **result}
    if result.get("peak_rss_mb") is None:
        result["peak_rss_mb"] = child.rss_mb
    return result


def run_training(args, out):
    """Every --train-engines row, in that order (naba's fast engine first when it has to make
    the batches). Returns (results by engine, workload)."""
    batches = out / "train-batches.jsonl"
    expected = args.train_warmup + args.train_steps
    peers = [e for e in args.train_engines if e in TRAIN_PEER_ENGINES]
    results, no_batches = {}, None
    if "naba" in args.train_engines or peers:
        naba = run_naba_train(args, "naba", out)
        if "naba" in args.train_engines:
            results["naba"] = naba
        lines = count_lines(batches)
        if lines is None:
            no_batches = "no batches: naba bench-train failed" if "error" in naba \
                else "no batches: naba bench-train wrote no train-batches.jsonl"
        elif "error" in naba and lines != expected:
            # A run that died while writing them: not the batches naba meant to train on.
            no_batches = (f"incomplete batches ({lines} of {expected} lines): "
                          "naba bench-train failed")
        elif lines != expected:
            print(f"note: train-batches.jsonl has {lines} batches, not {expected}; the torch "
                  f"rows time all but the first {args.train_warmup}", file=sys.stderr)
    for engine in args.train_engines:
        if engine in results:
            continue
        if engine in ("naba-f32", "naba-reference"):
            results[engine] = run_naba_train(args, engine, out)
        elif no_batches:
            results[engine] = {"engine": engine, "error": no_batches}
        else:
            results[engine] = run_train_peer(args, engine, batches, out)
    workload = {
        "data": str(args.train_data),
        "model": str(args.train_model),
        "sentences": args.train_sentences,
        "batch_size": args.train_batch_size,
        "max_length": args.train_max_length,
        "warmup_steps": args.train_warmup,
        "steps": args.train_steps,
        "batches_file": str(batches),
        "batches": count_lines(batches),
    }
    return {e: results[e] for e in args.train_engines}, workload


def train_table(results, machine, workload, standalone):
    """The training table with its workload line and notes; `standalone` (--train-only) adds
    the machine and version lines the inference table would otherwise have given."""
    ref = results.get(TRAIN_REFERENCE, {})
    ref_tput = ref.get("sub_words_per_s") if "error" not in ref else None
    lines = [
        f"| engine | sub-words/s | vs {TRAIN_REFERENCE}-train | seconds | first loss "
        "| last loss | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, r in results.items():
        if "error" in r:
            lines.append(f"| {engine} | failed: {r['error'].replace('|', '/')} | | | | | |")
            continue
        tput = r.get("sub_words_per_s")
        ratio = f"{tput / ref_tput:.2f}×" if tput and ref_tput else "–"
        losses = [l for l in (r.get("losses") or []) if isinstance(l, (int, float))]
        lines.append(
            f"| {engine} | {fmt(tput, 0)} | {ratio} | {fmt(r.get('seconds'), 2)} "
            f"| {fmt(losses[0] if losses else None, 4)} "
            f"| {fmt(losses[-1] if losses else None, 4)} | {fmt(r.get('peak_rss_mb'), 0)} |")
    ok = {e: r for e, r in results.items() if "error" not in r}
    first = ok.get(TRAIN_REFERENCE) or next(iter(ok.values()), {})
    out = []
    if standalone:
        flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in machine["flags"].items())
        versions = "; ".join(f"{k}: {v}" for k, v in machine["versions"].items())
        out += [f"Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs; {flags}); "
                f"{machine['threads']} threads; {machine['date']}.",
                f"Versions: {versions}."]
    out += [
        f"Training: {workload['steps']} timed steps after {workload['warmup_steps']} warm-up "
        f"steps, {workload['batch_size']} sentences a step (rows of at most "
        f"{workload['max_length']} sub-words), {first.get('sub_words', '?')} sub-words timed; "
        f"the first {workload['sentences']} sentences of {workload['data']}; model "
        f"{workload['model']}.",
        "",
        *lines,
        "",
        "sub-words/s counts the real sub-words of the timed steps (padding is cost). One step: "
        "forward, token cross-entropy, backward, gradient-norm clipping at 1.0, AdamW (weight "
        "decay 0.01); the word-embedding table is frozen. The torch rows train on naba's own "
        "batches (train-batches.jsonl). Losses differ between engines through their dropout "
        "masks. peak MB: peak RSS of the training process.",
    ]
    # Same batches, so the same timed work: say so when an engine disagrees.
    for key, what in (("sub_words", "sub-words"), ("steps", "timed steps")):
        counts = {e: r.get(key) for e, r in ok.items() if r.get(key) is not None}
        if len(set(counts.values())) > 1:
            out.append(f"Warning: the engines timed different {what}: "
                       + ", ".join(f"{e} {v}" for e, v in counts.items()) + ".")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- accuracy

def compare_logits(dump, reference, num_labels):
    """Max |difference| and argmax agreement (share of tokens, or of windows for sequence
    classification) of `dump` against `reference`; both are lists of flattened windows."""
    if len(dump) != len(reference):
        return {"error": f"{len(dump)} windows dumped against {len(reference)}"}
    max_diff, agree, total = 0.0, 0, 0
    for w, (a, b) in enumerate(zip(dump, reference)):
        if len(a) != len(b) or len(a) % num_labels:
            return {"error": f"window {w}: {len(a)} logits against {len(b)}"}
        for i in range(0, len(a), num_labels):
            ra, rb = a[i:i + num_labels], b[i:i + num_labels]
            max_diff = max(max_diff, max(abs(x - y) for x, y in zip(ra, rb)))
            agree += ra.index(max(ra)) == rb.index(max(rb))
            total += 1
    if math.isnan(max_diff):
        return {"error": "NaN in logits"}
    return {"windows": len(dump), "rows": total, "max_abs_diff": max_diff,
            "argmax_agreement": agree / total if total else None}


def accuracy(engines, results, out, num_labels):
    ref_path = out / f"{REFERENCE}.logits.json"
    if "error" in results.get(REFERENCE, {"error": 1}) or not ref_path.exists():
        return {}
    reference = json.loads(ref_path.read_text())
    report = {}
    for engine in engines:
        path = out / f"{engine}.logits.json"
        if engine == REFERENCE or "error" in results[engine] or not path.exists():
            continue
        try:
            report[engine] = compare_logits(json.loads(path.read_text()), reference, num_labels)
        except (ValueError, TypeError) as err:
            report[engine] = {"error": f"unreadable dump: {err}"}
    return report


# ---------------------------------------------------------------- report

def machine_info(args, results, train=None):
    model, flags = "unknown", set()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    versions = {"python (run.py)": platform.python_version()}
    train = train or {}
    if args.naba and ("naba" in results or any(e in train for e in NABA_TRAIN_ENGINES)):
        try:
            versions["naba"] = subprocess.run([str(args.naba), "--version"], capture_output=True,
                                              text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    for engine, result in results.items():
        if result.get("version"):
            versions[engine] = result["version"]
    for engine, result in train.items():
        if result.get("version") and result["version"] not in versions.values():
            versions[f"{engine} (train)"] = result["version"]
    info = {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "threads": args.threads,
        "batch_size": args.batch_size,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions,
    }
    if args.train_data is not None:
        info["train_batch_size"] = args.train_batch_size
    return info


def fmt(value, digits):
    return "–" if value is None else f"{value:,.{digits}f}"


def table(engines, results, machine, acc):
    ref = results.get(REFERENCE, {})
    ref_tput = ref.get("subwords_per_s") if "error" not in ref else None
    lines = [
        "| engine | sub-words/s | docs/s | vs torch-f32 | p50 ms | p99 ms | start-up s "
        "| first answer s | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in engines:
        r = results[engine]
        if "error" in r:
            lines.append(f"| {engine} | failed: {r['error'].replace('|', '/')} "
                         "| | | | | | | |")
            continue
        tput = r.get("subwords_per_s")
        ratio = f"{tput / ref_tput:.2f}×" if tput and ref_tput else "–"
        lines.append(
            f"| {engine} | {fmt(tput, 0)} | {fmt(r.get('docs_per_s'), 2)} | {ratio} "
            f"| {fmt(r.get('latency_p50_ms'), 1)} | {fmt(r.get('latency_p99_ms'), 1)} "
            f"| {fmt(r.get('startup_s'), 2)} | {fmt(r.get('first_answer_s'), 2)} "
            f"| {fmt(r.get('peak_rss_mb'), 0)} |")
    first = next((results[e] for e in engines if "error" not in results[e]), {})
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in machine["flags"].items())
    versions = "; ".join(f"{k}: {v}" for k, v in machine["versions"].items())
    out = [
        f"Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs; {flags}); "
        f"{machine['threads']} threads, batch {machine['batch_size']}; {machine['date']}.",
        f"Versions: {versions}.",
        f"Workload: {first.get('windows', '?')} windows, {first.get('subwords', '?')} sub-words, "
        f"{first.get('docs', '?')} documents.",
        "",
        *lines,
        "",
        "sub-words/s counts real tokens only (padding is cost); latency is one request of the "
        "latency window at batch 1. start-up s: naba, wall time of a `naba predict` process "
        "(median); peers, time inside the process from the script's first line to the model "
        "being ready (no interpreter start, no request). first answer s: wall time of a whole "
        "process that loads the engine and answers one short request, measured the same way "
        "for every engine (median). peak MB: peak RSS of the benchmark process.",
    ]
    for engine in engines:
        if results[engine].get("startup_error"):
            out.append(f"{engine} start-up runs failed: {results[engine]['startup_error']}")
    if acc:
        parts = []
        for engine, a in acc.items():
            if "error" in a:
                parts.append(f"{engine}: {a['error']}")
            else:
                parts.append(f"{engine} max |Δ| {a['max_abs_diff']:.3g}, argmax agreement "
                             f"{100 * a['argmax_agreement']:.2f}% of {a['rows']}")
        first_acc = next((a for a in acc.values() if "windows" in a), {})
        out += ["", f"Accuracy against torch-f32 (logits of the first "
                    f"{first_acc.get('windows', '?')} windows): " + "; ".join(parts) + "."]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main

def setup_venv(python):
    """Creates the peers' virtual environment (the directory two levels above `python`)."""
    venv = python.parent.parent
    print(f"creating {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "torch", "transformers",
                    "onnxruntime", "onnx"], check=True)


def run_inference(args, out):
    """The inference rows: naba bench (making the windows), the peers, the accuracy check.
    Returns (results by engine, accuracy)."""
    config = json.loads((args.model / "config.json").read_text())
    num_labels = len(config.get("id2label") or {}) or config.get("num_labels") or 2

    results = {}
    if args.windows is None:
        windows, latency = out / "windows.jsonl", out / "latency.json"
        naba = run_naba(args, config, out)
        if "naba" in args.engines:
            results["naba"] = naba
        if "error" in naba and not windows.exists():
            for engine in args.engines:
                results.setdefault(engine, {"engine": engine,
                                            "error": "no windows: naba bench failed"})
    else:
        windows, latency = args.windows, args.latency_window

    for engine in args.engines:
        if engine in NABA_ENGINES[1:] and args.windows is None:
            results[engine] = run_naba(args, config, out, engine)
        elif engine not in NABA_ENGINES and engine not in results:
            results[engine] = run_peer(args, engine, windows, latency, out)

    return results, accuracy(args.engines, results, out, num_labels)


def main():
    args = parse_args()
    args.python = args.python.expanduser()
    needs_python = (not args.train_only
                    or any(e in TRAIN_PEER_ENGINES for e in args.train_engines))
    if needs_python and not args.python.exists():
        if not args.setup:
            sys.exit(f"{args.python} does not exist: run with --setup, or give --python")
        setup_venv(args.python)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    # Logs are appended to, and a previous run's windows, results or dumps would pass for
    # this run's if a child failed before writing its own.
    stale = [out / "results.md", out / "results.json"]
    if not args.train_only:
        stale += list(out.glob("*.log")) + list(out.glob("*.logits.json"))
        stale += [out / f"{e}.json" for e in ALL_ENGINES]
        if args.windows is None:
            stale += [out / "windows.jsonl", out / "latency.json"]
    if args.train_data is not None:
        stale += [out / "train-batches.jsonl", out / "naba-reference-train-batches.jsonl",
                  out / "naba-f32-train-batches.jsonl"]
        stale += [out / f"{e}-train{ext}" for e in ALL_TRAIN_ENGINES for ext in (".json", ".log")]
    for path in stale:
        path.unlink(missing_ok=True)

    results, acc, md = {}, {}, ""
    if not args.train_only:
        results, acc = run_inference(args, out)
    train, workload = run_training(args, out) if args.train_data is not None else (None, None)

    machine = machine_info(args, results, train)
    if not args.train_only:
        md = table(args.engines, results, machine, acc)
    if train is not None:
        md += ("\n" if md else "") + train_table(train, machine, workload, args.train_only)
    (out / "results.md").write_text(md)
    report = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "results": results,
        "accuracy": acc,
    }
    if train is not None:
        report["train"] = {"workload": workload, "results": train}
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(md)
    failed = any("error" in r for r in results.values())
    failed = failed or any("error" in r for r in (train or {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
