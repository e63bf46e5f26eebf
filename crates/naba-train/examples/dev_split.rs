//! Writes the dev sentences a recipe carves from a CoNLL training file, so that a pipeline
//! evaluation (`naba eval`) can score the same dev split:
//! `cargo run --release -p naba-train --example dev_split -- TRAIN.txt FRACTION SEED OUT.txt [blocks]`.
//! With `blocks`, dev is carved as a recipe with `data.pack_sentences` carves it (blocks of
//! consecutive sentences, written in order, so `naba eval --pack-words` sees neighbours).

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let (Some(train), Some(frac), Some(seed), Some(out)) = (a.get(1), a.get(2), a.get(3), a.get(4))
    else {
        anyhow::bail!("usage: dev_split TRAIN.txt FRACTION SEED OUT.txt [blocks]");
    };
    let sents = naba_train::data::read_conll_sentences(train.as_ref())?;
    let (frac, seed) = (frac.parse()?, seed.parse()?);
    let (_, dev) = match a.get(5).map(String::as_str) {
        Some("blocks") => {
            naba_train::data::carve_dev_blocks(sents.len(), frac, seed, naba_train::data::DEV_BLOCK)
        }
        Some(other) => {
            anyhow::bail!("unknown option `{other}`: the fifth argument may be `blocks`")
        }
        None => naba_train::data::carve_dev(sents.len(), frac, seed),
    };
    let text: Vec<String> = dev.iter().map(|&i| sents[i].raw_lines.join("\n")).collect();
    std::fs::write(out, text.join("\n\n") + "\n")?;
    eprintln!("{} dev sentences written to {out}", dev.len());
    Ok(())
}
