"""Dev-only probe: does making a model's entities consistent across nearby text raise NER F1?

    ~/.cache/naba-pyenv/bin/python scripts/probes/ner_consistency.py DEV.txt MODEL_DIR

News text names the same person or body again and again; a model that finds it once with
confidence often misses it elsewhere. After decoding every 100-word passage as
`ner_ensemble.py` does, this probe copies each predicted entity (as its exact word sequence) to
the other places within SCOPE passages where that word sequence occurs and nothing was found,
and optionally gives every occurrence of a string its majority type. It prints strict entity
micro-F1 for each variant, for choosing on dev; it changes nothing that ships.
"""
import sys
from collections import Counter, defaultdict

import numpy as np
import torch
from transformers import BertForTokenClassification, PreTrainedTokenizerFast

from ner_ensemble import f1, pack, read_conll, spans, viterbi, word_probs


def decode(probs, labels):
    return [[labels[j] for j in viterbi(np.log(q + 1e-9), labels)] for q in probs]


def tag_span(row, s, e, kind):
    row[s] = f"B-{kind}"
    for i in range(s + 1, e):
        row[i] = f"I-{kind}"


def propagate(words, tags, scope, min_chars, min_conf, confs, unify):
    """Copies entities to untagged repeats within `scope` passages (None: the whole file)."""
    # In text order, so that a tie between types goes to the first one found whatever
    # Python's string hashing (which orders `spans`' set) is in this process.
    found = []  # (passage, start, end, kind, words tuple, confidence)
    for p, ts in enumerate(tags):
        for s, e, k in sorted(spans(ts)):
            found.append((p, s, e, k, tuple(words[p][s:e]), float(confs[p][s:e].mean())))
    by_string = defaultdict(list)
    for f in found:
        if len("".join(f[4])) >= min_chars and f[5] >= min_conf:
            by_string[f[4]].append(f)
    out = [list(ts) for ts in tags]
    if unify:
        for group in by_string.values():
            kind = Counter(f[3] for f in group).most_common(1)[0][0]
            for p, s, e, _, _, _ in group:
                tag_span(out[p], s, e, kind)
    for p, ws in enumerate(words):
        n = len(ws)
        for s in range(n):
            for length in (4, 3, 2, 1):
                e = s + length
                if e > n:
                    continue
                group = by_string.get(tuple(ws[s:e]))
                if not group or any(t != "O" for t in out[p][s:e]):
                    continue
                near = [f for f in group if scope is None or abs(f[0] - p) <= scope]
                if not near:
                    continue
                tag_span(out[p], s, e, Counter(f[3] for f in near).most_common(1)[0][0])
                break
    return out


def main():
    torch.set_num_threads(1)
    passages = pack(read_conll(sys.argv[1]))
    model_dir = sys.argv[2]
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    model = BertForTokenClassification.from_pretrained(model_dir).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    words = [[w for w, _ in p] for p in passages]
    probs = [word_probs(model, tok, ws) for ws in words]
    gold = [spans([t for _, t in p]) for p in passages]
    tags = decode(probs, labels)
    confs = [q.max(1) for q in probs]
    print(f"model alone: {f1(gold, [spans(t) for t in tags]):.4f}")
    for scope in (0, 2, 5, 20, None):
        for min_chars in (2, 4):
            for min_conf in (0.0, 0.9):
                for unify in (False, True):
                    out = propagate(words, tags, scope, min_chars, min_conf, confs, unify)
                    score = f1(gold, [spans(t) for t in out])
                    print(
                        f"scope {scope} min_chars {min_chars} min_conf {min_conf} "
                        f"unify {unify}: {score:.4f}"
                    )


if __name__ == "__main__":
    main()
