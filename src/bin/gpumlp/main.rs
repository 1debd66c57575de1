//! `gpumlp`: train, evaluate and benchmark MLPs from the command line. A thin layer over the
//! library: it does nothing a library user cannot do.

mod bench;
mod eval;
mod export;
mod resume;
mod train;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gpumlp::{AdapterSelector, Backend, Device, ModelSpec, Optimizer};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gpumlp",
    version,
    about = "Train multi-layer perceptrons on any GPU wgpu reaches, checked against a CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (with no arguments: the embedded 8×8 digits on the best adapter).
    Train(Box<train::TrainArgs>),
    /// Loss, accuracy and confusion matrix of a saved model on a dataset.
    Eval(eval::EvalArgs),
    /// Write one row of predictions per sample to a CSV file.
    Predict(eval::PredictArgs),
    /// Write a saved model as ONNX (Gemm + activation per layer, normalization in front).
    Export(export::ExportArgs),
    /// List every adapter with its backend, type, driver and limits.
    Info,
    /// Time training steps with a fixed protocol (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
}

/// Layer sizes, input first: `784,512,10`, `784-512-10` or `784x512x10` (the forms the
/// README and BENCHMARKS.md write shapes in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerSizes(pub Vec<usize>);

impl std::str::FromStr for LayerSizes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split([',', '-', 'x'])
            .map(|part| {
                part.trim().parse::<usize>().map_err(|_| {
                    format!("{part:?} is not a layer size: give whole numbers such as 784,512,10")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(LayerSizes)
    }
}

/// Where to run, shared by every command.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct DeviceArgs {
    /// auto (best GPU, else the CPU reference), gpu, or cpu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Restrict to one backend: vulkan, metal, dx12 or gl.
    #[arg(long)]
    pub backend: Option<String>,
}

impl DeviceArgs {
    pub fn device(&self) -> anyhow::Result<Device> {
        if let (Some(b), "cpu") = (&self.backend, self.device.as_str()) {
            anyhow::bail!(
                "--backend {b} picks a GPU backend, but --device cpu runs on the CPU reference: give one or the other"
            );
        }
        let sel = AdapterSelector {
            backend: self.backend.clone(),
            name: None,
        };
        Ok(match self.device.as_str() {
            "auto" => Device::Auto(sel),
            "gpu" => Device::Gpu(sel),
            "cpu" => Device::Cpu,
            other => anyhow::bail!("unknown --device '{other}': use auto, gpu or cpu"),
        })
    }

    /// Places `spec` on this device; when `auto` finds no GPU adapter it says so on stderr
    /// (unless `quiet`) and runs on the CPU reference.
    pub fn place(
        &self,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        quiet: bool,
    ) -> anyhow::Result<Box<dyn Backend>> {
        let (backend, fallback) =
            gpumlp::place_with_fallback(&self.device()?, spec, optimizer, max_batch)?;
        if let (Some(why), false) = (fallback, quiet) {
            eprintln!("gpumlp: {why}\ngpumlp: running on the CPU reference instead");
        }
        Ok(backend)
    }
}

fn info() -> anyhow::Result<()> {
    let all = gpumlp::gpu::list_adapters();
    if all.is_empty() {
        println!("no adapters found: install a GPU driver, or a software Vulkan device (apt-get install -y mesa-vulkan-drivers libvulkan1)");
    }
    for a in &all {
        println!("{a}");
        println!("  driver: {} {}", a.driver, a.driver_info);
        println!(
            "  max storage binding: {} MiB, max buffer: {} MiB, workgroup memory: {} KiB, invocations per workgroup: {}, storage buffers per stage: {}",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            a.max_storage_buffers_per_shader_stage
        );
        println!(
            "  subgroup size: {}..{}, timestamp queries: {}",
            a.subgroup_min_size,
            a.subgroup_max_size,
            if a.timestamps { "yes" } else { "no" }
        );
    }
    match gpumlp::gpu::context::best_adapter(&AdapterSelector::from_env()) {
        Ok(Some(best)) => println!("auto picks: {best}"),
        Ok(None) => println!("auto picks: the CPU reference (no usable GPU adapter)"),
        Err(e) => println!("auto: {e}"),
    }
    Ok(())
}

/// On SIGINT, SIGTERM or SIGHUP: removes the temporaries of writes in progress (every file
/// they would replace keeps its last complete contents), says so, and exits with 130.
fn clean_up_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        let removed = gpumlp::files::remove_pending_temporaries();
        let note = if removed.is_empty() {
            String::new()
        } else {
            format!(
                "; an unfinished write was abandoned ({} temporary file removed, the file it would replace is unchanged)",
                removed.len()
            )
        };
        eprintln!("gpumlp: interrupted{note}");
        std::process::exit(130);
    });
}

fn main() -> ExitCode {
    clean_up_on_interrupt();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Silences EGL's complaint on headless machines (the GL backend probes it).
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(mut args) => {
            // Which flags the user typed (not clap's defaults): `--resume` keeps the saved run's
            // value of every flag not given, and refuses a given one that contradicts it.
            if let Some(m) = matches.subcommand_matches("train") {
                args.given = m
                    .ids()
                    .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                    .map(|id| id.to_string())
                    .collect();
            }
            train::run(*args)
        }
        Command::Eval(args) => eval::run_eval(args).map(|_| ExitCode::SUCCESS),
        Command::Predict(args) => eval::run_predict(args).map(|_| ExitCode::SUCCESS),
        Command::Export(args) => export::run(args).map(|_| ExitCode::SUCCESS),
        Command::Info => info().map(|_| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpumlp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
