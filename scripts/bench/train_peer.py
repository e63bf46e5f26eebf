#!/usr/bin/env python3
"""The torch peer of naba's side-by-side training benchmark (`scripts/bench/run.py --train-data`).

Fine-tunes a Hugging Face-layout token-classification checkpoint (BertForTokenClassification)
with transformers + torch on batches that naba already made (`naba bench-train --batches-out`),
so both sides train on exactly the same sub-word rows, and writes one JSON object with the
keys engine ("torch-f32-train" or "torch-bf16-train"), threads, steps, warmup_steps,
sub_words, seconds, sub_words_per_s, padded_tokens_per_s, losses, trainable_params, torch,
transformers (plus optimizer, lr, dropout, embedding_dropout, version, peak_rss_mb).

Normally run.py calls it; by hand (the peers' venv has torch and transformers):

    ~/.cache/naba-peers/bin/python scripts/bench/train_peer.py \\
        --model ~/.cache/naba/models/ner-anercorp --batches train-batches.jsonl \\
        --warmup-steps 2 --threads 2 --out torch-f32-train.json [--bf16]

Input. --batches is JSONL, one line per training step:
{"ids": [[int, ...], ...], "labels": [[int, ...], ...]}: rows of varying length (sub-word ids,
CLS/SEP already in place) and one label per sub-word, -100 for sub-words the loss ignores.
Each step's rows are right-padded to the longest row of that step with the config's
pad_token_id, attention mask 0 and label -100 on the padding.

The model and one step, matched to naba's trainer:
* `AutoModelForTokenClassification.from_pretrained(--model)` in float32, train mode, with
  hidden_dropout_prob = classifier_dropout = --dropout (dropout after the attention-output and
  FFN-output projections and before the classifier, where naba applies it) and
  attention_probs_dropout_prob = 0 (naba does not drop attention probabilities). The dropout
  transformers' BERT also applies after the embedding LayerNorm, which naba does not, is set
  to --embedding-dropout (default 0).
* The word-embedding table is frozen; everything else trains (every encoder layer, the layer
  norms, position and token-type embeddings, the classifier).
* AdamW (--lr, weight decay 0.01) over the trainable parameters, fused=True when this torch
  supports it on CPU, else foreach=True; the one used is in "optimizer".
* Per step: forward with labels (transformers' mean token cross-entropy over labels != -100),
  backward, clip the gradient norm to 1.0, optimizer step, zero_grad(set_to_none=True).
* --bf16: forward and backward under `torch.autocast("cpu", dtype=torch.bfloat16)`; the
  weights, gradients and optimizer state stay float32.
* torch.set_num_threads(--threads), one inter-op thread, torch.manual_seed(0).

What is timed. The first --warmup-steps lines are warm-up steps (trained on, not timed); the
remaining lines are timed with time.perf_counter around the whole loop: forward, loss,
backward, clipping, optimizer step, zero_grad and reading the loss back (`.item()`). Not
timed: reading the file, validating it and building the padded tensors (all done before the
clock starts). sub_words_per_s counts the real (unpadded) sub-words of the timed steps;
padded_tokens_per_s counts rows x padded width, i.e. what the model actually computed on.
losses has one loss per step, warm-up steps included.

A missing file, a malformed line (named by its line number), or rows that do not fit the
checkpoint (ids outside the vocabulary, labels outside 0..num_labels-1 and not -100, rows
longer than max_position_embeddings) stop the script with a message before any training.
"""

import argparse
import json
import os
import pathlib
import resource
import sys
import time

IGNORE = -100
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
SEED = 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=pathlib.Path,
                   help="Hugging Face-layout checkpoint directory (config.json, model.safetensors)")
    p.add_argument("--batches", required=True, type=pathlib.Path,
                   help='JSONL, one step per line: {"ids": [[...], ...], "labels": [[...], ...]}')
    p.add_argument("--warmup-steps", type=int, default=2,
                   help="leading lines trained on but not timed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path, help="write the JSON result here (also printed)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="hidden and classifier dropout (attention-probability dropout is 0)")
    p.add_argument("--embedding-dropout", type=float, default=0.0,
                   help="dropout after the embedding LayerNorm (naba has none there)")
    p.add_argument("--bf16", action="store_true",
                   help='forward and backward under torch.autocast("cpu", dtype=torch.bfloat16)')
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must not be negative")
    for name in ("dropout", "embedding_dropout"):
        if not 0.0 <= getattr(args, name) < 1.0:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1)")
    return args


# ---------------------------------------------------------------- inputs

def read_config(model_dir):
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise SystemExit(f"error: {model_dir}: no such checkpoint directory")
    if not path.exists():
        raise SystemExit(f"error: {path}: missing (not a Hugging Face-layout checkpoint)")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise SystemExit(f"error: {path}: not valid JSON: {err}")


def int_rows(value, key, where):
    """`value` as a non-empty list of non-empty lists of ints, or a SystemExit naming `where`."""
    if not isinstance(value, list) or not value:
        raise SystemExit(f"error: {where}: \"{key}\" must be a non-empty list of rows")
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise SystemExit(f"error: {where}: \"{key}\" row {r} must be a non-empty list")
        # bool is an int subclass; true/false in the file is still a mistake.
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in row):
            raise SystemExit(f"error: {where}: \"{key}\" row {r} holds a non-integer")
    return value


def read_batches(path, vocab_size, num_labels, max_len):
    """The steps of `path` as a list of (ids rows, labels rows), checked against the model."""
    if not path.exists():
        raise SystemExit(f"error: {path}: no such batches file")
    steps = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line.rstrip())
            except json.JSONDecodeError as err:
                raise SystemExit(f"error: {where}: not valid JSON ({err.msg}, column "
                                 f"{err.colno})")
            if not isinstance(obj, dict) or "ids" not in obj or "labels" not in obj:
                raise SystemExit(f"error: {where}: expected an object with \"ids\" and \"labels\"")
            ids = int_rows(obj["ids"], "ids", where)
            labels = int_rows(obj["labels"], "labels", where)
            if len(ids) != len(labels):
                raise SystemExit(f"error: {where}: {len(ids)} rows of ids but "
                                 f"{len(labels)} rows of labels")
            for r, (row_ids, row_labels) in enumerate(zip(ids, labels)):
                if len(row_ids) != len(row_labels):
                    raise SystemExit(f"error: {where}: row {r} has {len(row_ids)} ids but "
                                     f"{len(row_labels)} labels")
                if max_len and len(row_ids) > max_len:
                    raise SystemExit(f"error: {where}: row {r} has {len(row_ids)} sub-words, "
                                     f"more than max_position_embeddings {max_len}")
                bad = next((x for x in row_ids if not 0 <= x < vocab_size), None)
                if bad is not None:
                    raise SystemExit(f"error: {where}: row {r}: id {bad} outside the "
                                     f"vocabulary (0..{vocab_size - 1})")
                bad = next((x for x in row_labels if x != IGNORE and not 0 <= x < num_labels),
                           None)
                if bad is not None:
                    raise SystemExit(f"error: {where}: row {r}: label {bad} is neither "
                                     f"{IGNORE} nor in 0..{num_labels - 1}")
            steps.append((ids, labels))
    if not steps:
        raise SystemExit(f"error: {path}: no batches")
    return steps


def make_batch(torch, ids_rows, label_rows, pad_id):
    """Right-padded int64 tensors (input_ids, attention_mask, labels) and the real token count."""
    width = max(len(r) for r in ids_rows)
    n = len(ids_rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(zip(ids_rows, label_rows)):
        ids[r, :len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
        mask[r, :len(row_ids)] = 1
        labels[r, :len(row_labels)] = torch.tensor(row_labels, dtype=torch.long)
    return ids, mask, labels, sum(len(r) for r in ids_rows)


# ---------------------------------------------------------------- model

def load_model(torch, transformers, args):
    transformers.utils.logging.disable_progress_bar()
    # dtype pinned: transformers 5 loads in the stored dtype by default. The dropout kwargs
    # override the config's values.
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        str(args.model), dtype=torch.float32,
        hidden_dropout_prob=args.dropout, classifier_dropout=args.dropout,
        attention_probs_dropout_prob=0.0)
    # hidden_dropout_prob also drives the dropout after the embedding LayerNorm.
    embeddings = getattr(model.base_model, "embeddings", None)
    emb_dropout = getattr(embeddings, "dropout", None)
    if isinstance(emb_dropout, torch.nn.Dropout):
        emb_dropout.p = args.embedding_dropout
        embedding_dropout = args.embedding_dropout
    else:
        embedding_dropout = None  # no such module in this architecture: nothing to set
    # get_input_embeddings() finds the word-embedding table whatever the base model is called.
    model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    return model, embedding_dropout


def make_optimizer(torch, params, lr):
    """AdamW, fused on CPU when this torch has it (2.4+), else the foreach implementation."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=True), \
            "AdamW fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY, foreach=True), \
            "AdamW foreach"


# ---------------------------------------------------------------- main

def main():
    args = parse_args()
    config = read_config(args.model)
    num_labels = len(config.get("id2label") or {}) or config.get("num_labels") or 2
    vocab_size = config.get("vocab_size") or 2 ** 62
    max_len = config.get("max_position_embeddings")
    # XLM-R-style position ids start after the padding index: the usable length is shorter.
    if max_len and config.get("model_type") in ("xlm-roberta", "roberta", "camembert"):
        max_len -= (config.get("pad_token_id") or 0) + 1
    steps = read_batches(args.batches, vocab_size, num_labels, max_len)
    if args.warmup_steps >= len(steps):
        raise SystemExit(f"error: {args.batches}: {len(steps)} batches, none left to time after "
                         f"{args.warmup_steps} warm-up steps")

    # Before torch is imported: its OpenMP / MKL pools read these once.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # A local directory never needs the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)

    pad_id = config.get("pad_token_id")
    pad_id = 0 if pad_id is None else pad_id
    batches = [make_batch(torch, ids, labels, pad_id) for ids, labels in steps]

    model, embedding_dropout = load_model(torch, transformers, args)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer, optimizer_name = make_optimizer(torch, params, args.lr)

    def step(ids, mask, labels):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    losses = []
    for ids, mask, labels, _ in batches[:args.warmup_steps]:
        losses.append(step(ids, mask, labels))
    timed = batches[args.warmup_steps:]
    start = time.perf_counter()
    for ids, mask, labels, _ in timed:
        losses.append(step(ids, mask, labels))
    seconds = time.perf_counter() - start

    sub_words = sum(b[3] for b in timed)
    padded = sum(b[0].numel() for b in timed)
    result = {
        "engine": "torch-bf16-train" if args.bf16 else "torch-f32-train",
        "threads": args.threads,
        "steps": len(timed),
        "warmup_steps": args.warmup_steps,
        "sub_words": sub_words,
        "seconds": round(seconds, 4),
        "sub_words_per_s": round(sub_words / seconds, 1),
        "padded_tokens_per_s": round(padded / seconds, 1),
        "losses": [round(l, 6) for l in losses],
        "trainable_params": trainable,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optimizer": optimizer_name,
        "lr": args.lr,
        "dropout": args.dropout,
        "embedding_dropout": embedding_dropout,
        "version": f"torch {torch.__version__}, transformers {transformers.__version__}",
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    if any(l != l for l in losses):  # NaN
        print("error: NaN loss", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
