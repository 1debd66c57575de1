//! `gpumlp`: train, evaluate and benchmark MLPs from the command line. A thin layer over the
//! library: it does nothing a library user cannot do.

mod bench;
mod choices;
mod config;
mod distributed;
mod epochs;
mod eval;
mod export;
mod plan;
mod resume;
mod rows;
mod train;

use choices::{BackendChoice, DeviceChoice, HeaderChoice};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gpumlp::data::CsvOptions;
use gpumlp::{AdapterSelector, Backend, Device, ModelSpec, Optimizer, PlaceOptions};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gpumlp",
    version,
    about = "Train multi-layer perceptrons on any GPU wgpu reaches or on a fast CPU backend, checked against a CPU reference"
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
    /// List every adapter with its backend, type, driver and limits; with --model, describe a
    /// saved model and the configuration it was trained with.
    Info(InfoArgs),
    /// Time training steps with a fixed protocol (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// How a training step runs on this adapter or a named device profile (kernels, tiles).
    Plan(plan::PlanArgs),
}

#[derive(Args)]
pub struct InfoArgs {
    /// A checkpoint to describe instead of the adapters.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
}

/// Layer sizes, input first: `784,512,10`, `784-512-10` or `784x512x10` (the forms the
/// README and BENCHMARKS.md write shapes in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerSizes(pub Vec<usize>);

impl std::str::FromStr for LayerSizes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        gpumlp::model::parse_layer_sizes(s)
            .map(LayerSizes)
            .map_err(|e| e.to_string())
    }
}

/// Where to run, shared by every command.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct DeviceArgs {
    /// Where to train or run the model.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Restrict to one GPU backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Restrict to adapters whose name contains NAME (case-insensitive), as GPUMLP_ADAPTER.
    #[arg(long)]
    #[serde(default)]
    pub adapter: Option<String>,
    /// Threads of the CPU backend (default: GPUMLP_THREADS, else one per logical core).
    #[arg(long)]
    #[serde(default)]
    pub threads: Option<usize>,
    /// Time the plan's candidate kernels for this model at placement and run the fastest,
    /// cached per adapter, driver and shape (auto: on hardware GPUs only; off: the static
    /// plan). The cache lives in $GPUMLP_CACHE_DIR, else $XDG_CACHE_HOME/gpumlp, else
    /// ~/.cache/gpumlp.
    #[arg(long, default_value = "auto", value_name = "auto|on|off")]
    #[serde(skip)]
    pub tune: TuneArg,
}

/// `--tune`, parsed by the library's [`gpumlp::Tune`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TuneArg(pub gpumlp::Tune);

impl std::str::FromStr for TuneArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(TuneArg)
    }
}

impl std::fmt::Display for TuneArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl DeviceArgs {
    pub fn device(&self) -> anyhow::Result<Device> {
        if let (Some(b), DeviceChoice::Cpu | DeviceChoice::Reference) = (&self.backend, self.device)
        {
            anyhow::bail!(
                "--backend {b} picks a GPU backend, but --device {} runs on the CPU: give one or the other",
                self.device
            );
        }
        if let (Some(a), DeviceChoice::Cpu) = (&self.adapter, self.device) {
            anyhow::bail!(
                "--adapter {a} picks a GPU adapter, but --device cpu runs on the CPU: give one or the other"
            );
        }
        let mut sel = AdapterSelector::default();
        sel.backend = self.backend.map(|b| b.to_string());
        sel.name = self.adapter.clone();
        Ok(match self.device {
            DeviceChoice::Auto => Device::Auto(sel),
            DeviceChoice::Gpu => Device::Gpu(sel),
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Reference => Device::Reference,
        })
    }

    /// The placement options these flags give (CPU threads).
    pub fn place_options(&self) -> PlaceOptions {
        let mut options = PlaceOptions::default();
        options.threads = self.threads;
        options.tune = self.tune.0;
        options
    }

    /// Places `spec` on this device and says on stderr (unless `quiet`) which device was
    /// chosen and why.
    pub fn place(
        &self,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        quiet: bool,
    ) -> anyhow::Result<Box<dyn Backend>> {
        let placed = gpumlp::place_with(
            &self.device()?,
            spec,
            optimizer,
            max_batch,
            &self.place_options(),
        )?;
        if !quiet {
            eprintln!("gpumlp: device: {}", placed.reason);
        }
        Ok(placed.backend)
    }
}

/// How `csv:` data is split into fields, shared by `train`, `eval` and `predict`.
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize)]
pub struct CsvArgs {
    /// The character between CSV fields: one ASCII character, or \t / tab (default: a comma).
    #[arg(long, value_parser = parse_delimiter)]
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Whether the first CSV row names the columns.
    #[arg(long, value_enum, default_value = "auto")]
    #[serde(default)]
    pub header: HeaderChoice,
}

fn parse_delimiter(s: &str) -> Result<String, String> {
    match CsvOptions::parse_delimiter(s) {
        Ok(_) => Ok(s.to_string()),
        Err(gpumlp::Error::InvalidConfig(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

impl CsvArgs {
    /// The library's options for these flags (a delimiter from a run file or a saved run is
    /// checked here; clap checked the command line's).
    pub fn options(&self) -> anyhow::Result<CsvOptions> {
        let mut o = CsvOptions::default();
        if let Some(d) = &self.delimiter {
            parse_delimiter(d).map_err(|why| anyhow::anyhow!("--delimiter {d:?}: {why}"))?;
            o.delimiter = CsvOptions::parse_delimiter(d)?;
        }
        o.header = self.header.header();
        Ok(o)
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
    println!("--device auto ranks (first found wins):");
    let sel = AdapterSelector::from_env();
    let usable = gpumlp::gpu::context::usable(&sel)?;
    let narrowed = sel.backend.is_some() || sel.name.is_some();
    let mut rank = 0;
    for a in usable.iter().filter(|a| narrowed || a.is_hardware_gpu()) {
        rank += 1;
        println!("  {rank}. {a}");
    }
    match gpumlp::cpu::resolve_threads(None) {
        Ok(n) => println!("  {}. the fast CPU backend ({n} threads)", rank + 1),
        Err(e) => println!("  {}. the fast CPU backend: {e}", rank + 1),
    }
    for a in usable.iter().filter(|a| !narrowed && !a.is_hardware_gpu()) {
        println!("  not ranked (software or virtual; use --device gpu): {a}");
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

/// `gpumlp info --model PATH`: the model and the effective configuration of its run.
fn model_info(path: &std::path::Path) -> anyhow::Result<()> {
    let ck = gpumlp::checkpoint::Checkpoint::load(path)?;
    let s = &ck.spec;
    println!("model: {}", path.display());
    let sizes: Vec<String> = s.sizes.iter().map(|v| v.to_string()).collect();
    let acts: Vec<String> = s.activations.iter().map(|a| a.name()).collect();
    println!(
        "layers: {} ({}), loss {}",
        sizes.join("-"),
        acts.join(","),
        s.loss
    );
    println!("parameters: {}", s.param_count());
    if let Some(n) = &ck.normalization {
        println!("normalization: {:?}", n.method);
    }
    if let Some(t) = &ck.training {
        println!("trained: {} epochs, {} steps", t.epoch, t.steps);
        if let Some(args) = t.extra.get("args") {
            println!("configuration (gpumlp train --config reads this):");
            print!("{}", config::to_toml(args)?);
        }
    }
    Ok(())
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
        Command::Info(InfoArgs { model: None }) => info().map(|_| ExitCode::SUCCESS),
        Command::Info(InfoArgs { model: Some(m) }) => model_info(&m).map(|_| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).map(|_| ExitCode::SUCCESS),
        Command::Plan(args) => plan::run(args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpumlp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
