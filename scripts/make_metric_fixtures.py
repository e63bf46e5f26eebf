#!/usr/bin/env python3
"""Make the metric fixtures that prove naba-eval agrees with seqeval and scikit-learn.

Run by hand (not in CI), from anywhere:

    python3 scripts/make_metric_fixtures.py

It creates a virtual environment under ~/.cache/naba-dev/metrics-venv (once), installs
seqeval and scikit-learn there from PyPI, re-runs itself with that interpreter, generates
seeded random gold/prediction data, computes the expected figures with the reference
libraries, and writes crates/naba-eval/tests/fixtures/metric_fixtures.json. The Rust tests in
crates/naba-eval/tests/metric_fixtures.rs read it and assert agreement to 1e-6.

The data are random but seeded (SEED below), so re-running gives the same file unless the
reference libraries change their results.

NER cases use IOB2 tags over several types and include malformed sequences on purpose: I- at
the start of a sentence, I- after O, and type switches inside an entity (B-PER I-LOC), in the
predictions and in some gold sentences, plus a type only ever predicted and one never
predicted. Classification cases have 4-6 labels, including a gold label that is never
predicted and a label that appears only in the predictions; one uses Arabic labels.
"""

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

SEED = 20240601
VENV = Path.home() / ".cache" / "naba-dev" / "metrics-venv"
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "crates" / "naba-eval" / "tests" / "fixtures" / "metric_fixtures.json"


def ensure_venv():
    """Re-exec inside the venv with seqeval and scikit-learn, creating it when needed."""
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        print(f"creating {VENV}", file=sys.stderr)
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    check = subprocess.run([str(py), "-c", "import seqeval, sklearn, numpy"], capture_output=True)
    if check.returncode != 0:
        subprocess.check_call([str(py), "-m", "pip", "install", "--quiet", "seqeval", "scikit-learn"])
    os.execv(str(py), [str(py), str(Path(__file__).resolve())] + sys.argv[1:])


# ---------------------------------------------------------------- data generation


def gold_sentence(rng, types, length, malformed_rate=0.0):
    """A sentence of IOB2 tags with random entities; sometimes malformed on purpose."""
    tags = ["O"] * length
    i = 0
    while i < length:
        if rng.random() < 0.3:
            t = rng.choice(types)
            n = min(rng.choice([1, 1, 2, 2, 3, 4]), length - i)
            tags[i] = "B-" + t
            for j in range(i + 1, i + n):
                tags[j] = "I-" + t
            i += n + rng.choice([0, 1, 1, 2])
        else:
            i += 1
    if rng.random() < malformed_rate:
        tags = malform(rng, tags, types)
    return tags


def malform(rng, tags, types):
    tags = list(tags)
    kind = rng.choice(["i_start", "i_after_o", "type_switch"])
    n = len(tags)
    if kind == "i_start":
        tags[0] = "I-" + rng.choice(types)
    elif kind == "i_after_o":
        outs = [k for k in range(1, n) if tags[k - 1] == "O"]
        if outs:
            tags[rng.choice(outs)] = "I-" + rng.choice(types)
    else:
        insides = [k for k in range(n) if tags[k].startswith("I-")]
        if insides:
            k = rng.choice(insides)
            others = [t for t in types if t != tags[k][2:]]
            tags[k] = "I-" + rng.choice(others)
        elif n > 1:
            tags[0] = "B-" + types[0]
            tags[1] = "I-" + types[1]
    return tags


def perturb(rng, gold, types, pred_only_types, error_rate):
    """Predictions: the gold tags with type swaps, boundary errors, drops, inventions and
    malformed sequences."""
    pred = list(gold)
    n = len(pred)
    for k in range(n):
        if rng.random() >= error_rate:
            continue
        r = rng.random()
        tag = pred[k]
        if r < 0.2 and tag != "O":  # wrong type, same prefix
            pred[k] = tag[:2] + rng.choice(types + pred_only_types)
        elif r < 0.4:  # drop
            pred[k] = "O"
        elif r < 0.55:  # invent a B-
            pred[k] = "B-" + rng.choice(types + pred_only_types)
        elif r < 0.7:  # dangling or switched I-
            pred[k] = "I-" + rng.choice(types)
        elif r < 0.85 and k + 1 < n:  # extend an entity
            if tag != "O":
                pred[k + 1] = "I-" + tag[2:]
        else:  # B -> I at the start of an entity
            if tag.startswith("B-"):
                pred[k] = "I-" + tag[2:]
    return pred


def ner_case(rng, name, n_sent, types, pred_only=(), never_predicted=(), malformed_gold=0.0, error_rate=0.25):
    gold, pred = [], []
    for _ in range(n_sent):
        g = gold_sentence(rng, list(types) + list(never_predicted), rng.randint(1, 14), malformed_gold)
        p = perturb(rng, g, list(types), list(pred_only), error_rate)
        p = [("O" if t[2:] in never_predicted else t) for t in p]
        gold.append(g)
        pred.append(p)
    return {"name": name, "gold": gold, "pred": pred}


def class_case(rng, name, n, labels, never_predicted, pred_only, accuracy):
    gold, pred = [], []
    weights = [rng.uniform(0.5, 3.0) for _ in labels]
    predictable = [l for l in labels if l not in never_predicted] + list(pred_only)
    for _ in range(n):
        g = rng.choices(labels, weights=weights)[0]
        if g not in never_predicted and rng.random() < accuracy:
            p = g
        else:
            p = rng.choice(predictable)
        gold.append(g)
        pred.append(p)
    return {"name": name, "gold": gold, "pred": pred}


# ---------------------------------------------------------------- expected values


def prf(p, r, f, s):
    return {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}


def seqeval_expected(gold, pred):
    from seqeval.metrics import (accuracy_score, classification_report, f1_score, precision_score,
                                 recall_score)
    from seqeval.scheme import IOB2

    out = {"token_accuracy": float(accuracy_score(gold, pred))}
    for mode_name, kwargs in (("strict", {"mode": "strict", "scheme": IOB2}), ("lenient", {})):
        report = classification_report(gold, pred, output_dict=True, zero_division=0, **kwargs)
        per_type = {
            k: prf(v["precision"], v["recall"], v["f1-score"], v["support"])
            for k, v in report.items()
            if k not in ("micro avg", "macro avg", "weighted avg")
        }
        avgs = {}
        for avg in ("micro", "macro", "weighted"):
            p = precision_score(gold, pred, average=avg, zero_division=0, **kwargs)
            r = recall_score(gold, pred, average=avg, zero_division=0, **kwargs)
            f = f1_score(gold, pred, average=avg, zero_division=0, **kwargs)
            avgs[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
            # cross-check the report's own averages
            rep = report[f"{avg} avg"]
            assert abs(rep["f1-score"] - f) < 1e-12, (avg, rep, f)
        out[mode_name] = {"per_type": per_type, **avgs}
    return out


def sklearn_expected(gold, pred, chosen):
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)
    from sklearn.utils.multiclass import unique_labels

    labels = [str(l) for l in unique_labels(gold, pred)]
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, average=None, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(gold, pred)),
        "labels": labels,
        "per_label": {l: prf(p[i], r[i], f[i], s[i]) for i, l in enumerate(labels)},
        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist(),
        "chosen_labels": chosen,
        "chosen_mean_f1": float(f1_score(gold, pred, labels=chosen, average="macro", zero_division=0)),
    }
    for avg in ("micro", "macro", "weighted"):
        pp, rr, ff, _ = precision_recall_fscore_support(gold, pred, average=avg, zero_division=0)
        out[avg] = {"precision": float(pp), "recall": float(rr), "f1": float(ff)}
    return out


def main():
    ensure_venv()
    warnings.filterwarnings("ignore")
    from importlib.metadata import version

    import numpy as np
    import sklearn

    rng = random.Random(SEED)
    types = ["PER", "LOC", "ORG", "MISC"]
    ner_cases = [
        ner_case(rng, "mixed_errors", 70, types),
        ner_case(rng, "malformed_gold", 70, types, malformed_gold=0.35, error_rate=0.35),
        ner_case(rng, "pred_only_and_never_predicted", 60, ["PERS", "LOC", "ORG"],
                 pred_only=("DATE",), never_predicted=("MISC",), malformed_gold=0.1),
        {
            "name": "handmade",
            "gold": [
                ["B-PER", "I-PER", "O", "B-LOC"],
                ["I-ORG", "I-ORG", "O"],
                ["B-PER", "I-LOC", "I-LOC", "O"],
                ["O", "O"],
                ["B-MISC"],
            ],
            "pred": [
                ["B-PER", "I-PER", "O", "I-LOC"],
                ["B-ORG", "I-ORG", "O"],
                ["B-PER", "B-LOC", "I-LOC", "O"],
                ["I-PER", "O"],
                ["O"],
            ],
        },
    ]
    for c in ner_cases:
        c["expected"] = seqeval_expected(c["gold"], c["pred"])

    class_cases = [
        class_case(rng, "five_labels", 400, ["business", "crime", "health", "politics", "sports"],
                   never_predicted=("health",), pred_only=("others",), accuracy=0.7),
        class_case(rng, "stance_arabic", 300, ["Favor", "Against", "None", "محايد"],
                   never_predicted=("محايد",), pred_only=("غير معروف",), accuracy=0.6),
        class_case(rng, "six_labels_small", 60, ["a", "b", "c", "d", "e", "f"],
                   never_predicted=("f",), pred_only=("z",), accuracy=0.5),
    ]
    chosen = {"five_labels": ["politics", "health", "absent"], "stance_arabic": ["Favor", "Against"],
              "six_labels_small": ["a", "z"]}
    for c in class_cases:
        c["expected"] = sklearn_expected(c["gold"], c["pred"], chosen[c["name"]])

    prng = np.random.default_rng(SEED)
    percentile_cases = []
    for n in (1, 2, 7, 100, 1000):
        values = sorted(float(round(x, 6)) for x in prng.normal(size=n))
        qs = [0.0, 2.5, 50.0, 90.0, 97.5, 99.0, 100.0]
        percentile_cases.append({
            "values": values,
            "q": qs,
            "expected": [float(np.percentile(values, q)) for q in qs],
        })

    fixtures = {
        "generated_by": "scripts/make_metric_fixtures.py",
        "seed": SEED,
        "versions": {"seqeval": version("seqeval"), "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "ner": ner_cases,
        "classification": class_cases,
        "percentile": percentile_cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixtures, ensure_ascii=False, separators=(",", ":"))
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode('utf-8')) // 1024} KiB)")


if __name__ == "__main__":
    main()
