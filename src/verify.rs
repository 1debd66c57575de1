//! `--verify K`: the first K training steps on the GPU and on the CPU reference side by side, so a
//! user can check the GPU kernels against the reference on their own hardware.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::Result;
use crate::tolerance::{Comparison, Tolerance};
use crate::train::{epoch_order, TrainConfig};

/// How far parameters may drift apart over a few hundred steps: f32 sums in another order and
/// a few ulps of exp/tanh, compounded by training.
pub const VERIFY_TOLERANCE: Tolerance = Tolerance::new(1e-3, 1e-4);

/// What `verify` found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// Training steps compared.
    pub steps: usize,
    /// The name of the device checked against the reference.
    pub device: String,
    /// Final parameters, device vs reference.
    pub params: Comparison,
    /// Per-step mean losses, device vs reference.
    pub losses: Comparison,
}

impl VerifyReport {
    /// Whether both the final parameters and the per-step losses were within tolerance.
    pub fn passed(&self) -> bool {
        self.params.passed && self.losses.passed
    }
}

/// Runs `steps` steps of `config` from `params` on both backends, with the same batches.
pub fn verify<'a>(
    device: &'a mut dyn Backend,
    reference: &'a mut dyn Backend,
    params: &[f32],
    train: &Dataset,
    config: &TrainConfig,
    steps: usize,
) -> Result<VerifyReport> {
    if steps > crate::limits::MAX_VERIFY_STEPS {
        return Err(crate::error::Error::InvalidConfig(format!(
            "verify compares at most {} steps (the CPU reference runs every one), not {steps}",
            crate::limits::MAX_VERIFY_STEPS
        )));
    }
    let t = train.dense_targets(device.spec())?;
    let name = device.name();
    let mut runs = Vec::new();
    for b in [device, reference] {
        b.set_params(params)?;
        b.set_train_data(&train.features, &t, train.rows)?;
        let batch = config.batch_size.min(train.rows);
        let mut losses = Vec::new();
        let (mut taken, mut epoch) = (0u64, 0usize);
        while (taken as usize) < steps {
            b.begin_epoch(&epoch_order(train.rows, config.seed, epoch, config.shuffle))?;
            let lr = config.schedule.lr(config.lr, epoch);
            let mut start = 0;
            while start < train.rows && (taken as usize) < steps {
                let len = batch.min(train.rows - start);
                taken += 1;
                b.step(start, len, &config.optimizer.hyper(lr, taken, config.l2))?;
                start += len;
            }
            losses.extend(b.finish_epoch()?.iter().map(|s| s.mean_loss() as f32));
            epoch += 1;
        }
        runs.push((b.params()?, losses));
    }
    Ok(VerifyReport {
        steps,
        device: name,
        params: VERIFY_TOLERANCE.compare("parameters", &runs[0].0, &runs[1].0),
        losses: VERIFY_TOLERANCE.compare("losses", &runs[0].1, &runs[1].1),
    })
}
