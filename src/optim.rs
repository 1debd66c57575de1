//! Optimizers and learning-rate schedules.

use crate::error::{Error, Result};
use std::str::FromStr;

/// The optimizer's update rule, with `g = ∂E/∂w (+ λw for weights)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Optimizer {
    /// `w ← w − η g`
    Sgd,
    /// Classical momentum: `v ← μ v + g; w ← w − η v`.
    Momentum {
        /// Momentum coefficient `μ`, in [0, 1).
        mu: f32,
    },
    /// Adam (bias-corrected): `m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
    /// w ← w − η m̂ / (√v̂ + ε)` with `m̂ = m/(1−β1^t)`, `v̂ = v/(1−β2^t)`.
    Adam {
        /// First-moment decay `β1`.
        beta1: f32,
        /// Second-moment decay `β2`.
        beta2: f32,
        /// `ε` added to `√v̂` in the denominator.
        eps: f32,
    },
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
    /// The update rule without its hyper-parameters.
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
        // `t` as an f64 exponent: exact up to 2^53 steps, and never wrapped or truncated (an
        // `as i32` turned 2^31 steps into a negative power and 2^32 into t = 0).
        let t = t.max(1) as f64;
        StepHyper {
            lr,
            l2,
            momentum,
            beta1,
            beta2,
            eps,
            bias_correction1: (1.0 - (beta1 as f64).powf(t)) as f32,
            bias_correction2: (1.0 - (beta2 as f64).powf(t)) as f32,
        }
    }
    /// The lower-case name: `sgd`, `momentum` or `adam`.
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
#[non_exhaustive]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// Classical momentum.
    Momentum,
    /// Adam.
    Adam,
}

impl OptimizerKind {
    /// The integer the WGSL `OPT` constant takes: 1 (SGD), 2 (momentum), 3 (Adam).
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
    /// Learning rate `η` for this step.
    pub lr: f32,
    /// L2 strength `λ`, applied to weights only.
    pub l2: f32,
    /// Momentum `μ` (0 unless momentum).
    pub momentum: f32,
    /// Adam's `β1`.
    pub beta1: f32,
    /// Adam's `β2`.
    pub beta2: f32,
    /// Adam's `ε`.
    pub eps: f32,
    /// `1 − β1^t`
    pub bias_correction1: f32,
    /// `1 − β2^t`
    pub bias_correction2: f32,
}

/// Learning rate as a function of the epoch (0-based), constant within an epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// `η_e = η`
    Constant,
    /// `η_e = η · γ^⌊e / every⌋`
    Step {
        /// Epochs between decays.
        every: usize,
        /// Factor `γ` applied at each decay.
        gamma: f32,
    },
    /// `η_e = η · γ^e`
    Exponential {
        /// Per-epoch factor `γ`.
        gamma: f32,
    },
    /// `η_e = η / (e + 1)^power`
    InverseScaling {
        /// Exponent of `(e + 1)`.
        power: f32,
    },
    /// Cosine decay over `epochs` epochs after `warmup` epochs of linear warm-up:
    /// `η_e = η·(e + 1)/W` for `e < W`, then `η·½(1 + cos(π·(e − W)/(T − W)))`, held at its
    /// epoch-`T − 1` value after `T` (so the rate never reaches 0).
    Cosine {
        /// `T`: the epoch by which the decay ends (warm-up included).
        epochs: usize,
        /// `W`: epochs of linear warm-up.
        warmup: usize,
    },
    /// Reduce on plateau: the rate is multiplied by `factor` whenever the monitored loss (the
    /// validation loss where there is a validation set, else the training loss) has not improved
    /// for `patience` epochs. The trainer keeps the state ([`PlateauState`]); `lr` here is the
    /// undecayed rate.
    Plateau {
        /// Multiplier applied to the rate on each plateau.
        factor: f32,
        /// Epochs without improvement before the rate is reduced.
        patience: usize,
    },
}

/// The bookkeeping of [`Schedule::Plateau`]: the current multiplier, the best loss and the
/// epochs waited since. A resumed run rebuilds it by replaying the losses of its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauState {
    /// The current multiplier of the base learning rate (1 at the start).
    pub scale: f64,
    best: f64,
    waited: usize,
}

impl Default for PlateauState {
    fn default() -> Self {
        PlateauState {
            scale: 1.0,
            best: f64::INFINITY,
            waited: 0,
        }
    }
}

impl PlateauState {
    /// Records one epoch's monitored `loss` under `schedule` (a no-op for other schedules).
    pub fn update(&mut self, schedule: &Schedule, loss: f64) {
        let Schedule::Plateau { factor, patience } = *schedule else {
            return;
        };
        if loss < self.best {
            self.best = loss;
            self.waited = 0;
            return;
        }
        self.waited += 1;
        if self.waited >= patience {
            self.scale *= factor as f64;
            self.waited = 0;
        }
    }
}

impl Schedule {
    /// The learning rate for epoch `epoch` (0-based) from the base rate `lr`.
    pub fn lr(&self, lr: f32, epoch: usize) -> f32 {
        let e = epoch as f64;
        let lr = lr as f64;
        (match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => {
                lr * (gamma as f64).powf((epoch / every.max(1)) as f64)
            }
            Schedule::Exponential { gamma } => lr * (gamma as f64).powf(e),
            Schedule::InverseScaling { power } => lr / (e + 1.0).powf(power as f64),
            Schedule::Cosine { epochs, warmup } => {
                if epoch < warmup {
                    lr * (e + 1.0) / warmup as f64
                } else {
                    let span = epochs.saturating_sub(warmup).max(1) as f64;
                    let t = (epoch.min(epochs.saturating_sub(1)) - warmup.min(epoch)) as f64;
                    lr * 0.5 * (1.0 + (std::f64::consts::PI * t / span).cos())
                }
            }
            Schedule::Plateau { .. } => lr,
        }) as f32
    }
}

/// The largest `invscaling:POWER` accepted (at 8 the rate falls 256-fold by epoch 2).
pub const MAX_INVSCALING_POWER: f32 = 8.0;

impl FromStr for Schedule {
    type Err = Error;
    /// `constant`, `step:EVERY:GAMMA`, `exp:GAMMA`, `invscaling:POWER`,
    /// `cosine:EPOCHS[:WARMUP]`, `plateau:FACTOR:PATIENCE`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let text = ScheduleText(s);
        match parts.as_slice() {
            ["constant"] => Ok(Schedule::Constant),
            ["step", every, g] => text.step(every, g),
            ["exp", g] => Ok(Schedule::Exponential {
                gamma: text.gamma(g)?,
            }),
            ["cosine", rest @ ..] if rest.len() <= 2 && !rest.is_empty() => text.cosine(rest),
            ["plateau", f, p] => text.plateau(f, p),
            ["invscaling", p] => text.invscaling(p),
            _ => Err(Error::InvalidConfig(format!(
                "unknown schedule '{s}': use constant, step:EVERY:GAMMA, exp:GAMMA, invscaling:POWER, cosine:EPOCHS[:WARMUP] or plateau:FACTOR:PATIENCE"
            ))),
        }
    }
}

/// A schedule's text as given, which every parse error quotes; its methods parse the fields
/// after the schedule's name.
struct ScheduleText<'a>(&'a str);

impl ScheduleText<'_> {
    /// `message` about this schedule, as an error.
    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::InvalidConfig(format!("schedule '{}': {message}", self.0))
    }

    /// A finite number.
    fn num(&self, p: &str) -> Result<f32> {
        p.parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.err(format!("'{p}' is not a number")))
    }

    /// A decay factor GAMMA in (0, 1]. A schedule decays the rate: anything else either grows
    /// the rate until training diverges or zeroes it at once.
    fn gamma(&self, p: &str) -> Result<f32> {
        let g = self.num(p)?;
        if g > 0.0 && g <= 1.0 {
            Ok(g)
        } else {
            Err(self.err(format!(
                "GAMMA is {p}, but it must be in (0, 1]: each decay multiplies the learning rate by GAMMA (e.g. 0.5 halves it); 0 or less would stop or reverse training, more than 1 grows the rate until training diverges"
            )))
        }
    }

    /// `step:EVERY:GAMMA`.
    fn step(&self, every: &str, g: &str) -> Result<Schedule> {
        let every = every
            .parse::<usize>()
            .ok()
            .filter(|&e| e > 0)
            .ok_or_else(|| self.err("EVERY must be a whole number ≥ 1"))?;
        Ok(Schedule::Step {
            every,
            gamma: self.gamma(g)?,
        })
    }

    /// `cosine:EPOCHS[:WARMUP]`, `rest` being EPOCHS and the optional WARMUP.
    fn cosine(&self, rest: &[&str]) -> Result<Schedule> {
        let whole = |p: &str, what: &str| -> Result<usize> {
            p.parse::<usize>()
                .map_err(|_| self.err(format!("{what} must be a whole number of epochs")))
        };
        let epochs = whole(rest[0], "EPOCHS")?;
        let warmup = rest.get(1).map_or(Ok(0), |w| whole(w, "WARMUP"))?;
        if epochs == 0 || warmup >= epochs {
            return Err(self.err(
                "cosine:EPOCHS[:WARMUP] needs EPOCHS ≥ 1 and WARMUP < EPOCHS (the decay spans the epochs after the warm-up)",
            ));
        }
        Ok(Schedule::Cosine { epochs, warmup })
    }

    /// `plateau:FACTOR:PATIENCE`.
    fn plateau(&self, f: &str, p: &str) -> Result<Schedule> {
        let factor = self.num(f)?;
        if !(factor > 0.0 && factor < 1.0) {
            return Err(self.err(format!(
                "FACTOR is {f}, but it must be in (0, 1): on a plateau the rate is multiplied by it"
            )));
        }
        let patience = p
            .parse::<usize>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| self.err("PATIENCE must be a whole number of epochs ≥ 1"))?;
        Ok(Schedule::Plateau { factor, patience })
    }

    /// `invscaling:POWER`, POWER in [0, [`MAX_INVSCALING_POWER`]].
    fn invscaling(&self, p: &str) -> Result<Schedule> {
        let power = self.num(p)?;
        if !(0.0..=MAX_INVSCALING_POWER).contains(&power) {
            return Err(self.err(format!(
                "POWER is {p}, but it must be in [0, {MAX_INVSCALING_POWER}]: the learning rate at epoch e is lr / e^POWER (0.5 is usual); a negative power grows the rate until training diverges"
            )));
        }
        Ok(Schedule::InverseScaling { power })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays_and_never_reaches_zero() {
        let c: Schedule = "cosine:10:2".parse().unwrap();
        let lr = |e| c.lr(1.0, e) as f64;
        assert!(
            (lr(0) - 0.5).abs() < 1e-6 && (lr(1) - 1.0).abs() < 1e-6,
            "linear warm-up"
        );
        assert!(
            (lr(2) - 1.0).abs() < 1e-6,
            "the decay starts at the full rate"
        );
        let mid = 0.5 * (1.0 + (std::f64::consts::PI * 4.0 / 8.0).cos());
        assert!((lr(6) - mid).abs() < 1e-6);
        assert!(lr(9) > 0.0 && lr(9) < 0.05);
        assert_eq!(lr(9), lr(50), "held after the last epoch");
        for bad in [
            "cosine:0",
            "cosine:5:5",
            "cosine:x",
            "cosine:5:1:2",
            "cosine",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plateau_multiplies_the_rate_after_patience_epochs_without_improvement() {
        let p: Schedule = "plateau:0.5:2".parse().unwrap();
        let mut st = PlateauState::default();
        for loss in [1.0, 0.8, 0.9, 0.85] {
            st.update(&p, loss);
        }
        assert_eq!(st.scale, 0.5, "two epochs without beating 0.8");
        st.update(&p, 0.9);
        assert_eq!(st.scale, 0.5);
        st.update(&p, 0.9);
        assert_eq!(st.scale, 0.25);
        st.update(&p, 0.1);
        assert_eq!(
            st.scale, 0.25,
            "an improvement resets the wait, not the rate"
        );
        let mut other = PlateauState::default();
        other.update(&Schedule::Constant, 1.0);
        other.update(&Schedule::Constant, 2.0);
        assert_eq!(other.scale, 1.0);
        for bad in ["plateau:1:2", "plateau:0:2", "plateau:0.5:0", "plateau:0.5"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn adam_bias_correction_is_right_past_two_to_the_31_steps() {
        let adam = Optimizer::adam();
        for t in [1u64 << 31, (1 << 31) + 1, 1 << 32, u64::MAX] {
            let h = adam.hyper(0.001, t, 0.0);
            assert_eq!(h.bias_correction1, 1.0, "t = {t}");
            assert_eq!(h.bias_correction2, 1.0, "t = {t}");
        }
        let h = adam.hyper(0.001, 1, 0.0);
        assert!((h.bias_correction1 - 0.1).abs() < 1e-6);
        let h = adam.hyper(0.001, 1000, 0.0);
        assert!((h.bias_correction2 as f64 - (1.0 - (0.999f32 as f64).powi(1000))).abs() < 1e-6);
    }

    #[test]
    fn schedules_that_grow_or_zero_the_rate_are_refused_when_parsed() {
        for bad in [
            "exp:1e30",
            "exp:-1",
            "exp:0",
            "exp:1.5",
            "step:1:0",
            "step:2:-0.5",
            "step:1:2",
            "invscaling:-100",
            "invscaling:1e9",
        ] {
            let e = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("must be in"), "{bad}: {e}");
        }
        for good in [
            "constant",
            "exp:0.9",
            "exp:1",
            "step:10:0.5",
            "invscaling:0.5",
            "invscaling:0",
        ] {
            good.parse::<Schedule>().unwrap();
        }
    }

    #[test]
    fn a_step_schedule_far_out_does_not_wrap() {
        let s = Schedule::Step {
            every: 1,
            gamma: 0.5,
        };
        // (epoch / every) as i32 wrapped to a negative power at 2^31 epochs: a huge rate.
        assert!(s.lr(1.0, (1usize << 32) + 1) <= 1.0);
    }
}
