//! The closed sets of values the flags take, as `clap::ValueEnum`s: `--help` lists them, a typo
//! gets a suggestion, and each maps onto the library's type. They serialize under the names
//! the flags take, so a checkpoint's saved arguments and `--config` files read as before.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// `Display` as the value's name on the command line.
macro_rules! display_as_value {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = self.to_possible_value().expect("no value is skipped");
                f.write_str(v.get_name())
            }
        }
    )*};
}

display_as_value!(
    DeviceChoice,
    BackendChoice,
    OutputActivation,
    LossChoice,
    OptimizerChoice,
    NormalizeChoice,
    MonitorChoice,
    HeaderChoice
);

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The fastest here: a hardware GPU, else the fast CPU backend.
    Auto,
    /// Any wgpu adapter, software ones included.
    Gpu,
    /// The fast CPU backend.
    Cpu,
    /// The naive CPU oracle.
    Reference,
}

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[value(alias = "vk")]
    #[serde(alias = "vk")]
    Vulkan,
    Metal,
    #[value(alias = "d3d12")]
    #[serde(alias = "d3d12")]
    Dx12,
    #[value(aliases = ["gles", "opengl"])]
    #[serde(alias = "gles", alias = "opengl")]
    Gl,
}

/// `--output-activation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputActivation {
    /// Softmax for classes (sigmoid for one output), identity for real-valued targets.
    Auto,
    Identity,
    Sigmoid,
    Softmax,
}

impl OutputActivation {
    /// The activation, or `None` for `auto`.
    pub fn activation(self) -> Option<gpumlp::Activation> {
        use gpumlp::Activation as A;
        match self {
            OutputActivation::Auto => None,
            OutputActivation::Identity => Some(A::Identity),
            OutputActivation::Sigmoid => Some(A::Sigmoid),
            OutputActivation::Softmax => Some(A::Softmax),
        }
    }
}

/// `--loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossChoice {
    /// Cross-entropy for softmax, binary cross-entropy for a sigmoid classifier, else squared
    /// error.
    Auto,
    #[value(aliases = ["squared_error", "mse", "se"])]
    #[serde(alias = "squared_error", alias = "mse", alias = "se")]
    SquaredError,
    #[value(aliases = ["cross_entropy", "ce"])]
    #[serde(alias = "cross_entropy", alias = "ce")]
    CrossEntropy,
    #[value(aliases = ["binary_cross_entropy", "bce"])]
    #[serde(alias = "binary_cross_entropy", alias = "bce")]
    BinaryCrossEntropy,
}

impl LossChoice {
    /// The loss, or `None` for `auto`.
    pub fn loss(self) -> Option<gpumlp::Loss> {
        use gpumlp::Loss as L;
        match self {
            LossChoice::Auto => None,
            LossChoice::SquaredError => Some(L::SquaredError),
            LossChoice::CrossEntropy => Some(L::CrossEntropy),
            LossChoice::BinaryCrossEntropy => Some(L::BinaryCrossEntropy),
        }
    }
}

/// `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    Sgd,
    Momentum,
    Adam,
}

/// `--normalize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormalizeChoice {
    /// Features as they are.
    None,
    /// Divided by the known range or the training maximum, into [0, 1].
    Unit,
    /// Per-feature mean and standard deviation of the training part.
    Standard,
}

impl NormalizeChoice {
    pub fn method(self) -> gpumlp::data::NormalizeMethod {
        use gpumlp::data::NormalizeMethod as N;
        match self {
            NormalizeChoice::None => N::None,
            NormalizeChoice::Unit => N::Unit,
            NormalizeChoice::Standard => N::Standard,
        }
    }
}

/// `--monitor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum MonitorChoice {
    ValLoss,
    ValAccuracy,
    TrainLoss,
}

impl MonitorChoice {
    pub fn monitor(self) -> gpumlp::Monitor {
        match self {
            MonitorChoice::ValLoss => gpumlp::Monitor::ValLoss,
            MonitorChoice::ValAccuracy => gpumlp::Monitor::ValAccuracy,
            MonitorChoice::TrainLoss => gpumlp::Monitor::TrainLoss,
        }
    }
}

/// `--header`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderChoice {
    /// A header when none of the first row's feature fields is a number.
    #[default]
    Auto,
    /// The first row names the columns.
    On,
    /// Every row is data.
    Off,
}

impl HeaderChoice {
    pub fn header(self) -> gpumlp::data::CsvHeader {
        use gpumlp::data::CsvHeader as H;
        match self {
            HeaderChoice::Auto => H::Auto,
            HeaderChoice::On => H::On,
            HeaderChoice::Off => H::Off,
        }
    }
}
