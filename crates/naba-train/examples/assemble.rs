//! Assembles a parts directory into a Hugging Face-layout checkpoint:
//! `cargo run --release -p naba-train --example assemble -- PARTS_DIR OUT_DIR`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(parts), Some(out)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: assemble PARTS_DIR OUT_DIR");
    };
    let n = naba_train::assemble(parts.as_ref(), out.as_ref())?;
    eprintln!("{n} tensors written to {out}");
    Ok(())
}
