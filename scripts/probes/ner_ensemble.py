"""Dev-only probe: does averaging the word probabilities of several NER runs beat the best run?

    ~/.cache/naba-pyenv/bin/python scripts/probes/ner_ensemble.py DEV.txt MODEL_DIR [MODEL_DIR...]

Reads a CoNLL file (word TAG per line, blank line between sentences), packs consecutive
sentences into passages of up to 100 words (as `naba eval --pack-words 100` does), labels each
word from its first sub-word, decodes valid IOB2 with a Viterbi pass, and prints strict entity
micro-F1 for each model alone and for the mean of all. The figures are for comparing runs with
one another; `naba eval` is what scores a model that ships.
"""
import sys

import numpy as np
import torch
from transformers import BertForTokenClassification, PreTrainedTokenizerFast

PACK = 100


def read_conll(path):
    sents, cur = [], []
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if not parts:
            if cur:
                sents.append(cur)
            cur = []
            continue
        cur.append((parts[0], parts[-1]))
    if cur:
        sents.append(cur)
    return sents


def pack(sents):
    out, cur = [], []
    for s in sents:
        if cur and len(cur) + len(s) > PACK:
            out.append(cur)
            cur = []
        cur = cur + s
    if cur:
        out.append(cur)
    return out


def spans(tags):
    found, start, kind = set(), None, None
    for i, t in enumerate(tags + ["O"]):
        if start is not None and not (t.startswith("I-") and t[2:] == kind):
            found.add((start, i, kind))
            start = None
        if t.startswith("B-") or (t.startswith("I-") and start is None):
            start, kind = i, t[2:]
    return found


def viterbi(logp, labels):
    n, k = logp.shape
    allowed = np.zeros((k, k))
    for a, la in enumerate(labels):
        for b, lb in enumerate(labels):
            if lb.startswith("I-") and la[2:] != lb[2:]:
                allowed[a, b] = -1e9
    start = np.array([-1e9 if l.startswith("I-") else 0.0 for l in labels])
    score, back = logp[0] + start, []
    for i in range(1, n):
        cand = score[:, None] + allowed
        back.append(cand.argmax(0))
        score = cand.max(0) + logp[i]
    path = [int(score.argmax())]
    for b in reversed(back):
        path.append(int(b[path[-1]]))
    return path[::-1]


def word_probs(model, tok, words):
    enc = tok(words, is_split_into_words=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits[0], -1).numpy()
    first, ids = {}, enc.word_ids(0)
    for i, w in enumerate(ids):
        if w is not None and w not in first:
            first[w] = i
    k = p.shape[1]
    return np.stack([p[first[w]] if w in first else np.full(k, 1.0 / k) for w in range(len(words))])


def f1(gold, pred):
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    ng, npred = sum(map(len, gold)), sum(map(len, pred))
    return 2 * tp / (ng + npred) if ng + npred else 0.0


def main():
    torch.set_num_threads(1)
    passages = pack(read_conll(sys.argv[1]))
    dirs = sys.argv[2:]
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{dirs[0]}/tokenizer.json")
    probs = []
    for d in dirs:
        model = BertForTokenClassification.from_pretrained(d).eval()
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        probs.append([word_probs(model, tok, [w for w, _ in p]) for p in passages])
    gold = [spans([t for _, t in p]) for p in passages]

    def score(ps):
        pred = [spans([labels[j] for j in viterbi(np.log(q + 1e-9), labels)]) for q in ps]
        return f1(gold, pred)

    for d, ps in zip(dirs, probs):
        print(f"{d}: {score(ps):.4f}")
    mean = [np.mean([ps[i] for ps in probs], 0) for i in range(len(passages))]
    if len(dirs) > 1:
        print(f"mean of {len(dirs)}: {score(mean):.4f}")
    # Decoding prior: the O probability scaled down trades precision for recall.
    o = labels.index("O")
    for alpha in (0.8, 0.6, 0.4, 0.25):
        scaled = [q * np.where(np.arange(q.shape[1]) == o, alpha, 1.0) for q in mean]
        print(f"O x {alpha}: {score(scaled):.4f}")


if __name__ == "__main__":
    main()
