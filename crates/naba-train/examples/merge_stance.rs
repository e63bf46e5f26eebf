//! Builds the data of one stance model for both stance corpora, to measure it against one model
//! each: `cargo run --release -p naba-train --example merge_stance -- OUT_DIR`.
//! Reads ANS and Mawqif through the shipped recipes (`models/stance-ans`, `models/stance-mawqif`),
//! maps their labels onto one meaning (agree/Favor → for, disagree/Against → against,
//! other/None → neither) and writes JSONL rows `{source, target, text, stance}`:
//! `train.jsonl` (ANS train + Mawqif train less its dev), `dev.jsonl` (ANS dev + the Mawqif dev
//! that stance-mawqif's recipe carves, the same rows), and each source's dev and test apart, so
//! that a merged model and the two single ones are compared on the same rows.

use anyhow::{Context, Result};
use naba_eval::ClassificationExample;
use naba_train::{data, recipe::Recipe};
use std::{collections::BTreeMap, io::Write, path::Path};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .context("usage: merge_stance OUT_DIR")?;
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let ans = Recipe::from_file("models/stance-ans/recipe.toml".as_ref())?;
    let maw = Recipe::from_file("models/stance-mawqif/recipe.toml".as_ref())?;

    let read = |r: &Recipe, path: &Path| {
        data::read_classification(path, &BTreeMap::new(), r).map(|c| c.examples)
    };
    let ans_train = read(&ans, &ans.data.train)?;
    let ans_dev = read(
        &ans,
        ans.data
            .dev
            .as_deref()
            .context("ANS recipe names a dev file")?,
    )?;
    let first_test = |r: &Recipe| {
        r.data
            .test
            .first()
            .cloned()
            .context("the recipe names no test file")
    };
    let ans_test = read(&ans, &first_test(&ans)?)?;
    let maw_all = read(&maw, &maw.data.train)?;
    // The carve stance-mawqif's trainer made: same count, fraction and seed.
    let (maw_train_idx, maw_dev_idx) =
        data::carve_dev(maw_all.len(), maw.data.dev_fraction, maw.seed);
    let pick = |idx: &[usize]| idx.iter().map(|&i| maw_all[i].clone()).collect::<Vec<_>>();
    let (maw_train, maw_dev) = (pick(&maw_train_idx), pick(&maw_dev_idx));
    let maw_test = read(&maw, &first_test(&maw)?)?;

    let write = |name: &str, parts: &[(&str, &[ClassificationExample])]| -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(out.join(name))?);
        let mut n = 0;
        for (source, rows) in parts {
            for ex in rows.iter() {
                let row = serde_json::json!({
                    "source": source,
                    "target": ex.target.as_deref().context("pair rows carry a target")?,
                    "text": ex.text,
                    "stance": shared_label(&ex.label)?,
                });
                writeln!(f, "{row}")?;
                n += 1;
            }
        }
        f.flush()?;
        eprintln!("{n} rows written to {}", out.join(name).display());
        Ok(())
    };
    write(
        "train.jsonl",
        &[("ans", &ans_train), ("mawqif", &maw_train)],
    )?;
    write("dev.jsonl", &[("ans", &ans_dev), ("mawqif", &maw_dev)])?;
    write("dev-ans.jsonl", &[("ans", &ans_dev)])?;
    write("dev-mawqif.jsonl", &[("mawqif", &maw_dev)])?;
    write("test-ans.jsonl", &[("ans", &ans_test)])?;
    write("test-mawqif.jsonl", &[("mawqif", &maw_test)])?;
    Ok(())
}

fn shared_label(label: &str) -> Result<&'static str> {
    Ok(match label {
        "agree" | "Favor" => "for",
        "disagree" | "Against" => "against",
        "other" | "None" => "neither",
        other => anyhow::bail!("no shared meaning for the stance label `{other}`"),
    })
}
