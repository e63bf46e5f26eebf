//! The model card written beside a trained model: data, base encoder and its checksums, recipe,
//! the exact command, wall time, dev scores by epoch and test scores.

use crate::checkpoint::Base;
use crate::recipe::Recipe;
use crate::trainer::{TrainOptions, TrainOutcome};
use anyhow::Result;
use std::fmt::Write;

/// Renders the card as Markdown.
pub fn model_card(
    recipe: &Recipe,
    opts: &TrainOptions,
    outcome: &TrainOutcome,
    base: &Base,
    wall_seconds: f64,
) -> Result<String> {
    let mut s = String::new();
    let m = &outcome.meta;
    writeln!(s, "# {}\n", recipe.name)?;
    writeln!(
        s,
        "Task: `{}`. Labels ({}): {}.\n",
        recipe.task.as_str(),
        recipe.data.labels.len(),
        recipe
            .data
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(s, "## Base encoder\n")?;
    writeln!(s, "`{}`.", base.name)?;
    for (f, h) in &base.sha256 {
        writeln!(s, "- `{f}` sha256 `{h}`")?;
    }
    let trained = if recipe.model.train_layers >= base.config.num_layers {
        format!(
            "all {} layers and the head (the embeddings are the base's, unchanged)",
            base.config.num_layers
        )
    } else {
        format!(
            "the top {} of {} layers and the head (the embeddings and lower layers are the \
             base's, unchanged)",
            recipe.model.train_layers, base.config.num_layers
        )
    };
    let trained = match recipe.model.lora_rank {
        0 => trained,
        r => format!(
            "{trained}, the layers through rank-{r} adapters on their six linear layers (the \
             weights, biases and layer norms stay the base's; the adapters are merged into the \
             weights on assembly)"
        ),
    };
    writeln!(
        s,
        "\nTrained: {trained}. Shipped as parts in {} over the base; `naba models fetch` \
         assembles a full Hugging Face-layout checkpoint.\n",
        recipe.model.parts_dtype
    )?;
    s.push_str(&data_section(recipe)?);
    writeln!(s, "\n## Command\n\n```\n{}\n```\n", opts.command)?;
    writeln!(
        s,
        "Training time: {:.0} s of training ({:.1} min; engine: {}){}; {:.0} s wall for the last \
         session (2-core CPU).\n",
        m.train_seconds,
        m.train_seconds / 60.0,
        outcome.engine,
        if recipe.model.train_layers >= base.config.num_layers {
            String::from(" (no frozen layers to cache)")
        } else {
            format!(
                " plus {:.0} s caching the frozen layers",
                outcome.cache_seconds
            )
        },
        wall_seconds
    )?;
    writeln!(s, "## Dev by epoch\n")?;
    writeln!(
        s,
        "| epoch | train loss | dev | per type | s | sub-words/s |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|")?;
    for r in &m.history {
        writeln!(
            s,
            "| {} | {:.4} | {:.4} | {} | {:.0} | {:.0} |",
            r.epoch,
            r.train_loss,
            r.dev_score,
            r.dev_detail
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.seconds,
            r.tokens_per_second
        )?;
    }
    if let (Some(b), Some(e)) = (m.best_score, m.best_epoch) {
        writeln!(
            s,
            "\nBest dev: {b:.4} at epoch {e} (the shipped checkpoint)."
        )?;
    }
    if let Some(r) = &outcome.best_dev_rounded {
        writeln!(
            s,
            "Dev with the parts as shipped ({}): {:.4}.",
            recipe.model.parts_dtype, r.main
        )?;
    }
    let metric = match recipe.task {
        crate::recipe::Task::TokenClassification => {
            "strict IOB2 entity micro-F1 (seqeval mode=strict), word level".to_string()
        }
        _ if !recipe.data.score_labels.is_empty() => format!(
            "mean F1 of {}; precision and recall are macro over all labels",
            recipe.data.score_labels.join(" and ")
        ),
        _ => "macro-F1".to_string(),
    };
    writeln!(s, "\n## Test ({metric})\n")?;
    writeln!(
        s,
        "| file | score | precision | recall | per type | secondary |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|")?;
    for (f, sc) in &outcome.tests {
        writeln!(
            s,
            "| `{f}` | {:.4} | {:.4} | {:.4} | {} | {:.4} |",
            sc.main,
            sc.precision,
            sc.recall,
            sc.detail
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            sc.secondary
        )?;
    }
    writeln!(
        s,
        "\n(secondary: lenient/seqeval-default micro-F1 for NER, accuracy for classification)\n"
    )?;
    writeln!(s, "## Recipe\n\n```toml\n{}```", recipe.to_toml()?)?;
    Ok(s)
}

/// The card's Data section: where train, dev and test came from and how dev was carved.
fn data_section(recipe: &Recipe) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "## Data\n")?;
    writeln!(s, "- train: `{}`", recipe.data.train.display())?;
    for extra in &recipe.data.extra_train {
        writeln!(
            s,
            "- also trained on (never carved for dev): `{}`",
            extra.display()
        )?;
    }
    if recipe.data.pack_sentences {
        writeln!(
            s,
            "- packed: runs of consecutive sentences share one window of up to {} sub-words \
             (train, dev and test alike), so each sentence is read with its neighbours",
            recipe.data.max_length
        )?;
    }
    match &recipe.data.dev {
        Some(d) => writeln!(s, "- dev: `{}`", d.display())?,
        None => {
            let block = recipe.data.dev_block();
            let unit = if block > 1 {
                format!(" in blocks of {block} consecutive sentences")
            } else {
                String::new()
            };
            writeln!(
                s,
                "- dev: {:.0}% of the training file's items{unit}, drawn with seed {} (never trained on)",
                recipe.data.dev_fraction * 100.0,
                recipe.seed
            )?
        }
    }
    for t in &recipe.data.test {
        writeln!(
            s,
            "- test (scored once at the end, never used for a choice): `{}`",
            t.display()
        )?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_section_says_how_dev_was_carved() {
        let mut r: Recipe = toml::from_str(
            r#"name = "x"
            task = "token-classification"
            base = "b"
            [data]
            train = "t.txt"
            labels = ["O", "B-LOC", "I-LOC"]
            "#,
        )
        .unwrap();
        let plain = data_section(&r).unwrap();
        assert!(
            plain.contains("10% of the training file's items, drawn"),
            "{plain}"
        );
        assert!(!plain.contains("packed"), "{plain}");
        r.data.pack_sentences = true;
        let packed = data_section(&r).unwrap();
        assert!(
            packed.contains("in blocks of 10 consecutive sentences"),
            "{packed}"
        );
        assert!(packed.contains("- packed:"), "{packed}");
        r.data.pack_sentences = false;
        r.data.dev_block = Some(5);
        let blocks = data_section(&r).unwrap();
        assert!(blocks.contains("in blocks of 5 consecutive") && !blocks.contains("- packed:"));
    }
}
