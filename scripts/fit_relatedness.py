"""Fits the stance model's relatedness gate (crates/naba-tasks/src/relatedness.rs) on training
splits only, and writes its relatedness.json.

    python3 scripts/fit_relatedness.py --out models/stance-ans/relatedness.json

Related: ANS training pairs, the claim (s1) with its own sentence (s2), whatever their stance.
Unrelated: an ANS training claim with a random ANT training article of 150+ words, read as the
gate reads a long text, sentence by sentence; the sentence most similar to the claim stands for
the article, because the gate lets an article through when any sentence concerns the claim. Each example's feature is the cosine of E5 embeddings (`naba embed`, prefix
`query: `); a one-feature logistic regression, fitted by Newton's method, gives
P(related) = sigmoid(weight * cosine + bias). Classes are weighted equally.

Only the training splits are read. Standard library only; needs a built `naba` and the base
encoder (`naba models fetch`).
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from stance_pairs import ans, ant  # noqa: E402


def embed(naba, rows, sentences=False):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for i, text in enumerate(rows):
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
        path = f.name
    cmd = [naba, "embed", "--prefix", "query", "--input", path, "--format", "jsonl"]
    if sentences:
        cmd.append("--sentences")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    os.unlink(path)
    lines = [json.loads(l) for l in out.splitlines() if l.strip()]
    if sentences:
        return [[p["embedding"] for p in d["sentences"]] for d in lines]
    return [d["embedding"] for d in lines]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def fit(xs, ys, iters=50):
    """One-feature logistic regression, each class weighted to half the total."""
    pos = sum(ys)
    neg = len(ys) - pos
    ws = [0.5 / pos if y else 0.5 / neg for y in ys]
    mean = sum(xs) / len(xs)
    w, b = 1.0, -mean
    for _ in range(iters):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for x, y, c in zip(xs, ys, ws):
            p = 1 / (1 + math.exp(-(w * x + b)))
            r = c * (p - y)
            g0 += r * x
            g1 += r
            v = c * p * (1 - p)
            h00 += v * x * x
            h01 += v * x
            h11 += v
        # A little ridge keeps the Newton step defined when the classes separate.
        h00 += 1e-6
        h11 += 1e-6
        det = h00 * h11 - h01 * h01
        dw = (h11 * g0 - h01 * g1) / det
        db = (h00 * g1 - h01 * g0) / det
        w, b = w - dw, b - db
        if abs(dw) < 1e-9 and abs(db) < 1e-9:
            break
    return w, b


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--naba", default="target/release/naba")
    p.add_argument("-n", type=int, default=1000, help="examples of each class")
    p.add_argument("--seed", type=int, default=19)
    a = p.parse_args()
    rng = random.Random(a.seed)
    pairs = ans("train")
    articles = ant("train")
    related = rng.sample(pairs, min(a.n, len(pairs)))
    unrelated = [(rng.choice(pairs)["s1"], rng.choice(articles)["text"]) for _ in range(a.n)]
    claims = embed(a.naba, [r["s1"] for r in related] + [c for c, _ in unrelated])
    sents = embed(a.naba, [r["s2"] for r in related])
    arts = embed(a.naba, [t for _, t in unrelated], sentences=True)
    xs, ys = [], []
    for c, s in zip(claims[: len(related)], sents):
        xs.append(dot(c, s))
        ys.append(1)
    for c, ps in zip(claims[len(related):], arts):
        xs.append(max(dot(c, q) for q in ps))
        ys.append(0)
    w, b = fit(xs, ys)
    cut = -b / w
    tp = sum(1 for x, y in zip(xs, ys) if y and x >= cut)
    tn = sum(1 for x, y in zip(xs, ys) if not y and x < cut)
    npos = sum(ys)
    print(
        f"weight {w:.3f} bias {b:.3f}: P(related) = 1/2 at cosine {cut:.4f}; on the training "
        f"examples related kept {tp}/{npos}, unrelated refused {tn}/{len(ys) - npos}"
    )
    params = {
        "encoder": "multilingual-e5-small-q4",
        "prefix": "query: ",
        "weight": round(w, 4),
        "bias": round(b, 4),
        "fitted_on": (
            f"scripts/fit_relatedness.py -n {a.n} --seed {a.seed}: {npos} ANS train pairs "
            f"(related) and {len(ys) - npos} ANS train claims with an ANT train article "
            f"(unrelated); training accuracy {tp}/{npos} related, {tn}/{len(ys) - npos} unrelated"
        ),
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(params, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
