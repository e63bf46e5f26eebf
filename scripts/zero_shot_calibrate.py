#!/usr/bin/env python3
"""Fit the zero-shot calibration constants (naba_tasks::zero_shot::Calibration) on a dev split.

Input: `naba predict --task zero-shot --labels-file LABELS --input DEV.jsonl` output (one JSON
line per document, with `raw`, the similarities), and the same DEV.jsonl with each document's gold label
in a `gold` field. Prints:

- temperature: the softmax temperature over labels that minimises the log loss of the gold
  label (single-label scores);
- threshold, scale: a one-feature logistic regression of "this label is the document's" on the
  label's similarity (multi-label scores, sigmoid((similarity - threshold) / scale)).

Grid searches, standard library only:

    python3 scripts/zero_shot_calibrate.py --pred dev-pred.jsonl --gold dev.jsonl
"""

import argparse
import json
import math


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pred", required=True)
    ap.add_argument("--gold", required=True)
    a = ap.parse_args()
    gold = [json.loads(l)["gold"] for l in open(a.gold, encoding="utf-8") if l.strip()]
    sims = [json.loads(l)["raw"] for l in open(a.pred, encoding="utf-8") if l.strip()]
    assert len(gold) == len(sims), (len(gold), len(sims))
    rows = [(s, g) for s, g in zip(sims, gold) if g in s]
    print(f"{len(rows)} documents with a gold label among the candidates")

    def nll(t):
        total = 0.0
        for s, g in rows:
            m = max(s.values())
            z = sum(math.exp((v - m) / t) for v in s.values())
            total -= (s[g] - m) / t - math.log(z)
        return total / len(rows)

    temps = [0.002 * k for k in range(1, 101)]
    t_best = min(temps, key=nll)
    acc = sum(max(s, key=s.get) == g for s, g in rows) / len(rows)
    print(f"temperature {t_best:.3f} (log loss {nll(t_best):.4f}); argmax accuracy {acc:.4f}")

    pairs = [(v, 1.0 if k == g else 0.0) for s, g in rows for k, v in s.items()]

    def bce(b, c):
        total = 0.0
        for v, y in pairs:
            z = (v - b) / c
            p = 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0
            p = min(max(p, 1e-9), 1 - 1e-9)
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
        return total / len(pairs)

    lo = min(v for v, _ in pairs)
    hi = max(v for v, _ in pairs)
    best = None
    for i in range(61):
        b = lo + (hi - lo) * i / 60
        for c in [0.002 * k for k in range(1, 31)]:
            loss = bce(b, c)
            if best is None or loss < best[0]:
                best = (loss, b, c)
    loss, b, c = best
    print(f"threshold {b:.3f} scale {c:.3f} (binary log loss {loss:.4f})")


if __name__ == "__main__":
    main()
