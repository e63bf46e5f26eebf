"""Probe (not part of naba): how much of NER's dev/test gap comes from entities the training split
never showed, and whether a gazetteer of training entities would close it. Dev only decides;
test is described, not chosen on.

    naba eval --task ner --data ../shared/datasets/anercorp/train.txt --model ner-anercorp \
        --report-dir target/lex/ner-train
    naba eval --task ner --data ../shared/datasets/anercorp/test.txt --model ner-anercorp \
        --report-dir target/lex/ner-test
    python3 scripts/probes/ner_seen_entities.py target/lex/ner-train/predictions.conll \
        target/lex/ner-test/predictions.conll

The dev split is the recipe's (seed 13, 10% of train in blocks of 10 sentences), carved here
with the trainer's generator (SplitMix64, `Rng::derive(13, 1, 0)`, Fisher-Yates).
"""
import collections
import sys

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def derive(seed, stream, index):
    r = SplitMix64(seed ^ ((stream * 0x9E3779B97F4A7C15) & MASK) ^ ((index * 0xD1B54A32D192ED03) & MASK))
    r.next()
    return r


def load(path):
    """Sentences of (word, gold, predicted) from naba eval's predictions.conll."""
    out, cur = [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                out.append(cur)
                cur = []
            continue
        w, g, p = line.rsplit(" ", 2)
        cur.append((w, g, p))
    if cur:
        out.append(cur)
    return out


def carve_dev_blocks(n, fraction=0.1, seed=13, block=10):
    blocks = list(range((n + block - 1) // block))
    r = derive(seed, 1, 0)
    for i in range(len(blocks) - 1, 0, -1):
        j = (r.next() * (i + 1)) >> 64
        blocks[i], blocks[j] = blocks[j], blocks[i]
    dev = set()
    for b in blocks[: max(1, round(len(blocks) * fraction))]:
        dev.update(range(b * block, min((b + 1) * block, n)))
    return dev


def entities(tags):
    out, i = [], 0
    while i < len(tags):
        if tags[i].startswith("B-"):
            ty, j = tags[i][2:], i + 1
            while j < len(tags) and tags[j] == "I-" + ty:
                j += 1
            out.append((i, j, ty))
            i = j
        else:
            i += 1
    return out


def f1(pairs):
    tp = fp = fn = 0
    for g, p in pairs:
        G, P = set(entities(g)), set(entities(p))
        tp, fp, fn = tp + len(G & P), fp + len(P - G), fn + len(G - P)
    pr, rc = tp / (tp + fp), tp / (tp + fn)
    return 2 * pr * rc / (pr + rc)


def seen_report(name, sents, idx, gaz):
    rows = collections.defaultdict(lambda: [0, 0])
    for k in idx:
        words = [w for w, _, _ in sents[k]]
        P = set(entities([p for _, _, p in sents[k]]))
        for a, b, ty in entities([g for _, g, _ in sents[k]]):
            key = ("seen" if tuple(words[a:b]) in gaz else "unseen", ty)
            rows[key][0] += 1
            rows[key][1] += (a, b, ty) in P
    total = sum(v[0] for v in rows.values())
    for kind in ("seen", "unseen"):
        n = sum(v[0] for (k, _), v in rows.items() if k == kind)
        hit = sum(v[1] for (k, _), v in rows.items() if k == kind)
        per = ", ".join(
            f"{ty} {rows[(kind, ty)][0]} ({rows[(kind, ty)][1] / max(rows[(kind, ty)][0], 1):.2f})"
            for ty in ("PERS", "LOC", "ORG", "MISC")
        )
        print(f"{name} {kind}: {n} entities ({n / total:.0%}), recall {hit / max(n, 1):.3f}; {per}")


def main():
    train = load(sys.argv[1])
    dev = carve_dev_blocks(len(train))
    gaz = collections.defaultdict(collections.Counter)
    for k, s in enumerate(train):
        if k in dev:
            continue
        words = [w for w, _, _ in s]
        for a, b, ty in entities([g for _, g, _ in s]):
            gaz[tuple(words[a:b])][ty] += 1
    dev_idx = sorted(dev)
    print(f"train sentences {len(train)}, dev {len(dev_idx)}")
    seen_report("dev", train, dev_idx, gaz)
    if len(sys.argv) > 2:
        test = load(sys.argv[2])
        seen_report("test", test, range(len(test)), gaz)
    # Gazetteer: tag a span the model left all O when the training split tagged it with one type,
    # and (min_as_entity) tagged it at least that share of the times the words occur at all.
    longest = max(len(k) for k in gaz)
    occurs = collections.Counter()
    for k, s in enumerate(train):
        if k in dev:
            continue
        words = [w for w, _, _ in s]
        for a in range(len(words)):
            for L in range(1, min(longest, len(words) - a) + 1):
                t = tuple(words[a : a + L])
                if t in gaz:
                    occurs[t] += 1
    base = [([g for _, g, _ in train[k]], [p for _, _, p in train[k]]) for k in dev_idx]
    print(f"dev entity F1 as predicted: {f1(base):.4f}")
    for min_count, min_share, min_as_entity in ((1, 0.9, 0.0), (3, 0.95, 0.0), (1, 0.9, 0.8), (2, 0.9, 0.5)):
        table = {
            k: c.most_common(1)[0][0]
            for k, c in gaz.items()
            if sum(c.values()) >= min_count
            and c.most_common(1)[0][1] / sum(c.values()) >= min_share
            and sum(c.values()) / max(occurs[k], 1) >= min_as_entity
        }
        out = []
        for k in dev_idx:
            words = [w for w, _, _ in train[k]]
            p = [x for _, _, x in train[k]]
            a = 0
            while a < len(words):
                for L in range(min(longest, len(words) - a), 0, -1):
                    t = tuple(words[a : a + L])
                    free = all(x == "O" for x in p[a : a + L])
                    if t in table and free and (a + L == len(p) or not p[a + L].startswith("I-")):
                        p[a] = "B-" + table[t]
                        for q in range(a + 1, a + L):
                            p[q] = "I-" + table[t]
                        a += L - 1
                        break
                a += 1
            out.append(([g for _, g, _ in train[k]], p))
        print(
            f"dev with a gazetteer (count >= {min_count}, one type >= {min_share}, "
            f"tagged >= {min_as_entity} of occurrences; {len(table)} entries): {f1(out):.4f}"
        )


if __name__ == "__main__":
    main()
