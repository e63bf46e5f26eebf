"""Builds stance inputs for the relatedness check: an ANS claim paired with a news article.

    python3 scripts/stance_pairs.py unrelated --split test > target/unrelated-test.jsonl
    python3 scripts/stance_pairs.py needle --split test > target/needle-test.jsonl
    naba predict --task stance --model stance-ans -i target/unrelated-test.jsonl

`unrelated`: N (default 200) pairs of an ANS claim (`s1`) with a random ANT article of at least
150 words. The article does not concern the claim, so the right answer is `other`.

`needle`: the same articles, each with one ANS sentence (`s2`) that agrees or disagrees with its
claim put in the middle of the article; `label` is that pair's stance. The article now does
concern the claim, and the stance should survive being read inside it.

`train`: the relatedness training set (`scripts/fit_relatedness.py`), from the training splits
only: every ANS training pair (related) and each ANS training claim with sentences of a random
ANT training article (unrelated).

Pure standard library and a fixed seed, so the same command gives the same file.
"""

import argparse
import csv
import json
import random
import sys

DATA = "../shared/datasets"
MIN_WORDS = 150


def ans(split):
    with open(f"{DATA}/ans/{split}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ant(split):
    out = []
    with open(f"{DATA}/antcorpus/ant_corpus_v1.1.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            text = d.get("text") or ""
            if d["split"] == split and len(text.split()) >= MIN_WORDS:
                out.append(d)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["unrelated", "needle", "train"])
    p.add_argument("--split", default="test", help="ANS and ANT split to draw from")
    p.add_argument("-n", type=int, default=200, help="pairs (unrelated, needle)")
    p.add_argument("--seed", type=int, default=19)
    a = p.parse_args()
    rng = random.Random(a.seed)
    pairs = ans(a.split)
    articles = ant(a.split)
    if a.kind == "train":
        for i, r in enumerate(pairs):
            row = {"target": r["s1"], "text": r["s2"], "related": 1, "source": f"ans-{i}"}
            print(json.dumps(row, ensure_ascii=False))
            art = rng.choice(articles)
            row = {"target": r["s1"], "text": art["text"], "related": 0, "source": art["docno"]}
            print(json.dumps(row, ensure_ascii=False))
        return
    if a.n > len(articles):
        sys.exit(f"only {len(articles)} {a.split} articles have {MIN_WORDS}+ words; ask for fewer")
    chosen = rng.sample(articles, a.n)
    if a.kind == "unrelated":
        claims = [rng.choice(pairs)["s1"] for _ in chosen]
        for k, (claim, art) in enumerate(zip(claims, chosen)):
            row = {"id": f"u{k}-{art['docno']}", "target": claim, "text": art["text"], "label": "other"}
            print(json.dumps(row, ensure_ascii=False))
        return
    sided = [r for r in pairs if r["stance"] in ("agree", "disagree")]
    for k, art in enumerate(chosen):
        r = rng.choice(sided)
        paras = art["text"].split("\n")
        mid = len(paras) // 2
        # A sentence of its own between paragraphs, so sentence splitting keeps it whole.
        text = "\n".join(paras[:mid] + [r["s2"].strip().rstrip(".") + "."] + paras[mid:])
        row = {"id": f"n{k}-{art['docno']}", "target": r["s1"], "text": text, "label": r["stance"]}
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
