//! `naba embed`: E5 sentence embeddings, one JSON line per input, for search, clustering and
//! fitting the stance model's relatedness gate (`scripts/fit_relatedness.py`).

use crate::input::{read_docs, Format};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use naba_models::{parse_dtype, DeviceSpec, LoadOptions, Model};
use naba_tasks::{Pipeline, PipelineOptions};
use naba_text::{split_sentences, CharIndex};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Prefix {
    /// `query: `: for similarity between texts of the same kind (and for search queries).
    Query,
    /// `passage: `: for the documents a search returns.
    Passage,
}

impl Prefix {
    fn as_str(self) -> &'static str {
        match self {
            Prefix::Query => "query: ",
            Prefix::Passage => "passage: ",
        }
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    /// An E5 encoder: a checkpoint directory or model name [default: the installed base
    /// encoder].
    #[arg(long, env = "NABA_MODEL")]
    pub model: Option<String>,
    /// The E5 input prefix put before each text.
    #[arg(long, value_enum, default_value = "query")]
    pub prefix: Prefix,
    /// Embed each sentence (naba's sentence splitter, as the stance relatedness gate reads a
    /// long text) instead of the whole text; each comes with its character offsets.
    #[arg(long)]
    pub sentences: bool,
    /// Read inputs from FILE (`-` for stdin) instead of arguments.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// How the input is laid out.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Where to run: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "NABA_DEVICE")]
    pub device: DeviceSpec,
    /// Windows per model call.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Texts to embed (otherwise --input or stdin).
    pub texts: Vec<String>,
}

/// Inputs per model call: enough to batch well, few enough to show progress on stdout.
const CHUNK: usize = 64;

pub fn run(args: EmbedArgs) -> Result<ExitCode> {
    let docs = read_docs(&args.texts, args.input.as_deref(), args.format)?;
    let spec = crate::predict::base_encoder(args.model.as_deref())?;
    let device = args.device.open()?;
    let dtype = parse_dtype("f32", &device)?;
    let model = Model::load(
        &spec,
        &LoadOptions {
            device,
            dtype,
            // The 4-bit base encoder runs far faster expanded to dense f32 (its embeddings
            // agree with the 4-bit path's to a cosine of 0.9999: tests/e5_reference.rs).
            dequantize: true,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("cannot load model `{spec}`"))?;
    let pipeline = Pipeline::new(
        model,
        &PipelineOptions {
            batch_size: args.batch_size,
            ..PipelineOptions::default()
        },
    )?;
    let prefix = args.prefix.as_str();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for chunk in docs.chunks(CHUNK) {
        if !args.sentences {
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            for (doc, r) in chunk.iter().zip(pipeline.embed(&texts, prefix)) {
                let line = match r {
                    Ok((v, windows)) => json!({"id": doc.id, "embedding": v, "windows": windows}),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: input {}: {e}", doc.id);
                        json!({"id": doc.id, "error": e.to_string()})
                    }
                };
                writeln!(out, "{line}")?;
            }
        } else {
            for doc in chunk {
                let index = CharIndex::new(&doc.text);
                let byte = |c: usize| index.char_to_byte(c).unwrap_or(doc.text.len());
                let spans = split_sentences(&doc.text);
                let texts: Vec<&str> = spans
                    .iter()
                    .map(|&(s, e)| &doc.text[byte(s)..byte(e)])
                    .collect();
                let mut sentences = Vec::with_capacity(spans.len());
                let mut error = None;
                for (&(start, end), r) in spans.iter().zip(pipeline.embed(&texts, prefix)) {
                    match r {
                        Ok((v, _)) => {
                            sentences.push(json!({"start": start, "end": end, "embedding": v}))
                        }
                        Err(e) => error = Some(e.to_string()),
                    }
                }
                let line = match error {
                    None => json!({"id": doc.id, "sentences": sentences}),
                    Some(e) => {
                        failed += 1;
                        eprintln!("error: input {}: {e}", doc.id);
                        json!({"id": doc.id, "error": e})
                    }
                };
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
    }
    std::mem::forget(pipeline);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
