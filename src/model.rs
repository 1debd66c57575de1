//! Model description: layer sizes, activations, the loss, the parameter layout and initialization.
//!
//! A dense layer computes `a = x·W + b` and `z = φ(a)`, with `x: [batch, in]`, `W: [in, out]`
//! row-major and `b: [out]`. All parameters live in one `Vec<f32>` (one GPU buffer): layer by
//! layer, `W` followed directly by `b`, so that `[W; b]` is one `[(in + 1), out]` matrix. The GPU
//! kernels use that to fuse the bias into the matmul as a virtual row (or column) of ones.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::str::FromStr;

/// A layer's activation `φ`. Each variant names its CPU math here and its WGSL code in
/// `shaders/activation.wgsl` under the same integer [`Activation::code`], so the two cannot drift.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Activation {
    /// `φ(a) = a`
    Identity,
    /// `φ(a) = 1 / (1 + e^-a)`
    Sigmoid,
    /// `φ(a) = tanh a`
    Tanh,
    /// `φ(a) = max(0, a)`, with `φ'(0) = 1` as the lecture notes define it.
    Relu,
    /// `φ(a) = a` for `a ≥ 0`, `alpha·a` otherwise; `φ'(0) = 1`.
    LeakyRelu(f32),
    /// Row-wise `softmax(a)_k = e^{a_k} / Σ_j e^{a_j}`; output layer only.
    Softmax,
    /// Heaviside step `φ(a) = 1` if `a ≥ 0` else 0; forward only (no useful derivative).
    Step,
}

impl Activation {
    /// The integer the WGSL kernels switch on (`ACT_*` in `shaders/activation.wgsl`).
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Sigmoid => 1,
            Activation::Tanh => 2,
            Activation::Relu => 3,
            Activation::LeakyRelu(_) => 4,
            Activation::Softmax => 5,
            Activation::Step => 6,
        }
    }

    /// The leaky slope (0 for every other activation).
    pub fn alpha(self) -> f32 {
        match self {
            Activation::LeakyRelu(a) => a,
            _ => 0.0,
        }
    }

    /// Element-wise `φ(a)`. Softmax is row-wise and handled by [`softmax_row`]; here it is the
    /// identity.
    pub fn apply(self, a: f32) -> f32 {
        match self {
            Activation::Identity | Activation::Softmax => a,
            Activation::Sigmoid => sigmoid(a),
            Activation::Tanh => a.tanh(),
            Activation::Relu => a.max(0.0),
            Activation::LeakyRelu(alpha) => {
                if a >= 0.0 {
                    a
                } else {
                    alpha * a
                }
            }
            Activation::Step => {
                if a >= 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Element-wise `φ'(a)`. Not defined for softmax (row-wise Jacobian) or step.
    pub fn derivative(self, a: f32) -> f32 {
        match self {
            Activation::Identity | Activation::Softmax | Activation::Step => 1.0,
            Activation::Sigmoid => {
                let s = sigmoid(a);
                s * (1.0 - s)
            }
            Activation::Tanh => {
                let t = a.tanh();
                1.0 - t * t
            }
            Activation::Relu => {
                if a >= 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(alpha) => {
                if a >= 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
        }
    }

    /// Whether this activation belongs to the ReLU family (He initialization).
    pub fn is_relu_family(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu(_))
    }

    /// A stable name, the one `FromStr` parses (`leaky_relu` carries its alpha as `leaky_relu:0.1`
    /// when it is not the default 0.01).
    pub fn name(self) -> String {
        match self {
            Activation::Identity => "identity".into(),
            Activation::Sigmoid => "sigmoid".into(),
            Activation::Tanh => "tanh".into(),
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu(a) if a == DEFAULT_LEAKY_ALPHA => "leaky_relu".into(),
            Activation::LeakyRelu(a) => format!("leaky_relu:{a}"),
            Activation::Softmax => "softmax".into(),
            Activation::Step => "step".into(),
        }
    }
}

/// The default slope of leaky ReLU for `a < 0`.
pub const DEFAULT_LEAKY_ALPHA: f32 = 0.01;

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Layer sizes, input first, as the command line writes them: `784,512,10`, `784-512-10` or
/// `784x512x10`. `-` separates sizes only in the dash form; with a comma or an `x` it is a minus
/// sign, reported as such (`64,-1,10`).
///
/// # Errors
/// [`Error::InvalidModel`] naming the part that is not a size.
pub fn parse_layer_sizes(s: &str) -> Result<Vec<usize>> {
    let bad = |why: String| Error::InvalidModel(why);
    let parts: Vec<&str> = if s.contains([',', 'x']) {
        s.split([',', 'x']).collect()
    } else {
        s.split('-').collect()
    };
    parts
        .iter()
        .map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(format!("{s:?} has an empty layer size (two separators in a row, or one at an end): give whole numbers such as 784,512,10")));
            }
            if part.starts_with('-') {
                return Err(bad(format!("{part} is not a layer size: sizes are whole numbers of at least 1, such as 784,512,10")));
            }
            part.parse::<usize>().map_err(|e| match e.kind() {
                std::num::IntErrorKind::PosOverflow => bad(format!(
                    "{part} is not a layer size: it is over the largest number this machine can count ({})",
                    usize::MAX
                )),
                _ => bad(format!("{part:?} is not a layer size: give whole numbers such as 784,512,10")),
            })
        })
        .collect()
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // `-` may spell `_` in the name (`leaky-relu`), never in the argument (`leaky_relu:-0.1`).
        let lower = s.trim().to_ascii_lowercase();
        let (name, arg) = match lower.split_once(':') {
            Some((n, a)) => (n.replace('-', "_"), Some(a.trim().to_string())),
            None => (lower.replace('-', "_"), None),
        };
        Ok(match name.as_str() {
            "identity" | "linear" => Activation::Identity,
            "sigmoid" | "logistic" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "leaky_relu" | "leakyrelu" => {
                let alpha = match arg {
                    Some(a) => a.parse::<f32>().map_err(|_| {
                        Error::InvalidModel(format!("leaky_relu alpha '{a}' is not a number"))
                    })?,
                    None => DEFAULT_LEAKY_ALPHA,
                };
                Activation::LeakyRelu(alpha)
            }
            "softmax" => Activation::Softmax,
            "step" | "heaviside" => Activation::Step,
            _ => {
                return Err(Error::InvalidModel(format!(
                    "unknown activation '{s}': use identity, sigmoid, tanh, relu, leaky_relu[:alpha], softmax or step"
                )))
            }
        })
    }
}

/// The logistic function, computed without overflow for large `|a|`.
pub fn sigmoid(a: f32) -> f32 {
    if a >= 0.0 {
        1.0 / (1.0 + (-a).exp())
    } else {
        let e = a.exp();
        e / (1.0 + e)
    }
}

/// In-place max-subtracted softmax of one row.
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// The training objective, reduced as a mean over the batch (`E = (1/B) Σ_samples J`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// `J = ½ Σ_k (y_k − t_k)²`, with any output activation. Output delta
    /// `δ_k = (y_k − t_k)·φ'(a_k)` (for softmax, the row Jacobian: `δ_k = y_k((y_k − t_k) − Σ_j y_j(y_j − t_j))`).
    SquaredError,
    /// Softmax output only: `J = −Σ_k t_k ln y_k`, computed as `Σ_k t_k (lse(a) − a_k)` with the
    /// max-subtracted log-sum-exp, so it never takes `ln 0`. Output delta `δ = y − t` (for targets
    /// that sum to one).
    CrossEntropy,
    /// Sigmoid output only: `J = −Σ_k [t_k ln y_k + (1 − t_k) ln(1 − y_k)]`, computed from the
    /// pre-activation as `Σ_k max(a_k, 0) − a_k t_k + ln(1 + e^{−|a_k|})`. Output delta `δ = y − t`.
    BinaryCrossEntropy,
}

impl Loss {
    /// The integer the WGSL loss kernel switches on.
    pub fn code(self) -> u32 {
        match self {
            Loss::SquaredError => 0,
            Loss::CrossEntropy => 1,
            Loss::BinaryCrossEntropy => 2,
        }
    }
    /// The canonical name (`squared-error`, `cross-entropy`, `binary-cross-entropy`), as parsed and displayed.
    pub fn name(self) -> &'static str {
        match self {
            Loss::SquaredError => "squared-error",
            Loss::CrossEntropy => "cross-entropy",
            Loss::BinaryCrossEntropy => "binary-cross-entropy",
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "squared-error" | "mse" | "se" => Ok(Loss::SquaredError),
            "cross-entropy" | "ce" => Ok(Loss::CrossEntropy),
            "binary-cross-entropy" | "bce" => Ok(Loss::BinaryCrossEntropy),
            _ => Err(Error::InvalidModel(format!(
                "unknown loss '{s}': use squared-error, cross-entropy or binary-cross-entropy"
            ))),
        }
    }
}

/// Offsets of one layer's parameters inside the single parameter allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    /// The layer's input width.
    pub inputs: usize,
    /// The layer's output width.
    pub outputs: usize,
    /// Start of `W: [inputs, outputs]` row-major.
    pub weight: usize,
    /// Start of `b: [outputs]`, always `weight + inputs * outputs`.
    pub bias: usize,
}

impl LayerLayout {
    /// Number of weights, `inputs * outputs`.
    pub fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }
    /// One past the layer's last parameter.
    pub fn end(&self) -> usize {
        self.bias + self.outputs
    }
}

/// The network: widths `sizes[0]` (inputs) … `sizes[L]` (outputs), one activation per layer, and
/// the loss it trains with.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Layer widths, inputs first and outputs last: `[L + 1]`.
    pub sizes: Vec<usize>,
    /// One activation per layer: `[L]`.
    pub activations: Vec<Activation>,
    /// The loss the network trains with.
    pub loss: Loss,
}

impl ModelSpec {
    /// A network with `hidden` on every hidden layer and `output` on the last, checked.
    pub fn new(
        sizes: &[usize],
        hidden: Activation,
        output: Activation,
        loss: Loss,
    ) -> Result<Self> {
        let layers = sizes.len().saturating_sub(1);
        let mut activations = vec![hidden; layers];
        if let Some(last) = activations.last_mut() {
            *last = output;
        }
        Self::with_activations(sizes, activations, loss)
    }

    /// A network with one activation per layer, checked.
    pub fn with_activations(
        sizes: &[usize],
        activations: Vec<Activation>,
        loss: Loss,
    ) -> Result<Self> {
        let spec = ModelSpec {
            sizes: sizes.to_vec(),
            activations,
            loss,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks sizes, activation placement and the loss/output pairing.
    pub fn validate(&self) -> Result<()> {
        if self.sizes.len() < 2 {
            return Err(Error::InvalidModel(format!(
                "a model needs at least an input and an output size, got {:?}",
                self.sizes
            )));
        }
        if let Some(i) = self.sizes.iter().position(|&s| s == 0) {
            return Err(Error::InvalidModel(format!(
                "layer sizes must be at least 1, but size {i} of {:?} is 0",
                self.sizes
            )));
        }
        if self.checked_param_count().is_none() {
            return Err(Error::InvalidModel(format!(
                "layer sizes {:?} give more parameters than a 64-bit count can hold: use smaller layers",
                self.sizes
            )));
        }
        if self.activations.len() != self.layers() {
            return Err(Error::InvalidModel(format!(
                "{} layers need {} activations, got {}",
                self.layers(),
                self.layers(),
                self.activations.len()
            )));
        }
        for (i, act) in self.activations.iter().enumerate() {
            if *act == Activation::Softmax && i + 1 != self.layers() {
                return Err(Error::InvalidModel(format!(
                    "softmax is only allowed on the output layer, but layer {i} uses it"
                )));
            }
            if let Activation::LeakyRelu(a) = act {
                if !a.is_finite() {
                    return Err(Error::InvalidModel(
                        "leaky_relu alpha must be finite".into(),
                    ));
                }
            }
        }
        let out = self.output_activation();
        match self.loss {
            Loss::CrossEntropy if out != Activation::Softmax => {
                return Err(Error::InvalidModel(format!(
                    "cross-entropy needs a softmax output layer, not {out}"
                )))
            }
            Loss::BinaryCrossEntropy if out != Activation::Sigmoid => {
                return Err(Error::InvalidModel(format!(
                    "binary cross-entropy needs a sigmoid output layer, not {out}"
                )))
            }
            _ => {}
        }
        Ok(())
    }

    /// Refuses to train a model that contains a Heaviside step (its derivative is 0 almost
    /// everywhere, so gradient descent cannot move it).
    pub fn check_trainable(&self) -> Result<()> {
        if let Some(i) = self.activations.iter().position(|a| *a == Activation::Step) {
            return Err(Error::InvalidModel(format!(
                "layer {i} uses the Heaviside step, which is forward-only: its derivative is zero almost everywhere, so it cannot be trained by backpropagation; use sigmoid or relu to train, step only for hand-set networks"
            )));
        }
        Ok(())
    }

    /// Number of layers `L` (weight matrices).
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }
    /// Input width, `sizes[0]`.
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }
    /// Output width, `sizes[L]`.
    pub fn outputs(&self) -> usize {
        *self.sizes.last().expect("validated")
    }
    /// The last layer's activation (identity when there are no layers).
    pub fn output_activation(&self) -> Activation {
        *self.activations.last().unwrap_or(&Activation::Identity)
    }
    /// True when outputs are classes (softmax or a sigmoid with binary cross-entropy).
    pub fn is_classifier(&self) -> bool {
        matches!(self.loss, Loss::CrossEntropy | Loss::BinaryCrossEntropy)
    }

    /// The parameter layout: per layer `W` then `b`, contiguous.
    pub fn layout(&self) -> Vec<LayerLayout> {
        let mut offset = 0;
        self.sizes
            .windows(2)
            .map(|w| {
                let l = LayerLayout {
                    inputs: w[0],
                    outputs: w[1],
                    weight: offset,
                    bias: offset + w[0] * w[1],
                };
                offset = l.end();
                l
            })
            .collect()
    }

    /// Total number of parameters, or `None` when it overflows `usize` (a validated spec never
    /// does).
    pub fn checked_param_count(&self) -> Option<usize> {
        self.sizes.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_add(1)?
                .checked_mul(w[1])
                .and_then(|n| acc.checked_add(n))
        })
    }

    /// Host bytes a backend holds for this model with `optimizer` and batches of `batch` rows:
    /// parameters, gradients and optimizer state (`[P]` each) plus each layer's `a`, `z` and `δ`
    /// (`[batch, width]` each); `u64::MAX` when that overflows.
    pub fn host_bytes(&self, optimizer: crate::optim::Optimizer, batch: usize) -> u64 {
        use crate::limits::bytes_of;
        let p = self.checked_param_count().unwrap_or(usize::MAX);
        let per_param = bytes_of(&[p, 2 + optimizer.state_slots()], 4);
        let widths = self
            .sizes
            .iter()
            .try_fold(0usize, |acc, &w| acc.checked_add(w))
            .unwrap_or(usize::MAX);
        let per_batch = bytes_of(&[batch, widths, 3], 4);
        per_param.saturating_add(per_batch)
    }

    /// Refuses a model that would not fit this machine's memory (see [`crate::limits`]) with
    /// `optimizer` and batches of `batch` rows, before anything is allocated.
    pub fn check_host_memory(
        &self,
        optimizer: crate::optim::Optimizer,
        batch: usize,
    ) -> Result<()> {
        crate::limits::check_host_bytes(
            &format!(
                "the model {} ({} parameters, with {}{})",
                self.sizes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("-"),
                self.checked_param_count()
                    .map_or("over 2^64".into(), |p| p.to_string()),
                optimizer.name(),
                if batch > 0 {
                    format!(" and batch {batch}")
                } else {
                    String::new()
                }
            ),
            self.host_bytes(optimizer, batch),
            "use fewer or narrower layers, or a smaller --batch",
        )
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.layout().last().map_or(0, |l| l.end())
    }

    /// `Σ_l in_l · out_l`: multiply-adds per sample in one forward pass.
    pub fn macs_per_sample(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// Seeded initialization: Xavier (Glorot) uniform `U(±√(6/(in+out)))` for identity, sigmoid,
    /// tanh and softmax layers, He (Kaiming) uniform `U(±√(6/in))` for the ReLU family, zero
    /// biases. Same seed, same weights, on every backend and machine (ChaCha8).
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0f32; self.param_count()];
        for (l, act) in self.layout().iter().zip(&self.activations) {
            let bound = if act.is_relu_family() {
                (6.0 / l.inputs as f64).sqrt()
            } else {
                (6.0 / (l.inputs + l.outputs) as f64).sqrt()
            } as f32;
            for w in &mut params[l.weight..l.bias] {
                *w = rng.random_range(-bound..bound);
            }
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaky_relu_alpha_in_scientific_notation_or_negative_parses() {
        assert_eq!(
            "leaky_relu:1e-3".parse::<Activation>().unwrap(),
            Activation::LeakyRelu(1e-3)
        );
        assert_eq!(
            "leaky-relu:-0.1".parse::<Activation>().unwrap(),
            Activation::LeakyRelu(-0.1)
        );
        let e = "leaky_relu:abc"
            .parse::<Activation>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'abc'"), "{e}");
    }

    #[test]
    fn sizes_whose_parameter_count_wraps_are_refused() {
        for sizes in [
            vec![64, 4611686018427387904, 10],
            vec![64, 288230376151711744, 63],
            vec![usize::MAX, 2],
        ] {
            let e = ModelSpec::new(
                &sizes,
                Activation::Relu,
                Activation::Softmax,
                Loss::CrossEntropy,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("64-bit"), "{sizes:?}: {e}");
        }
    }

    #[test]
    fn a_model_larger_than_memory_is_refused_naming_the_bytes() {
        let spec = ModelSpec::new(
            &[64, 100000, 100000, 10],
            Activation::Relu,
            Activation::Softmax,
            Loss::CrossEntropy,
        )
        .unwrap();
        let bytes = spec.host_bytes(crate::optim::Optimizer::adam(), 32);
        assert!(bytes > 40_000_000_000, "{bytes}");
        let e = crate::limits::check_bytes("m", bytes, 1 << 30, "test", "smaller").unwrap_err();
        assert!(e.to_string().contains(&bytes.to_string()));
    }
}
