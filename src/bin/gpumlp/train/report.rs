//! What `gpumlp train` prints about its run: the resume and training lines before, each
//! epoch's line, and the outcome (held-out metrics, the test set) after.

use super::Setup;
use crate::epochs::Finished;
use crate::rows::TrainRows;
use gpumlp::report::plot;
use gpumlp::{Dataset, EpochReport, Trainer};
use std::process::ExitCode;

/// An accuracy as a percentage with two decimals, or "-" where there is none.
pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |a| format!("{:.2}%", a * 100.0))
}

/// The line printed after each epoch where no progress bar shows.
pub(crate) fn epoch_line(r: &EpochReport, epochs: usize) -> String {
    let mut s = format!(
        "epoch {:>3}/{epochs}  loss {:.4}  acc {}",
        r.epoch,
        r.train_loss,
        percent(r.train_accuracy)
    );
    if let Some(v) = r.val_loss {
        s += &format!("  val_loss {:.4}  val_acc {}", v, percent(r.val_accuracy));
    }
    s + &format!("  lr {:.4}  {:.0} samples/s", r.lr, r.samples_per_second)
}

impl Setup {
    /// "resuming FILE after epoch N", unless `--quiet`.
    pub(super) fn announce_resume(&self) {
        let args = &self.args;
        if let (Some(ck), false) = (&self.resumed, args.quiet) {
            let done = ck.training.as_ref().map_or(0, |t| t.epoch);
            eprintln!(
                "gpumlp: resuming {} after epoch {done} of {}; checkpoints go to {}",
                args.resume.as_ref().expect("resumed").display(),
                args.epochs,
                args.out.as_ref().expect("resume sets --out").display()
            );
        }
    }

    /// "training SIZES (ACTIVATIONS, LOSS) on DEVICE | ...", unless `--quiet`.
    pub(super) fn announce(&self, train: &TrainRows, device_name: &str) {
        if self.args.quiet {
            return;
        }
        let spec = &self.spec;
        eprintln!(
            "gpumlp: training {} ({}, {}) on {} | {} train / {} validation samples, batch {}",
            spec.sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            spec.activations
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
            spec.loss,
            device_name,
            train.rows(),
            self.val_rows(),
            self.batch
        );
    }

    /// After the epochs: the plot, why training stopped early or which epoch's weights it kept,
    /// and (where `report` holds: this rank prints and an epoch was trained) the held-out
    /// accuracy or loss of the epoch the run ends with.
    pub(super) fn report_outcome(
        &self,
        finished: &Finished,
        report: bool,
        device_name: &str,
    ) -> anyhow::Result<()> {
        let (args, history) = (&self.args, &finished.history);
        if let Some(p) = &args.plot {
            plot(p, history, self.write)?;
        }
        if let (Some(why), false) = (&finished.stopped_early, args.quiet) {
            eprintln!("gpumlp: {why}");
        }
        if let (Some(best), true, false) = (finished.best_epoch, args.restore_best, args.quiet) {
            eprintln!(
                "gpumlp: restored the weights of epoch {best}, the best by --monitor {}",
                args.monitor
            );
        }
        // The epoch whose weights the run ends with: the best one where --restore-best restored it.
        let kept = match (finished.best_epoch, args.restore_best) {
            (Some(best), true) => history.iter().find(|r| r.epoch == best),
            _ => history.last(),
        };
        let (Some(last), true) = (kept, report) else {
            return Ok(());
        };
        match (last.val_loss, last.val_accuracy) {
            (Some(_), Some(acc)) => println!(
                "held-out accuracy: {:.2}% ({} samples) on {device_name}",
                acc * 100.0,
                self.val_rows()
            ),
            (Some(loss), None) => println!(
                "held-out loss: {loss:.6} ({} samples) on {device_name}",
                self.val_rows()
            ),
            // The mean of the last epoch's per-step losses, each taken before that step's update
            // (what training saw, not the final weights' loss: `eval` gives that).
            _ => println!(
                "mean training loss over the last epoch's steps (each before its update): {:.6} on {device_name}",
                last.train_loss
            ),
        }
        Ok(())
    }
}

/// The `--test` set's accuracy and loss under the trained weights. Every rank evaluates (a
/// distributed evaluation is collective); rank 0 prints.
pub(super) fn evaluate_test(
    trainer: &mut Trainer,
    test: &Dataset,
    root: bool,
) -> anyhow::Result<ExitCode> {
    let s = trainer.evaluate(test)?;
    if !root {
        return Ok(ExitCode::SUCCESS);
    }
    if test.classes().is_some() {
        println!(
            "test accuracy: {:.2}% ({} samples), test loss {:.4}",
            s.accuracy() * 100.0,
            s.samples,
            s.mean_loss()
        );
    } else {
        println!("test loss: {:.6} ({} samples)", s.mean_loss(), s.samples);
    }
    Ok(ExitCode::SUCCESS)
}
