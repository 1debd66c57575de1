//! `gpumlp train --resume`: the saved run's arguments, with what this command may change, and
//! a clear refusal of any model or training flag that contradicts the checkpoint.

use crate::train::{build_config, TrainArgs};
use anyhow::{bail, Context};
use gpumlp::checkpoint::Checkpoint;
use gpumlp::{Activation, Schedule};
use std::path::{Path, PathBuf};

/// The arguments of a resumed run: the saved run's, so that it continues as if it had never
/// stopped. Where this command gives `--epochs`, `--test`, `--device`, `--backend`, `--adapter`
/// or `--devices`, its value wins; `--out`, `--metrics`, `--plot`, `--force`, `--quiet` and `--verify` are only ever this
/// command's (`--out` defaults to the resumed file itself). A
/// model or training flag that is given must agree with the checkpoint.
pub fn resume_args(cli: &TrainArgs, ck: &Checkpoint) -> anyhow::Result<TrainArgs> {
    let path = cli.resume.as_ref().expect("resume");
    let state = ck.training.as_ref().with_context(|| format!("{}: holds no training state: resume needs a checkpoint written by `gpumlp train --out`", path.display()))?;
    let saved = state
        .extra
        .get("args")
        .with_context(|| format!("{}: the run's arguments are missing", path.display()))?;
    let mut args: TrainArgs = serde_json::from_str(saved)
        .with_context(|| format!("{}: unreadable run arguments", path.display()))?;
    check_resume_conflicts(cli, &args, ck, path)?;
    let given = |id: &str| cli.given.contains(id);
    if given("epochs") {
        args.epochs = cli.epochs;
    }
    // A checkpoint never chooses where we write: its stored paths may be stale, relative to
    // another folder, or planted. Checkpoints go to --out as given now, else back to the
    // resumed file; metrics and plots only where this command asks for them.
    args.out = Some(cli.out.clone().unwrap_or_else(|| path.clone()));
    args.metrics = cli.metrics.clone();
    args.plot = cli.plot.clone();
    if given("test") {
        args.test = cli.test.clone();
    }
    if given("device") || given("backend") || given("adapter") {
        args.device = cli.device.clone();
        args.devices = None;
    }
    if given("devices") {
        args.devices = cli.devices.clone();
    }
    // How the data's CSV is split is not part of the model: a given flag wins.
    if given("delimiter") {
        args.csv.delimiter = cli.csv.delimiter.clone();
    }
    if given("header") {
        args.csv.header = cli.csv.header;
    }
    args.quiet = cli.quiet;
    args.force = cli.force;
    args.verify = cli.verify;
    args.distributed = cli.distributed;
    args.resume = cli.resume.clone();
    args.given = cli.given.clone();
    // The optimizer's state must be in the file: a missing tensor would silently restart its
    // moments (or fail later without naming the file).
    let optimizer = build_config(&args)?.optimizer;
    let p = ck.spec.param_count();
    for (slot, name, have) in [
        (1, "optimizer.m", &state.optimizer.m),
        (2, "optimizer.v", &state.optimizer.v),
    ] {
        let needed = optimizer.state_slots() >= slot;
        if needed && have.len() != p {
            bail!(
                "--resume {}: tensor '{name}' is missing, but the run's optimizer ({}) needs it ({p} values): the checkpoint is damaged or was not written by `gpumlp train --out`",
                path.display(),
                optimizer.name()
            );
        }
        if !needed && !have.is_empty() {
            bail!(
                "--resume {}: tensor '{name}' is present, but the run's optimizer ({}) has no such state: the file's tensors and its saved arguments disagree",
                path.display(),
                optimizer.name()
            );
        }
    }
    if args.epochs < state.epoch {
        bail!(
            "--resume {}: --epochs {} is fewer than the {} epochs this checkpoint has already trained (--epochs counts the total, those done included)",
            path.display(),
            args.epochs,
            state.epoch
        );
    }
    Ok(args)
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses a model or training flag given with `--resume` that differs from the saved run,
/// naming the flag, the saved value and the requested one.
fn check_resume_conflicts(
    cli: &TrainArgs,
    saved: &TrainArgs,
    ck: &Checkpoint,
    path: &Path,
) -> anyhow::Result<()> {
    let given = |id: &str| cli.given.contains(id);
    let conflict = |flag: &str, had: String, asked: String| -> anyhow::Result<()> {
        bail!(
            "--resume {}: --{flag} {asked} was requested, but the checkpoint's run has --{flag} {had}: leave --{flag} out to continue the saved run, or start a new run without --resume",
            path.display()
        )
    };
    let acts = &ck.spec.activations;
    let (hidden, out_act) = acts.split_at(acts.len() - 1);
    let out_act = out_act[0];
    if given("data") && cli.data != saved.data {
        conflict("data", saved.data.clone(), cli.data.clone())?;
    }
    if let (true, Some(layers)) = (given("layers"), &cli.layers) {
        if layers.0 != ck.spec.sizes {
            conflict("layers", join(&ck.spec.sizes), join(&layers.0))?;
        }
    }
    if given("activation") {
        let asked: Vec<Activation> = cli
            .activation
            .split(',')
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        let same = asked.as_slice() == hidden
            || (asked.len() == 1 && hidden.iter().all(|a| *a == asked[0]));
        if !same {
            let had: Vec<String> = hidden.iter().map(|a| a.name()).collect();
            conflict("activation", had.join(","), cli.activation.clone())?;
        }
    }
    // `auto` agrees with a saved `auto`; a named choice agrees with what the model has.
    let described = |saved: String, actual: String| {
        if saved == "auto" {
            format!("auto (= {actual})")
        } else {
            saved
        }
    };
    if given("output_activation") && cli.output_activation != saved.output_activation {
        let same = cli.output_activation.activation() == Some(out_act);
        if !same {
            conflict(
                "output-activation",
                described(saved.output_activation.to_string(), out_act.name()),
                cli.output_activation.to_string(),
            )?;
        }
    }
    if given("loss") && cli.loss != saved.loss {
        let same = cli.loss.loss() == Some(ck.spec.loss);
        if !same {
            conflict(
                "loss",
                described(saved.loss.to_string(), ck.spec.loss.name().into()),
                cli.loss.to_string(),
            )?;
        }
    }
    if given("optimizer") && cli.optimizer != saved.optimizer {
        conflict(
            "optimizer",
            saved.optimizer.to_string(),
            cli.optimizer.to_string(),
        )?;
    }
    if let (true, Some(lr)) = (given("lr"), cli.lr) {
        let had = build_config(saved)?.lr;
        if lr != had {
            conflict("lr", had.to_string(), lr.to_string())?;
        }
    }
    for (id, flag, had, asked) in [
        ("momentum", "momentum", saved.momentum, cli.momentum),
        ("l2", "l2", saved.l2, cli.l2),
        ("val_split", "val-split", saved.val_split, cli.val_split),
    ] {
        if given(id) && had != asked {
            conflict(flag, had.to_string(), asked.to_string())?;
        }
    }
    if given("schedule") && cli.schedule.parse::<Schedule>()? != saved.schedule.parse()? {
        conflict("schedule", saved.schedule.clone(), cli.schedule.clone())?;
    }
    if given("batch") && cli.batch != saved.batch {
        conflict("batch", saved.batch.to_string(), cli.batch.to_string())?;
    }
    if given("seed") && cli.seed != saved.seed {
        conflict("seed", saved.seed.to_string(), cli.seed.to_string())?;
    }
    if given("no_shuffle") && !saved.no_shuffle {
        bail!(
            "--resume {}: --no-shuffle was requested, but the checkpoint's run shuffled: leave --no-shuffle out to continue the saved run, or start a new run without --resume",
            path.display()
        );
    }
    if given("normalize") && cli.normalize != saved.normalize {
        conflict(
            "normalize",
            saved.normalize.to_string(),
            cli.normalize.to_string(),
        )?;
    }
    if given("init") && cli.init != saved.init {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        };
        conflict("init", show(&saved.init), show(&cli.init))?;
    }
    Ok(())
}
