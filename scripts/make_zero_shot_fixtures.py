#!/usr/bin/env python3
"""Tiny random NLI checkpoints and what transformers' zero-shot-classification pipeline makes of
them, for crates/naba-tasks/tests/zero_shot_parity.rs.

The checkpoints reuse the parity fixtures' tiny BERT and XLM-R encoders (and tokenizers) with a
fresh, seeded 3-way head, plus a tiny random DeBERTa-v2 (see `deberta`): BERT labelled entailment / neutral / contradiction, XLM-R in the other
order (contradiction first, as roberta-large-mnli has it), so the entailment id must be found
from label2id. Run with the peers' Python (transformers + torch):

    ~/.cache/naba-peers/bin/python scripts/make_zero_shot_fixtures.py
"""

import json
import pathlib

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARITY = ROOT / "crates/naba-tasks/tests/fixtures/parity"
OUT = ROOT / "crates/naba-tasks/tests/fixtures/nli"

MODELS = {
    "bert-nli": ("bert-seq-cls", ["entailment", "neutral", "contradiction"]),
    "xlmr-nli": ("xlmr-seq-cls", ["contradiction", "neutral", "entailment"]),
    "deberta-nli": ("deberta", ["entailment", "neutral", "contradiction"]),
}

TEXTS = [
    "فاز المنتخب المغربي على نظيره المصري بهدفين دون رد.",
    "ارتفعت أسعار النفط في الأسواق العالمية صباح اليوم.",
    "The central bank raised interest rates again this quarter.",
    # Longer than the tiny models' 64 positions: the premise is truncated, the hypothesis kept.
    " ".join(["قال البيت الأبيض إن المحادثات تناولت الحد من التسلح."] * 8),
]
LABEL_SETS = [["رياضة", "اقتصاد", "سياسة"], ["sport", "economy"]]
TEMPLATES = ["This example is {}.", "هذا النص عن {}."]


def deberta(labels):
    """A tiny random DeBERTa-v2 laid out as mDeBERTa-v3 is (relative attention with log
    buckets, p2c and c2p, shared keys, no absolute positions, no token types), over the XLM-R
    fixture's SentencePiece tokenizer."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(PARITY / "xlmr-seq-cls")
    config = DebertaV2Config(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, type_vocab_size=0,
        relative_attention=True, max_relative_positions=-1, position_buckets=16,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, pooler_hidden_size=32, pooler_dropout=0.0,
        pooler_hidden_act="gelu", hidden_act="gelu", pad_token_id=tok.pad_token_id,
        layer_norm_eps=1e-7, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
    )
    torch.manual_seed(0)
    # Random weights of the usual 0.02 scale give near-uniform outputs; widen them so the
    # scores differ enough for a 1e-4 comparison to mean something.
    config.initializer_range = 0.2
    return DebertaV2ForSequenceClassification(config).eval(), tok


def main():
    cases = {}
    for name, (source, labels) in MODELS.items():
        torch.manual_seed(0)
        if source == "deberta":
            model, tok = deberta(labels)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                PARITY / source,
                num_labels=3,
                id2label=dict(enumerate(labels)),
                label2id={l: i for i, l in enumerate(labels)},
                ignore_mismatched_sizes=True,
            )
            tok = AutoTokenizer.from_pretrained(PARITY / source)
        out = OUT / name
        model.save_pretrained(out)
        tok.save_pretrained(out)
        zsc = pipeline("zero-shot-classification", model=model, tokenizer=tok)
        rows = []
        for text in TEXTS:
            for labels_ in LABEL_SETS:
                for template in TEMPLATES:
                    for multi in (False, True):
                        r = zsc(text, candidate_labels=labels_, hypothesis_template=template,
                                multi_label=multi)
                        rows.append({
                            "text": text,
                            "labels": labels_,
                            "template": template,
                            "multi_label": multi,
                            "scores": dict(zip(r["labels"], r["scores"])),
                        })
        cases[name] = rows
    (OUT / "expected.json").write_text(
        json.dumps({"transformers": transformers.__version__, "cases": cases},
                   ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8")


if __name__ == "__main__":
    main()
