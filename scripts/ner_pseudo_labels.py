"""Self-training data for NER: unlabelled news text labelled where several models agree.

    python3 scripts/ner_pseudo_labels.py --naba target/release/naba \
        --model ner-anercorp --model target/train/ner-e8/model --model target/train/ner-bf16/model \
        --articles 2500 --seed 7 --out target/pseudo/ant-ner.txt

Reads articles of the ANT corpus's *train* split only (never dev or test text of any data set),
takes a seeded sample of them, cuts each into words and sentences the way ANERcorp writes them
(punctuation as words of its own, a sentence ends at `.`, `!`, `?` or `؟`, none longer than
--max-words), and has every --model label them with `naba eval` (CoNLL in, its
predictions.conll out, read in 100-word passages as the models are served). A sentence is kept
only where all models give the same tag to every word: the ensemble's confident labels. The
kept sentences are written in article order as CoNLL (`word TAG`), ready for a recipe's
`data.extra_train`, and a summary (sentences read and kept, entities by type, agreement) goes
to OUT.json. Writes go to temporary files renamed at the end, so an interrupted run leaves no
half-written output.
"""
import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import tempfile

WORD = re.compile(r"\d+(?:[.,]\d+)+|\w+|[^\w\s]")
ENDS = {".", "!", "?", "؟"}


def sentences(text, max_words):
    out, cur = [], []
    for w in WORD.findall(text):
        cur.append(w)
        if w in ENDS or len(cur) >= max_words:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    # A "sentence" of punctuation alone teaches nothing.
    return [s for s in out if any(ch.isalpha() for w in s for ch in w)]


def read_predictions(path):
    sents, cur = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                if cur:
                    sents.append(cur)
                cur = []
                continue
            cur.append(parts[-1])
    if cur:
        sents.append(cur)
    return sents


def entity_types(tags):
    return [t[2:] for t in tags if t.startswith("B-")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--naba", default="target/release/naba")
    ap.add_argument("--model", action="append", required=True, help="repeat: the ensemble")
    ap.add_argument("--data", default="../shared/datasets/antcorpus/ant_corpus_v1.1.jsonl")
    ap.add_argument("--articles", type=int, default=2500, help="train articles sampled")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-words", type=int, default=60)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if len(a.model) < 2:
        sys.exit("give at least two --model: a sentence is kept where they agree")

    docs = []
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d.get("split") == "train" and (d.get("text") or "").strip():
                docs.append(d)
    random.Random(a.seed).shuffle(docs)
    docs = docs[: a.articles]
    sents = [s for d in docs for s in sentences(d["text"], a.max_words)]
    print(f"{len(docs)} train articles, {len(sents)} sentences, "
          f"{sum(map(len, sents))} words", file=sys.stderr)

    work = tempfile.mkdtemp(prefix="naba-pseudo-")
    unlabelled = os.path.join(work, "unlabelled.txt")
    with open(unlabelled, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(f"{w} O" for w in s) for s in sents) + "\n")

    votes = []
    for i, model in enumerate(a.model):
        report = os.path.join(work, f"m{i}")
        cmd = [a.naba, "eval", "--task", "ner", "--data", unlabelled, "--format", "conll",
               "--decoding", "iob2", "--model", model, "--report-dir", report]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        pred = read_predictions(os.path.join(report, "predictions.conll"))
        if len(pred) != len(sents) or any(len(p) != len(s) for p, s in zip(pred, sents)):
            sys.exit(f"{model}: predictions do not line up with the {len(sents)} sentences")
        votes.append(pred)

    kept, by_type, agree_words = [], collections.Counter(), 0
    for j, s in enumerate(sents):
        tags = [v[j] for v in votes]
        agree_words += sum(len(set(col)) == 1 for col in zip(*tags))
        if all(t == tags[0] for t in tags[1:]):
            kept.append((s, tags[0]))
            by_type.update(entity_types(tags[0]))

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(s, tags)) for s, tags in kept))
        f.write("\n")
    summary = {
        "data": a.data, "split": "train", "articles": len(docs), "seed": a.seed,
        "models": a.model, "sentences": len(sents), "kept": len(kept),
        "words": sum(map(len, sents)), "kept_words": sum(len(s) for s, _ in kept),
        "word_agreement": agree_words / max(1, sum(map(len, sents))),
        "entities": dict(by_type),
    }
    with open(a.out + ".json.part", "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    os.replace(tmp, a.out)
    os.replace(a.out + ".json.part", a.out + ".json")
    print(json.dumps(summary, ensure_ascii=False), file=sys.stderr)


if __name__ == "__main__":
    main()
