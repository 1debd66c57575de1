//! The library's one error type. Every message says what went wrong and what to do about it.

use std::path::PathBuf;

/// Everything the library can refuse or fail at. Library code never panics on user input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid model: {0}")]
    /// The model description is unusable; the message says why.
    InvalidModel(String),

    #[error("invalid training configuration: {0}")]
    /// The training configuration is unusable; the message says why.
    InvalidConfig(String),

    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    /// Some input has the wrong shape.
    Shape {
        /// What was checked, e.g. an input matrix.
        what: String,
        /// The shape that was expected.
        expected: String,
        /// The shape that was given.
        got: String,
    },

    #[error("invalid data: {0}")]
    /// The data is unusable; the message says why.
    InvalidData(String),

    #[error("class label {label} at sample {index} is out of range: the model has {classes} outputs (labels 0..{classes})")]
    /// A class label is outside `0..classes`.
    LabelOutOfRange {
        /// The offending label.
        label: i64,
        /// The 0-based sample index.
        index: usize,
        /// The model's number of outputs (classes).
        classes: usize,
    },

    #[error("class label '{label}' at row {row} is not one the model was trained on (it knows: {known})")]
    /// A class label (by name) that the model was not trained on.
    UnknownLabel {
        /// The offending label.
        label: String,
        /// The 0-based row where it occurs.
        row: usize,
        /// The labels the model knows, as a list for the message.
        known: String,
    },

    #[error("non-finite value ({value}) in {what} at row {row}, column {col}: clean or drop that sample")]
    /// A NaN or infinite value in the input data.
    NonFinite {
        /// What holds it, e.g. features or targets.
        what: String,
        /// The 0-based row.
        row: usize,
        /// The 0-based column.
        col: usize,
        /// The non-finite value itself.
        value: f32,
    },

    #[error("training diverged: the loss became {value} at epoch {epoch}, step {step}; lower the learning rate (--lr) or add L2 (--l2)")]
    /// The training loss became non-finite.
    Diverged {
        /// The epoch it happened in.
        epoch: usize,
        /// The step within that epoch.
        step: usize,
        /// The loss value (NaN or infinite).
        value: f64,
    },

    #[error("training interrupted in epoch {epoch} after step {step}: the parameters keep the steps taken")]
    /// Training was stopped on request before it finished; the parameters keep the steps taken.
    Interrupted {
        /// The epoch it stopped in.
        epoch: usize,
        /// The last step taken in that epoch.
        step: usize,
    },

    /// No adapter matches: any at all, or those narrowed to a `backend` and/or a `name`
    /// substring.
    #[error("no GPU adapter found{}: install a GPU driver, or a software Vulkan device (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1), or train on the fast CPU backend (--device cpu)", adapter_wanted(.backend, .name))]
    NoAdapter {
        /// The backend asked for, if any.
        backend: Option<String>,
        /// The adapter-name substring asked for, if any.
        name: Option<String>,
    },

    /// No `index`-th adapter (0-based) among the `found` that match `backend` (`vulkan:1` in
    /// `--devices` on a machine with one Vulkan adapter).
    #[error("no GPU adapter at index {index}{}: found {found} (indices start at 0)", adapter_wanted(.backend, &None))]
    AdapterIndex {
        /// The backend asked for, if any.
        backend: Option<String>,
        /// The 0-based adapter index asked for.
        index: usize,
        /// How many matching adapters there are.
        found: usize,
    },

    /// A GPU backend name that is none of vulkan, metal, dx12 or gl; `from_env` when it came
    /// from `GPUMLP_BACKEND`.
    #[error("{}unknown backend '{name}': use vulkan, metal, dx12 or gl{}", if *.from_env { format!("GPUMLP_BACKEND={name}: ") } else { String::new() }, if *.from_env { " (or unset GPUMLP_BACKEND)" } else { "" })]
    UnknownBackend {
        /// The name given.
        name: String,
        /// Whether it came from `GPUMLP_BACKEND`.
        from_env: bool,
    },

    #[error("{0}")]
    /// A device limit would be exceeded; the message says which and what to do.
    DeviceLimit(String),

    #[error("GPU error: {0}")]
    /// An error reported by the GPU API (wgpu).
    Gpu(String),

    #[error("{path}: {message}")]
    /// A file cannot be used; the message says why.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A data file's content is malformed at a known place: `line` and `column` count from 1,
    /// like an editor (`column` is `None` where the whole line or record is at fault). The
    /// message names them too.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The 1-based line, if known.
        line: Option<usize>,
        /// The 1-based column, if known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },

    // The cause is part of the message and deliberately not a `#[source]`: callers that print
    // the whole chain (anyhow's `{:#}`) would otherwise show it twice.
    #[error("I/O error on {path}: {cause}")]
    /// An I/O operation on a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },

    /// A distributed run (MPI) that cannot start or whose ranks disagree.
    #[error("distributed run: {0}")]
    Distributed(String),

    #[error("checkpoint {path}: {message}")]
    /// A checkpoint cannot be written or read back.
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// Something would need more memory (or a longer read) than a limit allows; refused before
    /// anything is allocated. `needed` is `u64::MAX` when the size does not even fit 64 bits.
    #[error("{what} needs {}, over the limit of {} ({limit_source}): {hint}", crate::limits::show_bytes(*.needed), crate::limits::show_bytes(*.limit))]
    TooLarge {
        /// What would need the memory, for the message.
        what: String,
        /// Bytes needed (`u64::MAX` if over 64 bits).
        needed: u64,
        /// The limit in bytes.
        limit: u64,
        /// Where the limit comes from, e.g. "memory available on this machine".
        limit_source: String,
        /// What to do about it.
        hint: String,
    },

    /// A model produced NaN or infinite outputs; `rows` are the first offending sample indices.
    #[error("the model's outputs are not finite (NaN or infinite) for {count} of {total} samples, first at sample(s) {} (0-based): the weights or the inputs are far out of range; check the data's scale and normalization, or retrain with a lower learning rate", .rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))]
    NonFiniteOutput {
        /// The first offending 0-based sample indices.
        rows: Vec<usize>,
        /// How many samples have non-finite outputs.
        count: usize,
        /// How many samples there are in all.
        total: usize,
    },
}

/// " for backend 'b' with a name containing 'n'", as far as either is given.
fn adapter_wanted(backend: &Option<String>, name: &Option<String>) -> String {
    let mut detail = String::new();
    if let Some(b) = backend {
        detail += &format!(" for backend '{b}'");
    }
    if let Some(n) = name {
        detail += &format!(" with a name containing '{n}'");
    }
    detail
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}
