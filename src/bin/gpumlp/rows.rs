//! `gpumlp train`'s training rows: loaded into memory, or (with `--max-device-memory`, or when
//! a memory-mapped input is larger than host memory) read through a row source that the
//! trainer streams in chunks when they do not fit.

use crate::train::TrainArgs;
use anyhow::Context;
use gpumlp::checkpoint::Checkpoint;
use gpumlp::data::{
    gather, gather_all, known_range, load_spec_with, open_spec, split_indices, Normalization,
    Normalized, RowSource, Subset,
};
use gpumlp::Dataset;
use std::sync::Arc;

/// The training part.
pub enum TrainRows {
    Memory(Dataset),
    /// Normalized rows read on demand, and the first of them in memory (for the shapes).
    Source {
        rows: Arc<dyn RowSource>,
        probe: Dataset,
    },
}

impl TrainRows {
    /// A dataset with the training part's columns and targets' kind (all of it in memory).
    pub fn probe(&self) -> &Dataset {
        match self {
            TrainRows::Memory(d) => d,
            TrainRows::Source { probe, .. } => probe,
        }
    }
    pub fn rows(&self) -> usize {
        match self {
            TrainRows::Memory(d) => d.rows,
            TrainRows::Source { rows, .. } => rows.rows(),
        }
    }
}

/// The data of a run, split and normalized.
pub struct Prepared {
    pub train: TrainRows,
    pub val: Option<Dataset>,
    pub norm: Normalization,
    pub class_names: Option<Vec<String>>,
}

/// Loads `--data`, splits off `--val-split` and fits (or, resumed, takes) the normalization.
pub fn prepare(args: &TrainArgs, resumed: Option<&Checkpoint>) -> anyhow::Result<Prepared> {
    let names = resumed.and_then(|ck| ck.class_names.as_ref());
    let full: Arc<dyn RowSource> = match mapped_source(args, names.is_some())? {
        Some(source) => source,
        None if args.max_device_memory.is_none() => return in_memory(args, resumed),
        None => Arc::new(load_full(args, resumed)?),
    };
    let class_names = full.class_names().map(<[String]>::to_vec);
    let (train_idx, val_idx) =
        split_indices(full.rows(), full.targets(), args.val_split, args.seed)?;
    let u32s = |v: Vec<usize>| v.into_iter().map(|i| i as u32).collect::<Vec<_>>();
    let train: Arc<dyn RowSource> = Arc::new(Subset::new(full.clone(), u32s(train_idx))?);
    let norm = match resumed {
        Some(ck) => ck
            .normalization
            .clone()
            .unwrap_or_else(|| Normalization::identity(train.cols())),
        None => Normalization::fit_source(
            args.normalize.method(),
            train.as_ref(),
            known_range(&args.data),
        )?,
    };
    let val = match val_idx {
        Some(v) => {
            let mut v = gather_all(&Subset::new(full, u32s(v))?)?;
            norm.apply(&mut v)?;
            Some(v)
        }
        None => None,
    };
    let rows: Arc<dyn RowSource> = Arc::new(Normalized::new(train, norm.clone())?);
    let probe = gather(rows.as_ref(), &[0])?;
    Ok(Prepared {
        train: TrainRows::Source { rows, probe },
        val,
        norm,
        class_names,
    })
}

/// The whole dataset in memory, relabelled to a resumed run's vocabulary.
fn load_full(args: &TrainArgs, resumed: Option<&Checkpoint>) -> anyhow::Result<Dataset> {
    let mut full = load_spec_with(&args.data, &args.csv.options()?)?;
    // String class labels: a resumed run keeps the checkpoint's vocabulary (its outputs).
    if let Some(names) = resumed.and_then(|ck| ck.class_names.as_ref()) {
        full = full
            .relabel(names)
            .with_context(|| format!("--data {}", args.data))?;
    }
    Ok(full)
}

/// The in-memory path: load, split, fit, normalize.
fn in_memory(args: &TrainArgs, resumed: Option<&Checkpoint>) -> anyhow::Result<Prepared> {
    let full = load_full(args, resumed)?;
    let class_names = full.class_names.clone();
    let (mut train, mut val) = full.split(args.val_split, args.seed)?;
    let norm = match resumed {
        Some(ck) => ck
            .normalization
            .clone()
            .unwrap_or_else(|| Normalization::identity(train.cols)),
        None => Normalization::fit(args.normalize.method(), &train, known_range(&args.data)),
    };
    norm.apply(&mut train)?;
    if let Some(v) = &mut val {
        norm.apply(v)?;
    }
    Ok(Prepared {
        train: TrainRows::Memory(train),
        val,
        norm,
        class_names,
    })
}

/// The memory-mapped source of `--data` (IDX or float32 `.npy`) when the run should read
/// through one: with `--max-device-memory`, or when the features would not fit in host memory
/// twice (loaded, and the backend's copy). `None` for other inputs, and for inputs that
/// cannot be mapped (gzip, float64, Fortran order: said on stderr; they load into memory).
fn mapped_source(args: &TrainArgs, relabel: bool) -> anyhow::Result<Option<Arc<dyn RowSource>>> {
    let source = match open_spec(&args.data) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => {
            if args.max_device_memory.is_some() && !args.quiet {
                eprintln!("gpumlp: {e}; loading it into memory instead");
            }
            return Ok(None);
        }
    };
    // String labels of a resumed run are matched to its vocabulary in memory.
    if relabel && source.class_names().is_some() {
        return Ok(None);
    }
    let bytes = gpumlp::limits::bytes_of(&[source.rows(), source.cols(), 2], 4);
    let (limit, _) = gpumlp::limits::host_memory_limit()?;
    if args.max_device_memory.is_some() || bytes > limit {
        return Ok(Some(Arc::from(source)));
    }
    Ok(None)
}
