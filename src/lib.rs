//! # gpumlp
//!
//! Train multi-layer perceptrons on any GPU that wgpu reaches (Vulkan, Metal, DX12, GL), or on a
//! fast multi-threaded CPU backend, both checked against a plain CPU reference with the same
//! semantics (the oracle).
//!
//! A dense layer computes `a = x·W + b`, `z = φ(a)`; training is mini-batch SGD (optionally with
//! momentum or Adam) on a loss averaged over the batch, with backpropagated deltas
//! `δ_out = ∂J/∂a`, `δ_j = φ'(a_j)·Σ_k w_jk δ_k` and gradients `∂J/∂w_ij = z_i δ_j`.
//!
//! ```
//! use gpumlp::{Activation, Dataset, Device, Loss, ModelSpec, TrainConfig, Trainer};
//!
//! // XOR with a 2-4-1 sigmoid network on the fast CPU backend (Device::Auto picks the fastest
//! // device: a hardware GPU, else this one).
//! let spec = ModelSpec::new(&[2, 4, 1], Activation::Sigmoid, Activation::Sigmoid, Loss::SquaredError)?;
//! let data = Dataset::from_classes(vec![0., 0., 0., 1., 1., 0., 1., 1.], 2, vec![0, 1, 1, 0], 2)?;
//! let mut config = TrainConfig::default();
//! config.lr = 2.0;
//! config.batch_size = 4;
//! config.epochs = 3000;
//! // The builder places the model with the configuration's optimizer and batch size.
//! let mut trainer = Trainer::builder(&spec)
//!     .device(Device::Cpu)
//!     .config(config)
//!     .init_seed(1)
//!     .build()?;
//! let history = trainer.fit(&data, None, |_| {})?;
//! assert_eq!(history.last().unwrap().train_accuracy, Some(1.0));
//! # Ok::<(), gpumlp::Error>(())
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod early_stopping;
pub mod error;
pub mod files;
pub mod gpu;
pub mod limits;
pub mod model;
pub mod onnx;
pub mod optim;
#[cfg(feature = "python")]
mod python;
pub mod reference;
pub mod report;
pub mod tolerance;
pub mod train;
pub mod verify;

pub use backend::{Backend, BatchStats, OptimizerState};
pub use cpu::CpuBackend;
pub use data::{Dataset, Targets};
pub use dist::{Collective, DataParallel};
pub use early_stopping::{EarlyStopping, Monitor, Verdict};
pub use error::{Error, Result};
pub use gpu::{AdapterInfo, AdapterSelector, GpuBackend, GpuContext, GpuOptions, Tune};
pub use model::{Activation, LayerLayout, Loss, ModelSpec};
pub use optim::{Optimizer, Schedule, StepHyper};
pub use reference::ReferenceBackend;
pub use tolerance::{Comparison, Tolerance};
pub use train::{DataPlan, EpochControl, EpochReport, TrainConfig, Trainer, TrainerBuilder};

use std::sync::Arc;

/// Where to place a model ([`Device::default`]: [`Device::Auto`] with no constraint).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// The fastest device here, by what it is: a discrete GPU, then an integrated one, then the
    /// fast CPU backend. Software adapters only when the selector (or `GPUMLP_BACKEND` /
    /// `GPUMLP_ADAPTER`) narrows the choice. [`place_with`] says which and why.
    Auto(AdapterSelector),
    /// Any wgpu adapter matching the selector, software ones included, or an error that says
    /// how to get one.
    Gpu(AdapterSelector),
    /// The `index`-th (0-based, best first) usable adapter matching the selector: `vulkan:0`,
    /// `gl:0`, `gpu:1` in `--devices`.
    Adapter {
        /// Which adapters qualify.
        selector: AdapterSelector,
        /// 0-based position among the matching usable adapters, best first.
        index: usize,
    },
    /// The fast CPU backend ([`CpuBackend`]).
    Cpu,
    /// The naive CPU reference, the oracle ([`ReferenceBackend`]).
    Reference,
}

impl Default for Device {
    fn default() -> Self {
        Device::Auto(AdapterSelector::default())
    }
}

/// The README's examples, run as doctests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// How to place a model, beyond the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlaceOptions {
    /// Threads of the CPU backend (None: `GPUMLP_THREADS`, else one per logical core).
    pub threads: Option<usize>,
    /// Whether a GPU placement times the plan's candidate kernels first ([`GpuOptions::tune`]).
    pub tune: Tune,
}

/// A placed model, and one line saying which device was chosen and why.
pub struct Placement {
    /// The placed model.
    pub backend: Box<dyn Backend>,
    /// One line saying which device was chosen and why.
    pub reason: String,
}

/// Places `spec` on `device` for batches of up to `max_batch` rows (see [`place_with`]).
pub fn place(
    device: &Device,
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
) -> Result<Box<dyn Backend>> {
    place_with(device, spec, optimizer, max_batch, &PlaceOptions::default()).map(|p| p.backend)
}

/// Places `spec` on `device`, and says which device was chosen and why. The library prints
/// nothing: a caller that wants to tell its user (as `gpumlp` does on stderr, unless
/// `--quiet`) prints [`Placement::reason`].
pub fn place_with(
    device: &Device,
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
    options: &PlaceOptions,
) -> Result<Placement> {
    Placer {
        spec,
        optimizer,
        max_batch,
        options,
        gpu: GpuOptions::default(),
    }
    .place(device)
}

/// A model to place and how: what every device choice needs.
struct Placer<'a> {
    spec: &'a ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
    options: &'a PlaceOptions,
    /// Options for a GPU model ([`PlaceOptions::tune`] overrides its `tune`).
    gpu: GpuOptions,
}

impl Placer<'_> {
    /// [`place_with`] on `device`, with the GPU options of this placer.
    fn place(&self, device: &Device) -> Result<Placement> {
        let (spec, optimizer) = (self.spec, self.optimizer);
        spec.validate()?;
        // Host copies of the model come first: refuse a model that cannot fit before any of it
        // is allocated (on a GPU the batch's activations live on the device: `GpuBackend::new`
        // checks those; the CPU backend checks its own buffers).
        spec.check_host_memory(optimizer, 0)?;
        match device {
            Device::Adapter { selector, index } => {
                let ctx = GpuContext::nth(&selector.clone().or_env(), *index)?;
                let reason = match &selector.backend {
                    Some(b) => format!("{} ({b}:{index})", ctx.info),
                    None => format!("{} (gpu:{index})", ctx.info),
                };
                self.on_gpu(ctx, reason)
            }
            Device::Reference => Ok(Placement {
                backend: {
                    spec.check_host_memory(optimizer, self.max_batch)?;
                    Box::new(ReferenceBackend::new(spec, optimizer)?)
                },
                reason: "the CPU reference (--device reference)".into(),
            }),
            Device::Cpu => self.on_cpu("(--device cpu)"),
            Device::Gpu(sel) => {
                let ctx = GpuContext::new(&sel.clone().or_env())?;
                let reason = format!("{} (--device gpu)", ctx.info);
                self.on_gpu(ctx, reason)
            }
            Device::Auto(sel) => self.auto(sel.clone().or_env()),
        }
    }

    /// `--device auto`: the best adapter matching `sel` when the user narrowed it, else the best
    /// hardware GPU, else the CPU backend.
    fn auto(&self, sel: AdapterSelector) -> Result<Placement> {
        if sel.backend.is_some() || sel.name.is_some() {
            // Narrowed by the user: any adapter that matches, software ones included.
            return match GpuContext::new(&sel) {
                Ok(ctx) => {
                    let reason = format!("{}: the best adapter matching {sel}", ctx.info);
                    self.on_gpu(ctx, reason)
                }
                Err(e @ Error::NoAdapter { .. }) => self.on_cpu(&format!("(auto: {e})")),
                Err(e) => Err(e),
            };
        }
        match GpuContext::best_hardware(&sel)? {
            Some(ctx) => {
                let reason = format!("{}: the best hardware GPU (auto)", ctx.info);
                self.on_gpu(ctx, reason)
            }
            None => self.on_cpu(&auto_cpu_reason(&sel)?),
        }
    }

    /// The model on the GPU of `ctx`; `reason` says why that one (the tuning is added to it).
    fn on_gpu(&self, ctx: GpuContext, reason: String) -> Result<Placement> {
        let mut gpu_options = self.gpu;
        gpu_options.tune = self.options.tune;
        let backend = GpuBackend::new(
            Arc::new(ctx),
            self.spec,
            self.optimizer,
            self.max_batch,
            gpu_options,
        )?;
        let reason = match backend.tuning() {
            Some(t) => format!("{reason}; {}", gpu::tune::summary(t)),
            None => reason,
        };
        Ok(Placement {
            backend: Box::new(backend),
            reason,
        })
    }

    /// The model on the fast CPU backend; `reason` follows the backend's name.
    fn on_cpu(&self, reason: &str) -> Result<Placement> {
        let cpu = CpuBackend::new(
            self.spec,
            self.optimizer,
            self.max_batch,
            self.options.threads,
        )?;
        let reason = format!("{} {reason}", cpu.name());
        Ok(Placement {
            backend: Box::new(cpu),
            reason,
        })
    }
}

/// Why auto runs on the CPU: no hardware GPU, naming the software adapters it passed over.
fn auto_cpu_reason(sel: &AdapterSelector) -> Result<String> {
    let software: Vec<String> = gpu::context::usable(sel)?
        .iter()
        .map(|a| a.to_string())
        .collect();
    Ok(if software.is_empty() {
        "(auto: no GPU adapter found)".into()
    } else {
        format!(
            "(auto: no discrete or integrated GPU; software adapters run only with --device gpu: {})",
            software.join(", ")
        )
    })
}

/// Parses a `--devices` list, `SPEC,SPEC,...`, each one of: `cpu`, `reference`, `gpu` (the best
/// adapter), `BACKEND` (its best adapter: `vulkan`, `metal`, `dx12`, `gl`), `gpu:N` or
/// `BACKEND:N` (the N-th adapter, 0-based, best first), `gpu:all` or `BACKEND:all` (every
/// usable adapter, software ones included). A device may appear more than once.
///
/// # Errors
/// [`Error::InvalidConfig`] for an empty list or an unknown spec; `:all` that finds no adapter
/// gives [`Error::NoAdapter`].
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    const BACKENDS: [&str; 4] = ["vulkan", "metal", "dx12", "gl"];
    let unknown = |item: &str| {
        Error::InvalidConfig(format!(
            "unknown device '{item}' in --devices '{list}': use cpu, reference, gpu, gpu:N, gpu:all, or a backend (vulkan, metal, dx12, gl) alone, with :N or with :all"
        ))
    };
    let mut devices = Vec::new();
    for item in list.split(',').map(str::trim) {
        let lower = item.to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (lower.as_str(), None),
        };
        match (kind, index) {
            ("cpu", None) => devices.push(Device::Cpu),
            ("reference", None) => devices.push(Device::Reference),
            _ if kind != "gpu" && !BACKENDS.contains(&kind) => return Err(unknown(item)),
            _ => {
                let selector = AdapterSelector {
                    backend: (kind != "gpu").then(|| kind.to_string()),
                    name: None,
                };
                match index {
                    None => devices.push(Device::Gpu(selector)),
                    Some("all") => {
                        let found = gpu::context::usable(&selector)?.len();
                        if found == 0 {
                            return Err(Error::NoAdapter {
                                backend: selector.backend.clone(),
                                name: None,
                            });
                        }
                        devices.extend((0..found).map(|index| Device::Adapter {
                            selector: selector.clone(),
                            index,
                        }));
                    }
                    Some(i) => {
                        let index = i.parse::<usize>().map_err(|_| unknown(item))?;
                        devices.push(Device::Adapter { selector, index });
                    }
                }
            }
        }
    }
    Ok(devices)
}

/// Places `spec` on every device in `devices` as the replicas of one data-parallel model
/// ([`DataParallel`], in this process), for global batches of up to `max_batch` rows (each
/// replica holds room for its shard). GPU replicas run the split schedule
/// ([`GpuOptions::data_parallel`]); CPU replicas share the machine's threads unless
/// `options.threads` says how many each takes. The reason names every replica.
///
/// # Errors
/// An empty list, or any replica's placement error.
pub fn place_replicas(
    devices: &[Device],
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
    options: &PlaceOptions,
) -> Result<Placement> {
    place_replicas_with(devices, spec, optimizer, max_batch, options, None)
}

/// [`place_replicas`] as this process's part of a run over the processes of `collective`:
/// every global batch is sharded across the processes first, then across `devices`, so each
/// replica holds room for `⌈max_batch / (ranks · devices)⌉` rows.
///
/// # Errors
/// As [`place_replicas`].
pub fn place_replicas_with(
    devices: &[Device],
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
    options: &PlaceOptions,
    collective: Option<Box<dyn Collective>>,
) -> Result<Placement> {
    if devices.is_empty() {
        return Err(Error::InvalidConfig(
            "data parallelism needs at least one device".into(),
        ));
    }
    let ranks = collective.as_ref().map_or(1, |c| c.size().max(1));
    let shard_rows = max_batch.max(1).div_ceil(ranks * devices.len());
    let cpus = devices.iter().filter(|d| **d == Device::Cpu).count();
    let mut options = options.clone();
    if options.threads.is_none() && cpus > 1 {
        options.threads = Some((cpu::resolve_threads(None)? / cpus).max(1));
    }
    let gpu = GpuOptions {
        data_parallel: true,
        ..Default::default()
    };
    let mut replicas = Vec::with_capacity(devices.len());
    let mut reasons = Vec::with_capacity(devices.len());
    for d in devices {
        let p = Placer {
            spec,
            optimizer,
            max_batch: shard_rows,
            options: &options,
            gpu,
        }
        .place(d)?;
        replicas.push(p.backend);
        reasons.push(p.reason);
    }
    Ok(Placement {
        backend: Box::new(DataParallel::new(replicas, collective)?),
        reason: format!(
            "{} data-parallel replicas{} (--devices), each with up to {shard_rows} rows of every batch of {max_batch}: {}",
            devices.len(),
            if ranks > 1 { format!(" in each of {ranks} processes") } else { String::new() },
            reasons.join("; ")
        ),
    })
}
