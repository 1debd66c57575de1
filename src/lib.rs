//! # gpumlp
//!
//! Train multi-layer perceptrons on any GPU that wgpu reaches (Vulkan, Metal, DX12, GL), with a
//! plain CPU reference that has the same semantics and checks every GPU kernel.
//!
//! A dense layer computes `a = x·W + b`, `z = φ(a)`; training is mini-batch SGD (optionally with
//! momentum or Adam) on a loss averaged over the batch, with backpropagated deltas
//! `δ_out = ∂J/∂a`, `δ_j = φ'(a_j)·Σ_k w_jk δ_k` and gradients `∂J/∂w_ij = z_i δ_j`.
//!
//! ```
//! use gpumlp::{Activation, Dataset, Device, Loss, ModelSpec, Optimizer, TrainConfig, Trainer};
//!
//! // XOR with a 2-4-1 sigmoid network on the CPU reference (Device::Auto picks the best GPU).
//! let spec = ModelSpec::new(&[2, 4, 1], Activation::Sigmoid, Activation::Sigmoid, Loss::SquaredError)?;
//! let data = Dataset::from_classes(vec![0., 0., 0., 1., 1., 0., 1., 1.], 2, vec![0, 1, 1, 0], 2)?;
//! let config = TrainConfig { lr: 2.0, batch_size: 4, epochs: 3000, ..Default::default() };
//! let backend = gpumlp::place(&Device::Cpu, &spec, config.optimizer, config.batch_size)?;
//! let mut trainer = Trainer::new(backend, &spec.init_params(1), config)?;
//! let history = trainer.fit(&data, None, |_| {})?;
//! assert_eq!(history.last().unwrap().train_accuracy, Some(1.0));
//! # Ok::<(), gpumlp::Error>(())
//! ```

pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod error;
pub mod files;
pub mod gpu;
pub mod model;
pub mod onnx;
pub mod optim;
#[cfg(feature = "python")]
mod python;
pub mod report;
pub mod tolerance;
pub mod train;
pub mod verify;

pub use backend::{Backend, BatchStats, OptimizerState};
pub use cpu::CpuBackend;
pub use data::{Dataset, Targets};
pub use error::{Error, Result};
pub use gpu::{AdapterInfo, AdapterSelector, GpuBackend, GpuContext, GpuOptions};
pub use model::{Activation, LayerLayout, Loss, ModelSpec};
pub use optim::{Optimizer, Schedule, StepHyper};
pub use tolerance::{Comparison, Tolerance};
pub use train::{EpochReport, TrainConfig, Trainer};

use std::sync::Arc;

/// Where to place a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// The best GPU adapter matching the selector (and `GPUMLP_BACKEND`/`GPUMLP_ADAPTER`); the
    /// CPU reference when there is none ([`place_with_fallback`] says why; nothing is printed).
    Auto(AdapterSelector),
    /// A GPU adapter, or an error that says how to get one.
    Gpu(AdapterSelector),
    /// The CPU reference.
    Cpu,
}

/// Places `spec` on `device` for batches of up to `max_batch` rows. With [`Device::Auto`] and no
/// usable GPU adapter this silently returns the CPU reference: use [`place_with_fallback`] to
/// learn why, or [`Backend::name`] to see where the model went.
pub fn place(
    device: &Device,
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
) -> Result<Box<dyn Backend>> {
    place_with_fallback(device, spec, optimizer, max_batch).map(|(backend, _)| backend)
}

/// Like [`place`], and also returns why [`Device::Auto`] fell back to the CPU reference (the
/// [`Error::NoAdapter`] it met), or `None` when it did not. The library prints nothing: a caller
/// that wants to tell its user (as `gpumlp` does on stderr, unless `--quiet`) prints this.
pub fn place_with_fallback(
    device: &Device,
    spec: &ModelSpec,
    optimizer: Optimizer,
    max_batch: usize,
) -> Result<(Box<dyn Backend>, Option<Error>)> {
    let on_gpu = |ctx: GpuContext| -> Result<Box<dyn Backend>> {
        let options = GpuOptions::default();
        Ok(Box::new(GpuBackend::new(
            Arc::new(ctx),
            spec,
            optimizer,
            max_batch,
            options,
        )?))
    };
    match device {
        Device::Cpu => Ok((Box::new(CpuBackend::new(spec, optimizer)?), None)),
        Device::Gpu(sel) => Ok((on_gpu(GpuContext::new(&sel.clone().or_env())?)?, None)),
        Device::Auto(sel) => match GpuContext::new(&sel.clone().or_env()) {
            Ok(ctx) => Ok((on_gpu(ctx)?, None)),
            Err(e @ Error::NoAdapter { .. }) => {
                Ok((Box::new(CpuBackend::new(spec, optimizer)?), Some(e)))
            }
            Err(e) => Err(e),
        },
    }
}
