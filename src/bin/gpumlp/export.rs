//! `gpumlp export`: a saved model as ONNX.

use clap::Args;
use gpumlp::checkpoint::Checkpoint;
use gpumlp::files::{atomic_write_with, check_distinct, check_writable, WriteOptions};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    /// A checkpoint written by `gpumlp train --out` (or by Python's `model.save`).
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write (opset 17; input `input` [batch, in], output `output` [batch, out],
    /// and `label` [batch] for classifiers).
    #[arg(long)]
    pub onnx: PathBuf,
    /// Replace --onnx even where it is a read-only file.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let mut write = WriteOptions::default();
    write.replace_read_only = args.force;
    check_writable(&args.onnx, write)?;
    check_distinct(&[("--onnx", &args.onnx)], &[("--model", &args.model)])?;
    let ck = Checkpoint::load(&args.model)?;
    let bytes = gpumlp::onnx::to_onnx(&ck)?;
    atomic_write_with(&args.onnx, write, |f| f.write_all(&bytes))?;
    if !args.quiet {
        eprintln!(
            "gpumlp: wrote {} ({} bytes, opset {})",
            args.onnx.display(),
            bytes.len(),
            gpumlp::onnx::OPSET
        );
    }
    Ok(())
}
