//! The library's one error type. Every message says what went wrong and what to do about it.

use std::path::PathBuf;

/// Everything the library can refuse or fail at. Library code never panics on user input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid model: {0}")]
    InvalidModel(String),

    #[error("invalid training configuration: {0}")]
    InvalidConfig(String),

    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    #[error("invalid data: {0}")]
    InvalidData(String),

    #[error("class label {label} at sample {index} is out of range: the model has {classes} outputs (labels 0..{classes})")]
    LabelOutOfRange {
        label: i64,
        index: usize,
        classes: usize,
    },

    #[error("non-finite value ({value}) in {what} at row {row}, column {col}: clean or drop that sample")]
    NonFinite {
        what: String,
        row: usize,
        col: usize,
        value: f32,
    },

    #[error("training diverged: the loss became {value} at epoch {epoch}, step {step}; lower the learning rate (--lr) or add L2 (--l2)")]
    Diverged {
        epoch: usize,
        step: usize,
        value: f64,
    },

    #[error("training interrupted in epoch {epoch} after step {step}: the parameters keep the steps taken")]
    Interrupted { epoch: usize, step: usize },

    #[error("no GPU adapter found{detail}: install a GPU driver, or a software Vulkan device (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1), or use the CPU reference (--device cpu)")]
    NoAdapter { detail: String },

    #[error("{0}")]
    DeviceLimit(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    // The cause is part of the message and deliberately not a `#[source]`: callers that print
    // the whole chain (anyhow's `{:#}`) would otherwise show it twice.
    #[error("I/O error on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
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
