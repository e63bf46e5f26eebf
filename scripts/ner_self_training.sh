#!/usr/bin/env bash
# NER self-training, the chain recorded in models/ner-anercorp/README.md ("Self-training"):
#
#     bash scripts/ner_self_training.sh            # from the repository root, after
#                                                  # `cargo build --release -p naba` and
#                                                  # `naba models fetch`
#
# 1. two more teachers from the shipped recipe: 8 epochs (target/train/ner-e8) and 5
#    (target/train/ner-bf16; bf16 products where the CPU has them);
# 2. pseudo labels: 2,500 ANT *train* articles labelled by the installed `ner-anercorp` and the two
#    teachers, kept where all three agree on every word (target/pseudo/ant-ner.txt);
# 3. the student: the shipped recipe plus `data.extra_train` = that file, 4 epochs
#    (target/train/ner-st1);
# 4. every model through the pipeline on the recipe's block dev (100-word passages, IOB2
#    decoding, f32 products), reports under target/eval/dev-*.
#
# Each step is skipped when its output is already there, so an interrupted chain resumes at the
# step it was in; a training step cut off midway continues from its last saved state
# (`naba train --resume`). Takes about 80 min on a 2-core AVX512-BF16 EPYC; the teachers and the
# student are trained with bf16 products there, so another CPU gives other bits. The first teacher
# is whatever `ner-anercorp` is installed: p1 while p1 ships.
set -euo pipefail

NABA=${NABA:-target/release/naba}
THREADS=${NABA_THREADS:-2}
RECIPE=models/ner-anercorp/recipe.toml
DEV=target/pseudo/block-dev.txt
PSEUDO=target/pseudo/ant-ner.txt
STUDENT_RECIPE=target/pseudo/st1.toml

[ -x "$NABA" ] || { echo "no naba binary at $NABA: run cargo build --release -p naba, or set NABA" >&2; exit 2; }
[ -f "$RECIPE" ] || { echo "run this from the repository root ($RECIPE not found)" >&2; exit 2; }
mkdir -p target/pseudo target/eval

say() { echo "$(date +%T) $*" >&2; }

train() { # OUT [extra naba train flags]
    local out=$1
    shift
    if [ -f "$out/model/config.json" ]; then
        say "skip: $out/model is there"
        return
    fi
    local resume=()
    [ -f "$out/state.safetensors" ] && resume=(--resume)
    say "train $out $* ${resume[*]}"
    "$NABA" --threads "$THREADS" train --out "$out" "${resume[@]}" "$@"
}

train target/train/ner-e8 --recipe "$RECIPE" --epochs 8
train target/train/ner-bf16 --recipe "$RECIPE"

if [ -f "$PSEUDO" ]; then
    say "skip: $PSEUDO is there"
else
    say "pseudo labels -> $PSEUDO"
    python3 scripts/ner_pseudo_labels.py --naba "$NABA" --model ner-anercorp \
        --model target/train/ner-e8/model --model target/train/ner-bf16/model \
        --articles 2500 --seed 7 --out "$PSEUDO"
fi

# The student's recipe is the shipped one with the pseudo-labelled file added and 4 epochs; the
# sed expressions must each match once, or the recipe changed and this chain needs a look.
sed -e "s|^pack_sentences = true\$|&\\nextra_train = [\"$PSEUDO\"]|" \
    -e 's|^epochs = 5$|epochs = 4|' "$RECIPE" >"$STUDENT_RECIPE.tmp"
if [ "$(diff "$RECIPE" "$STUDENT_RECIPE.tmp" | grep -c '^>')" != 2 ]; then
    echo "could not derive the student's recipe from $RECIPE (expected pack_sentences = true and epochs = 5)" >&2
    exit 1
fi
mv "$STUDENT_RECIPE.tmp" "$STUDENT_RECIPE"
train target/train/ner-st1 --recipe "$STUDENT_RECIPE"

# The block dev the recipe carves (seed 13, blocks of 10 sentences), written out for naba eval.
if [ ! -f "$DEV" ]; then
    cargo run --release -p naba-train --example dev_split -- \
        ../shared/datasets/anercorp/train.txt 0.1 13 "$DEV" blocks
fi
for pair in p1:ner-anercorp e8:target/train/ner-e8/model bf16:target/train/ner-bf16/model \
    st1:target/train/ner-st1/model; do
    name=${pair%%:*}
    model=${pair#*:}
    NABA_PRECISION=f32 "$NABA" --threads "$THREADS" eval --task ner --data "$DEV" --format conll \
        --decoding iob2 --pack-words 100 --model "$model" --report-dir "target/eval/dev-$name" 2>&1 |
        grep micro_f1 | sed "s/^/$name /"
done
