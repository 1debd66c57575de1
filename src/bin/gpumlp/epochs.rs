//! `gpumlp train`'s epoch loop: progress, checkpoints, the metrics log, early stopping and the
//! best epoch's weights.

use crate::train::TrainArgs;
use anyhow::Context;
use gpumlp::checkpoint::{Checkpoint, TrainingState};
use gpumlp::data::Normalization;
use gpumlp::files::WriteOptions;
use gpumlp::report::{MetricsLog, MetricsRecord};
use gpumlp::{Dataset, EarlyStopping, EpochReport, ModelSpec, Monitor, Trainer, Verdict};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

/// What the loop needs besides the trainer.
pub struct Run<'a> {
    pub args: &'a TrainArgs,
    pub spec: &'a ModelSpec,
    pub norm: &'a Normalization,
    pub val: Option<&'a Dataset>,
    /// The label vocabulary of string class labels.
    pub class_names: Option<Vec<String>>,
    pub write: WriteOptions,
}

/// How the loop ended.
pub struct Finished {
    /// Every epoch's record, a resumed run's earlier ones included.
    pub history: Vec<MetricsRecord>,
    /// Why training stopped before `--epochs`, if it did.
    pub stopped_early: Option<String>,
    /// The best epoch by `--monitor`, where early stopping or `--save-best` tracked it.
    pub best_epoch: Option<usize>,
}

/// The early-stopping bookkeeping the flags ask for (`--patience`, `--save-best` or
/// `--restore-best` track the best epoch), replayed over a resumed run's earlier epochs.
fn early_stopping(
    args: &TrainArgs,
    history: &[MetricsRecord],
) -> anyhow::Result<Option<EarlyStopping>> {
    let tracked = args.patience.is_some() || args.save_best.is_some() || args.restore_best;
    if !tracked {
        return Ok(None);
    }
    let monitor: Monitor = args.monitor.monitor();
    let mut stop =
        EarlyStopping::new(monitor, args.patience.unwrap_or(usize::MAX), args.min_delta)?;
    for r in history {
        stop.update(&report_of(r))?;
    }
    Ok(Some(stop))
}

pub(crate) fn report_of(r: &MetricsRecord) -> EpochReport {
    EpochReport {
        epoch: r.epoch,
        train_loss: r.train_loss,
        train_accuracy: r.train_accuracy,
        val_loss: r.val_loss,
        val_accuracy: r.val_accuracy,
        lr: r.lr,
        seconds: r.seconds,
        samples_per_second: r.samples_per_second,
    }
}

impl Run<'_> {
    /// The checkpoint of where `trainer` stands now.
    fn checkpoint(
        &self,
        trainer: &mut Trainer,
        history: &[MetricsRecord],
    ) -> anyhow::Result<Checkpoint> {
        let mut extra = HashMap::new();
        extra.insert("args".to_string(), serde_json::to_string(self.args)?);
        extra.insert("history".to_string(), serde_json::to_string(history)?);
        Ok(Checkpoint {
            spec: self.spec.clone(),
            params: trainer.params()?,
            normalization: Some(self.norm.clone()),
            class_names: self.class_names.clone(),
            training: Some(TrainingState {
                epoch: trainer.epoch(),
                steps: trainer.steps(),
                seed: self.args.seed,
                optimizer: trainer.backend().optimizer_state()?,
                extra,
            }),
        })
    }

    /// Trains until `--epochs` (or early stopping), writing every output as it goes.
    pub fn train(
        &self,
        trainer: &mut Trainer,
        mut history: Vec<MetricsRecord>,
    ) -> anyhow::Result<Finished> {
        let args = self.args;
        let mut stop = early_stopping(args, &history)?;
        let mut metrics = match &args.metrics {
            Some(m) => Some(MetricsLog::create(m, &history, self.write)?),
            None => None,
        };
        if trainer.epoch() >= args.epochs {
            self.nothing_to_train(trainer, &history)?;
        }
        let bar = self.progress_bar(trainer);
        let mut best: Option<Checkpoint> = None;
        let mut stopped_early = None;
        while trainer.epoch() < args.epochs {
            let r = match &bar {
                Some(b) => trainer.run_epoch_observed(self.val, |_, _| b.inc(1))?,
                None => trainer.run_epoch(self.val)?,
            };
            let verdict = match &mut stop {
                Some(s) => Some(s.update(&r)?),
                None => None,
            };
            let mut record = MetricsRecord::from(&r);
            record.best_epoch = stop.as_ref().and_then(|s| s.best_epoch());
            history.push(record.clone());
            self.show_progress(bar.as_ref(), trainer, &r);
            if let Some(ck) = self.save_checkpoints(trainer, &history, verdict)? {
                best = Some(ck);
            }
            if let Some(m) = &mut metrics {
                m.append(&record)?;
            }
            if verdict == Some(Verdict::Stop) {
                let why = stop.as_ref().map(|s| s.reason()).unwrap_or_default();
                stopped_early = Some(format!("stopped early after epoch {}: {why}", r.epoch));
                break;
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        if let Some(ck) = best {
            trainer.backend().set_params(&ck.params)?;
            if let Some(out) = &args.out {
                ck.save_with(out, self.write)?;
            }
        }
        Ok(Finished {
            history,
            stopped_early,
            best_epoch: stop.as_ref().and_then(|s| s.best_epoch()),
        })
    }

    /// A resumed run that has already trained every epoch asked for: nothing to train, but
    /// the requested checkpoint is still written (as it is).
    fn nothing_to_train(
        &self,
        trainer: &mut Trainer,
        history: &[MetricsRecord],
    ) -> anyhow::Result<()> {
        let args = self.args;
        if !args.quiet {
            eprintln!(
                "gpumlp: nothing to train: {} has already trained {} of --epochs {} (--epochs counts the total; give a larger one to train more)",
                args.resume.as_ref().map_or("the run".into(), |p| p.display().to_string()),
                trainer.epoch(),
                args.epochs
            );
        }
        if let Some(out) = &args.out {
            self.checkpoint(trainer, history)?
                .save_with(out, self.write)?;
            if !args.quiet {
                eprintln!(
                    "gpumlp: wrote the checkpoint unchanged to {}",
                    out.display()
                );
            }
        }
        Ok(())
    }

    /// The epoch just trained (`r`) on the progress bar, or as a line where there is none
    /// (unless `--quiet`).
    fn show_progress(&self, bar: Option<&ProgressBar>, trainer: &Trainer, r: &EpochReport) {
        let epochs = self.args.epochs;
        match bar {
            Some(b) => {
                b.set_position(r.epoch as u64 * trainer.steps_per_epoch() as u64);
                b.set_message(progress_message(r, epochs));
            }
            None if !self.args.quiet => eprintln!("{}", crate::train::epoch_line(r, epochs)),
            None => {}
        }
    }

    /// After an epoch: the checkpoint to `--out`, and where the epoch improved on the best,
    /// to `--save-best`; returns it where `--restore-best` keeps it.
    fn save_checkpoints(
        &self,
        trainer: &mut Trainer,
        history: &[MetricsRecord],
        verdict: Option<Verdict>,
    ) -> anyhow::Result<Option<Checkpoint>> {
        let args = self.args;
        let keeps_best =
            verdict == Some(Verdict::Improved) && (args.save_best.is_some() || args.restore_best);
        let ck = match args.out.is_some() || keeps_best {
            true => Some(self.checkpoint(trainer, history)?),
            false => None,
        };
        if let (Some(out), Some(ck)) = (&args.out, &ck) {
            ck.save_with(out, self.write)?;
        }
        // (A distributed run's other ranks keep no best checkpoint: rank 0 writes it.)
        if !keeps_best {
            return Ok(None);
        }
        let ck = ck.context("a checkpoint of the best epoch")?;
        if let Some(path) = &args.save_best {
            ck.save_with(path, self.write)?;
        }
        Ok(args.restore_best.then_some(ck))
    }

    /// On a terminal: a bar over every step of the run that advances as each step is queued,
    /// with steps/s, the ETA and the last epoch's metrics.
    fn progress_bar(&self, trainer: &Trainer) -> Option<ProgressBar> {
        let args = self.args;
        (!args.quiet && std::io::stderr().is_terminal()).then(|| {
            let per_epoch = trainer.steps_per_epoch() as u64;
            let bar = ProgressBar::new(args.epochs as u64 * per_epoch);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} step {pos}/{len} {per_sec} ETA {eta} {msg}")
                    .expect("valid template"),
            );
            bar.set_position(trainer.epoch() as u64 * per_epoch);
            bar
        })
    }
}

fn progress_message(r: &EpochReport, epochs: usize) -> String {
    format!(
        "| epoch {}/{epochs} loss {:.4} acc {} val_acc {} {:.0} samples/s",
        r.epoch,
        r.train_loss,
        crate::train::percent(r.train_accuracy),
        crate::train::percent(r.val_accuracy),
        r.samples_per_second
    )
}
