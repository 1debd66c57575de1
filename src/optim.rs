//! Optimizers and learning-rate schedules.

use crate::error::{Error, Result};
use std::str::FromStr;

/// The optimizer's update rule, with `g = ∂E/∂w (+ λw for weights)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `w ← w − η g`
    Sgd,
    /// Classical momentum: `v ← μ v + g; w ← w − η v`.
    Momentum { mu: f32 },
    /// Adam (bias-corrected): `m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
    /// w ← w − η m̂ / (√v̂ + ε)` with `m̂ = m/(1−β1^t)`, `v̂ = v/(1−β2^t)`.
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

impl Optimizer {
    /// Adam with the usual `β1 = 0.9, β2 = 0.999, ε = 1e-8`.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Optimizer::Sgd => OptimizerKind::Sgd,
            Optimizer::Momentum { .. } => OptimizerKind::Momentum,
            Optimizer::Adam { .. } => OptimizerKind::Adam,
        }
    }
    /// Per-parameter state slots: 0 (SGD), 1 (velocity), 2 (m, v).
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd => 0,
            Optimizer::Momentum { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
    /// The hyper-parameters of step number `t` (1-based) at learning rate `lr`. The bias
    /// corrections are computed in f64 and rounded once, identically for every backend.
    pub fn hyper(&self, lr: f32, t: u64, l2: f32) -> StepHyper {
        let (momentum, beta1, beta2, eps) = match *self {
            Optimizer::Sgd => (0.0, 0.9, 0.999, 1e-8),
            Optimizer::Momentum { mu } => (mu, 0.9, 0.999, 1e-8),
            Optimizer::Adam { beta1, beta2, eps } => (0.0, beta1, beta2, eps),
        };
        let t = t.max(1) as i32;
        StepHyper {
            lr,
            l2,
            momentum,
            beta1,
            beta2,
            eps,
            bias_correction1: (1.0 - (beta1 as f64).powi(t)) as f32,
            bias_correction2: (1.0 - (beta2 as f64).powi(t)) as f32,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::Adam { .. } => "adam",
        }
    }
}

/// The optimizer without its hyper-parameters (the WGSL `OPT` constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
}

impl OptimizerKind {
    pub fn code(self) -> u32 {
        match self {
            OptimizerKind::Sgd => 1,
            OptimizerKind::Momentum => 2,
            OptimizerKind::Adam => 3,
        }
    }
}

/// Everything one update step needs, identical on every backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepHyper {
    pub lr: f32,
    pub l2: f32,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 − β1^t`
    pub bias_correction1: f32,
    /// `1 − β2^t`
    pub bias_correction2: f32,
}

/// Learning rate as a function of the epoch (0-based), constant within an epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `η_e = η`
    Constant,
    /// `η_e = η · γ^⌊e / every⌋`
    Step { every: usize, gamma: f32 },
    /// `η_e = η · γ^e`
    Exponential { gamma: f32 },
    /// `η_e = η / (e + 1)^power`
    InverseScaling { power: f32 },
}

impl Schedule {
    /// The learning rate for epoch `epoch` (0-based) from the base rate `lr`.
    pub fn lr(&self, lr: f32, epoch: usize) -> f32 {
        let e = epoch as f64;
        let lr = lr as f64;
        (match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => {
                lr * (gamma as f64).powi((epoch / every.max(1)) as i32)
            }
            Schedule::Exponential { gamma } => lr * (gamma as f64).powf(e),
            Schedule::InverseScaling { power } => lr / (e + 1.0).powf(power as f64),
        }) as f32
    }
}

impl FromStr for Schedule {
    type Err = Error;
    /// `constant`, `step:EVERY:GAMMA`, `exp:GAMMA`, `invscaling:POWER`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str| -> Result<f32> {
            p.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    Error::InvalidConfig(format!("schedule '{s}': '{p}' is not a number"))
                })
        };
        match parts.as_slice() {
            ["constant"] => Ok(Schedule::Constant),
            ["step", every, gamma] => {
                let every = every.parse::<usize>().ok().filter(|&e| e > 0).ok_or_else(|| {
                    Error::InvalidConfig(format!("schedule '{s}': EVERY must be a whole number ≥ 1"))
                })?;
                Ok(Schedule::Step {
                    every,
                    gamma: num(gamma)?,
                })
            }
            ["exp", gamma] => Ok(Schedule::Exponential { gamma: num(gamma)? }),
            ["invscaling", power] => Ok(Schedule::InverseScaling { power: num(power)? }),
            _ => Err(Error::InvalidConfig(format!(
                "unknown schedule '{s}': use constant, step:EVERY:GAMMA, exp:GAMMA or invscaling:POWER"
            ))),
        }
    }
}
