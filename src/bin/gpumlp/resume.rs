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
    Conflicts {
        cli,
        saved: &args,
        ck,
        path,
    }
    .check()?;
    take_this_commands(&mut args, cli, path);
    check_optimizer_state(&args, ck, path)?;
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

/// Sets in the saved run's `args` what this command (`cli`) decides: the flags it may change
/// where it gives them, and those that are only ever its own.
fn take_this_commands(args: &mut TrainArgs, cli: &TrainArgs, path: &Path) {
    let given = |id: &str| cli.given.contains(id);
    if given("epochs") {
        args.epochs = cli.epochs;
    }
    // A checkpoint never chooses where we write: its stored paths may be stale, relative to
    // another folder, or planted. Checkpoints go to --out as given now, else back to the
    // resumed file; metrics and plots only where this command asks for them.
    args.out = Some(cli.out.clone().unwrap_or_else(|| path.to_path_buf()));
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
}

/// The optimizer's state must be in the file: a missing tensor would silently restart its
/// moments (or fail later without naming the file); one the optimizer has no use for means the
/// tensors and the saved arguments disagree.
fn check_optimizer_state(args: &TrainArgs, ck: &Checkpoint, path: &Path) -> anyhow::Result<()> {
    let state = ck.training.as_ref().expect("checked by resume_args");
    let optimizer = build_config(args)?.optimizer;
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
    Ok(())
}

/// Sizes or values joined with commas, as the flags write them.
fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A model or training flag given with `--resume` (`cli`) checked against the saved run.
struct Conflicts<'a> {
    cli: &'a TrainArgs,
    saved: &'a TrainArgs,
    ck: &'a Checkpoint,
    path: &'a Path,
}

impl Conflicts<'_> {
    /// Refuses a model or training flag given with `--resume` that differs from the saved
    /// run, naming the flag, the saved value and the requested one.
    fn check(&self) -> anyhow::Result<()> {
        self.model()?;
        self.training()?;
        self.preparation()
    }

    /// Whether this command gives the flag of clap id `id`.
    fn given(&self, id: &str) -> bool {
        self.cli.given.contains(id)
    }

    /// The refusal of `--flag asked` where the saved run had `--flag had`.
    fn conflict(&self, flag: &str, had: String, asked: String) -> anyhow::Result<()> {
        bail!(
            "--resume {}: --{flag} {asked} was requested, but the checkpoint's run has --{flag} {had}: leave --{flag} out to continue the saved run, or start a new run without --resume",
            self.path.display()
        )
    }

    /// `--data`, `--layers`, `--activation`, `--output-activation` and `--loss`.
    fn model(&self) -> anyhow::Result<()> {
        let (cli, saved, spec) = (self.cli, self.saved, &self.ck.spec);
        let acts = &spec.activations;
        let (hidden, out_act) = acts.split_at(acts.len() - 1);
        let out_act = out_act[0];
        if self.given("data") && cli.data != saved.data {
            self.conflict("data", saved.data.clone(), cli.data.clone())?;
        }
        if let (true, Some(layers)) = (self.given("layers"), &cli.layers) {
            if layers.0 != spec.sizes {
                self.conflict("layers", join(&spec.sizes), join(&layers.0))?;
            }
        }
        if self.given("activation") {
            let asked: Vec<Activation> = cli
                .activation
                .split(',')
                .map(|a| a.parse())
                .collect::<Result<_, _>>()?;
            let same = asked.as_slice() == hidden
                || (asked.len() == 1 && hidden.iter().all(|a| *a == asked[0]));
            if !same {
                let had: Vec<String> = hidden.iter().map(|a| a.name()).collect();
                self.conflict("activation", had.join(","), cli.activation.clone())?;
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
        let asked = cli.output_activation;
        if self.given("output_activation")
            && asked != saved.output_activation
            && asked.activation() != Some(out_act)
        {
            let had = described(saved.output_activation.to_string(), out_act.name());
            self.conflict("output-activation", had, asked.to_string())?;
        }
        if self.given("loss") && cli.loss != saved.loss && cli.loss.loss() != Some(spec.loss) {
            let had = described(saved.loss.to_string(), spec.loss.name().into());
            self.conflict("loss", had, cli.loss.to_string())?;
        }
        Ok(())
    }

    /// `--optimizer`, `--lr`, `--momentum`, `--l2`, `--val-split`, `--schedule`, `--batch`
    /// and `--seed`.
    fn training(&self) -> anyhow::Result<()> {
        let (cli, saved) = (self.cli, self.saved);
        if self.given("optimizer") && cli.optimizer != saved.optimizer {
            let had = saved.optimizer.to_string();
            self.conflict("optimizer", had, cli.optimizer.to_string())?;
        }
        if let (true, Some(lr)) = (self.given("lr"), cli.lr) {
            let had = build_config(saved)?.lr;
            if lr != had {
                self.conflict("lr", had.to_string(), lr.to_string())?;
            }
        }
        for (id, flag, had, asked) in [
            ("momentum", "momentum", saved.momentum, cli.momentum),
            ("l2", "l2", saved.l2, cli.l2),
            ("val_split", "val-split", saved.val_split, cli.val_split),
        ] {
            if self.given(id) && had != asked {
                self.conflict(flag, had.to_string(), asked.to_string())?;
            }
        }
        let schedule = |s: &str| s.parse::<Schedule>();
        if self.given("schedule") && schedule(&cli.schedule)? != schedule(&saved.schedule)? {
            self.conflict("schedule", saved.schedule.clone(), cli.schedule.clone())?;
        }
        if self.given("batch") && cli.batch != saved.batch {
            self.conflict("batch", saved.batch.to_string(), cli.batch.to_string())?;
        }
        if self.given("seed") && cli.seed != saved.seed {
            self.conflict("seed", saved.seed.to_string(), cli.seed.to_string())?;
        }
        Ok(())
    }

    /// `--no-shuffle`, `--normalize` and `--init`: how the data and the starting weights
    /// reach the model.
    fn preparation(&self) -> anyhow::Result<()> {
        let (cli, saved) = (self.cli, self.saved);
        if self.given("no_shuffle") && !saved.no_shuffle {
            bail!(
                "--resume {}: --no-shuffle was requested, but the checkpoint's run shuffled: leave --no-shuffle out to continue the saved run, or start a new run without --resume",
                self.path.display()
            );
        }
        if self.given("normalize") && cli.normalize != saved.normalize {
            let had = saved.normalize.to_string();
            self.conflict("normalize", had, cli.normalize.to_string())?;
        }
        if self.given("init") && cli.init != saved.init {
            let show = |p: &Option<PathBuf>| {
                p.as_ref()
                    .map_or("(none)".into(), |p| p.display().to_string())
            };
            self.conflict("init", show(&saved.init), show(&cli.init))?;
        }
        Ok(())
    }
}
