#!/usr/bin/env python3
"""Checks that the checkpoints `naba models fetch` assembles load in Python `transformers` and
give what naba gives.

For every model directory: loads it with the Auto class its config names, and fails on any
missing or unexpected tensor. Then, on the sentences of ../shared/examples (each cut to fit one
window):
* token classification: transformers' `token-classification` pipeline with
  `aggregation_strategy="first"` against `naba predict --task ner --aggregation first
  --decoding argmax --no-trim` (naba's defaults differ on purpose: IOB2 decoding and trimmed
  spans); labels, character offsets and scores must agree (scores to 1e-3).
* sequence classification: softmax of the logits against `naba predict --task topic`, label by
  label, to 1e-3.
* pair classification (stance): the same, on (target, sentence) pairs with one fixed target,
  against `naba predict --task stance --target` (a sentence that fits one window is its own
  evidence, so naba's decision is the model's output on the pair).

Not part of CI or of the README's commands: it needs torch and transformers, e.g.
    python3 -m venv ~/.cache/naba-pyenv && ~/.cache/naba-pyenv/bin/pip install torch transformers
    ~/.cache/naba-pyenv/bin/python scripts/check_transformers_load.py \
        --naba target/release/naba ~/.cache/naba/models/ner-anercorp ~/.cache/naba/models/topic-asnd
"""

import argparse
import json
import pathlib
import subprocess
import sys

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerFast,
    pipeline,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "examples"
TOLERANCE = 1e-3


def sentences(limit):
    """Sentences from the example articles, short enough for one window."""
    out = []
    for path in sorted(EXAMPLES.glob("*.txt")):
        for part in path.read_text(encoding="utf-8").replace("\n", " ").split("."):
            words = part.split()
            if len(words) >= 5:
                out.append(" ".join(words[:40]))
    return out[:limit]


TARGET = "روسيا تدخلت في الانتخابات الأمريكية"


def naba(binary, model, task, texts, extra):
    cmd = [binary, "predict", "--task", task, "--model", str(model), "--format", "jsonl",
           "--input", "-", *extra]
    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(texts))
    done = subprocess.run(cmd, input=lines, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["id"])


def load(model_dir):
    config = AutoConfig.from_pretrained(model_dir)
    arch = (config.architectures or [""])[0]
    auto = AutoModelForTokenClassification if "TokenClassification" in arch \
        else AutoModelForSequenceClassification
    model, info = auto.from_pretrained(model_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"{model_dir}: transformers reports {problems}")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"),
                                  pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                                  sep_token="</s>", model_max_length=512)
    return config, arch, model.eval(), tok


def check_ner(binary, model_dir, model, tok, texts):
    ner = pipeline("token-classification", model=model, tokenizer=tok,
                   aggregation_strategy="first", device="cpu")
    ours = naba(binary, model_dir, "ner", texts,
                ["--aggregation", "first", "--decoding", "argmax", "--no-trim"])
    worst = 0.0
    for text, row in zip(texts, ours):
        theirs = [(e["entity_group"], e["start"], e["end"], float(e["score"])) for e in ner(text)]
        mine = [(e["type"], e["start"], e["end"], e["score"]) for e in row["entities"]]
        if [t[:3] for t in theirs] != [m[:3] for m in mine]:
            raise SystemExit(f"{model_dir}: entities differ on `{text}`:\n"
                             f"transformers {theirs}\nnaba         {mine}")
        worst = max([worst, *(abs(a[3] - b[3]) for a, b in zip(theirs, mine))])
    if worst > TOLERANCE:
        raise SystemExit(f"{model_dir}: entity scores differ by up to {worst:.2e}")
    n = sum(len(r["entities"]) for r in ours)
    return f"{len(texts)} sentences, {n} entities identical, scores within {worst:.1e}"


def check_sequence(binary, model_dir, config, model, tok, texts, pair):
    if pair:
        ours = naba(binary, model_dir, "stance", texts, ["--target", TARGET])
    else:
        ours = naba(binary, model_dir, "topic", texts, [])
    worst = 0.0
    with torch.no_grad():
        for text, row in zip(texts, ours):
            if pair:
                enc = tok(TARGET, text, return_tensors="pt")
            else:
                enc = tok(text, return_tensors="pt")
            probs = torch.softmax(model(**enc).logits[0], dim=-1).tolist()
            mine = {l["label"]: l["score"] for l in row["labels"]}
            for i, p in enumerate(probs):
                worst = max(worst, abs(p - mine[config.id2label[i]]))
    if worst > TOLERANCE:
        raise SystemExit(f"{model_dir}: label probabilities differ by up to {worst:.2e}")
    return f"{len(texts)} texts, label probabilities within {worst:.1e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naba", default="target/release/naba", help="the naba binary")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("models", nargs="+", type=pathlib.Path, help="assembled model dirs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    texts = sentences(args.sentences)
    if not texts:
        raise SystemExit(f"no example sentences under {EXAMPLES}")
    for model_dir in args.models:
        config, arch, model, tok = load(model_dir)
        if "TokenClassification" in arch:
            what = check_ner(args.naba, model_dir, model, tok, texts)
        else:
            pair = (model_dir / "model_card.json").exists() and json.loads(
                (model_dir / "model_card.json").read_text())["task"] == "stance"
            what = check_sequence(args.naba, model_dir, config, model, tok, texts, pair)
        print(f"{model_dir.name}: {arch} loads with no missing or unexpected tensors; {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
