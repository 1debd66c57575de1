//! Early stopping: which epoch was best by a monitored metric, and when to stop because it has
//! not improved for `patience` epochs. The `gpumlp` command's `--patience`, `--monitor`,
//! `--min-delta`, `--save-best` and `--restore-best` are this type plus a checkpoint.
//!
//! ```
//! use gpumlp::{EarlyStopping, Monitor, Verdict};
//! # use gpumlp::EpochReport;
//! # let report = |epoch, val_loss| EpochReport { epoch, train_loss: 1.0, train_accuracy: None,
//! #     val_loss: Some(val_loss), val_accuracy: None, lr: 0.1, seconds: 1.0, samples_per_second: 1.0 };
//! let mut stop = EarlyStopping::new(Monitor::ValLoss, 2, 0.0)?;
//! assert_eq!(stop.update(&report(1, 0.5))?, Verdict::Improved);
//! assert_eq!(stop.update(&report(2, 0.6))?, Verdict::Waiting);
//! assert_eq!(stop.update(&report(3, 0.7))?, Verdict::Stop);
//! assert_eq!(stop.best_epoch(), Some(1));
//! # Ok::<(), gpumlp::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::train::EpochReport;
use std::fmt;

/// The metric early stopping watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Monitor {
    /// Validation loss (lower is better).
    ValLoss,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Training loss, the mean over the epoch's steps (lower is better).
    TrainLoss,
}

impl Monitor {
    /// The metric's value in `r`, or an error naming what is missing.
    pub fn value(self, r: &EpochReport) -> Result<f64> {
        let v = match self {
            Monitor::ValLoss => r.val_loss,
            Monitor::ValAccuracy => r.val_accuracy,
            Monitor::TrainLoss => Some(r.train_loss),
        };
        v.ok_or_else(|| {
            Error::InvalidConfig(format!(
                "early stopping monitors {self}, which epoch {} did not report: {} needs a validation set (--val-split above 0){}",
                r.epoch,
                self,
                if self == Monitor::ValAccuracy { " and a classifier" } else { "" }
            ))
        })
    }

    fn higher_is_better(self) -> bool {
        self == Monitor::ValAccuracy
    }
}

impl fmt::Display for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::TrainLoss => "train_loss",
        })
    }
}

impl std::str::FromStr for Monitor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "val_loss" => Ok(Monitor::ValLoss),
            "val_accuracy" => Ok(Monitor::ValAccuracy),
            "train_loss" => Ok(Monitor::TrainLoss),
            other => Err(Error::InvalidConfig(format!(
                "unknown monitor '{other}': use val_loss, val_accuracy or train_loss"
            ))),
        }
    }
}

/// What one epoch meant for early stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The best epoch so far (by more than `min_delta`).
    Improved,
    /// No improvement, with patience left.
    Waiting,
    /// `patience` epochs without improvement: stop.
    Stop,
}

/// The bookkeeping of early stopping (see the module's example).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    min_delta: f64,
    best: Option<(usize, f64)>,
    waited: usize,
}

impl EarlyStopping {
    /// Stops after `patience` (≥ 1) epochs in which `monitor` did not improve on the best by
    /// more than `min_delta` (≥ 0).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a patience of 0 or a negative or non-finite `min_delta`.
    pub fn new(monitor: Monitor, patience: usize, min_delta: f64) -> Result<Self> {
        if patience == 0 {
            return Err(Error::InvalidConfig(
                "patience must be at least 1 epoch".into(),
            ));
        }
        if !(min_delta.is_finite() && min_delta >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "min-delta must be a number ≥ 0, got {min_delta}"
            )));
        }
        Ok(EarlyStopping {
            monitor,
            patience,
            min_delta,
            best: None,
            waited: 0,
        })
    }

    /// Records epoch `r`.
    ///
    /// # Errors
    /// The monitored metric is missing from `r` (see [`Monitor::value`]).
    pub fn update(&mut self, r: &EpochReport) -> Result<Verdict> {
        let v = self.monitor.value(r)?;
        let improved = match self.best {
            None => true,
            Some((_, best)) if self.monitor.higher_is_better() => v > best + self.min_delta,
            Some((_, best)) => v < best - self.min_delta,
        };
        if improved {
            self.best = Some((r.epoch, v));
            self.waited = 0;
            return Ok(Verdict::Improved);
        }
        self.waited += 1;
        Ok(if self.waited >= self.patience {
            Verdict::Stop
        } else {
            Verdict::Waiting
        })
    }

    /// The best epoch so far (1-based), if any.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|(e, _)| e)
    }

    /// The monitored value at the best epoch.
    pub fn best_value(&self) -> Option<f64> {
        self.best.map(|(_, v)| v)
    }

    /// The metric being monitored.
    pub fn monitor(&self) -> Monitor {
        self.monitor
    }

    /// Why training stops, for the user: e.g. `val_loss did not improve by more than 0 for 3
    /// epochs (best 0.1234 at epoch 4)`.
    pub fn reason(&self) -> String {
        let best = match self.best {
            Some((e, v)) => format!(" (best {v:.6} at epoch {e})"),
            None => String::new(),
        };
        format!(
            "{} did not improve by more than {} for {} epoch{}{best}",
            self.monitor,
            self.min_delta,
            self.patience,
            if self.patience == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(epoch: usize, val_loss: f64, val_accuracy: f64) -> EpochReport {
        EpochReport {
            epoch,
            train_loss: 1.0 / epoch as f64,
            train_accuracy: None,
            val_loss: Some(val_loss),
            val_accuracy: Some(val_accuracy),
            lr: 0.1,
            seconds: 1.0,
            samples_per_second: 1.0,
        }
    }

    #[test]
    fn stops_after_patience_epochs_without_an_improvement_above_min_delta() {
        let mut s = EarlyStopping::new(Monitor::ValLoss, 2, 0.01).unwrap();
        assert_eq!(s.update(&report(1, 1.0, 0.5)).unwrap(), Verdict::Improved);
        // 0.995 is better, but not by more than min_delta.
        assert_eq!(s.update(&report(2, 0.995, 0.5)).unwrap(), Verdict::Waiting);
        assert_eq!(s.update(&report(3, 0.5, 0.5)).unwrap(), Verdict::Improved);
        assert_eq!(s.update(&report(4, 0.6, 0.5)).unwrap(), Verdict::Waiting);
        assert_eq!(s.update(&report(5, 0.7, 0.5)).unwrap(), Verdict::Stop);
        assert_eq!(s.best_epoch(), Some(3));
        assert!(
            s.reason().contains("best 0.500000 at epoch 3"),
            "{}",
            s.reason()
        );
    }

    #[test]
    fn accuracy_is_better_when_higher() {
        let mut s = EarlyStopping::new(Monitor::ValAccuracy, 1, 0.0).unwrap();
        assert_eq!(s.update(&report(1, 1.0, 0.5)).unwrap(), Verdict::Improved);
        assert_eq!(s.update(&report(2, 9.0, 0.6)).unwrap(), Verdict::Improved);
        assert_eq!(s.update(&report(3, 0.1, 0.6)).unwrap(), Verdict::Stop);
        assert_eq!(s.best_epoch(), Some(2));
    }

    #[test]
    fn a_missing_metric_and_bad_settings_are_errors() {
        let mut s = EarlyStopping::new(Monitor::ValLoss, 1, 0.0).unwrap();
        let mut r = report(1, 1.0, 0.5);
        r.val_loss = None;
        assert!(s
            .update(&r)
            .unwrap_err()
            .to_string()
            .contains("--val-split"));
        assert!(EarlyStopping::new(Monitor::ValLoss, 0, 0.0).is_err());
        assert!(EarlyStopping::new(Monitor::ValLoss, 1, -1.0).is_err());
        assert!(EarlyStopping::new(Monitor::ValLoss, 1, f64::NAN).is_err());
        assert!("val_los".parse::<Monitor>().is_err());
    }
}
