//! ONNX export of a saved model, for runtimes that read ONNX (onnxruntime, TensorRT, OpenVINO,
//! ONNX.js, ...).
//!
//! The graph, opset 17 (IR version 8, which every current runtime reads):
//! - input `input`: float `[batch, in]`, with a dynamic batch dimension;
//! - the checkpoint's normalization, when it has one, as `Sub(x, norm.shift)` then
//!   `Div(·, norm.scale)`;
//! - per layer `i`: `Gemm(x, layers.{i}.weight, layers.{i}.bias, transB=1)` (the weights keep the
//!   checkpoint's PyTorch `[out, in]` layout and names), then the activation: `Identity`,
//!   `Sigmoid`, `Tanh`, `Relu`, `LeakyRelu(alpha)`, `Softmax(axis=1)`, or the Heaviside step as
//!   `Cast(GreaterOrEqual(a, 0), float)` (1 where `a ≥ 0`, as [`Activation::apply`]);
//! - output `output`: float `[batch, out]`, the network's outputs after the output activation
//!   (what `Backend::predict` returns: class probabilities for a classifier);
//! - for a classifier (cross-entropy or binary cross-entropy loss) also `label`: int64 `[batch]`,
//!   the predicted class index (`ArgMax` over the outputs, or `output ≥ 0.5` for a one-output
//!   sigmoid), as `gpumlp eval`/`predict` decide it. The label names, when the checkpoint has
//!   them, are in the model's metadata under `class_names` (a JSON list).
//!
//! The protobuf messages are [`prost`] types generated at build time from the official
//! `proto/onnx.proto` by `protox` (see `build.rs`). Why this pair: prost is the most used and best
//! kept protobuf crate in Rust (tokio-rs), protox compiles the schema in pure Rust (no `protoc` on
//! the build machine), and the schema is ONNX's own file at a pinned release, so what we write is
//! exactly what ONNX defines. The ONNX-specific crates on crates.io (e.g. `onnx-protobuf`) are
//! one-person projects that lag ONNX releases.

use crate::checkpoint::Checkpoint;
use crate::data::NormalizeMethod;
use crate::error::{Error, Result};
use crate::model::{Activation, ModelSpec};
use prost::Message;

/// The ONNX protobuf messages (`onnx.ModelProto` and the rest), generated from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{dimension, Dimension};
use proto::type_proto;
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The ONNX operator set the graph uses.
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`] (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// The graph's input name.
pub const INPUT: &str = "input";
/// The graph's output name: the network's outputs after the output activation.
pub const OUTPUT: &str = "output";
/// The predicted class index (classifiers only).
pub const LABEL: &str = "label";

/// The ONNX model of `ck`, as [`ModelProto`] (see the module's documentation for the graph).
pub fn to_model(ck: &Checkpoint) -> Result<ModelProto> {
    let spec = &ck.spec;
    spec.validate()?;
    if ck.params.len() != spec.param_count() {
        return Err(Error::shape(
            "parameters",
            spec.param_count(),
            ck.params.len(),
        ));
    }
    let mut g = Graph::default();
    let x = g.normalization(ck, INPUT)?;
    g.layers(ck, &x);
    let batch = || dimension::Value::DimParam("batch".into());
    let mut outputs = vec![tensor_info(
        OUTPUT,
        DataType::Float,
        vec![batch(), dimension::Value::DimValue(spec.outputs() as i64)],
    )];
    if spec.is_classifier() {
        g.label(spec.outputs());
        outputs.push(tensor_info(LABEL, DataType::Int64, vec![batch()]));
    }
    let mut graph = g.graph;
    graph.name = Some("gpumlp".into());
    graph.doc_string = Some(format!(
        "gpumlp MLP {} ({}), loss {}",
        spec.sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        activation_names(spec),
        spec.loss
    ));
    graph.input = vec![tensor_info(
        INPUT,
        DataType::Float,
        vec![batch(), dimension::Value::DimValue(spec.inputs() as i64)],
    )];
    graph.output = outputs;
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("gpumlp".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some("exported by gpumlp from a safetensors checkpoint".into()),
        graph: Some(graph),
        metadata_props: metadata(ck),
        ..Default::default()
    })
}

/// The model's metadata: sizes, activations, loss and, when known, the class names.
fn metadata(ck: &Checkpoint) -> Vec<StringStringEntryProto> {
    let spec = &ck.spec;
    let mut metadata = vec![
        entry(
            "sizes",
            &serde_json::to_string(&spec.sizes).unwrap_or_default(),
        ),
        entry("activations", &activation_names(spec)),
        entry("loss", spec.loss.name()),
    ];
    if let Some(names) = &ck.class_names {
        metadata.push(entry(
            "class_names",
            &serde_json::to_string(names).unwrap_or_default(),
        ));
    }
    metadata
}

/// The activations' names, comma-separated.
fn activation_names(spec: &ModelSpec) -> String {
    spec.activations
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// The bytes of the `.onnx` file for `ck` (write them with [`crate::files::atomic_write`]).
pub fn to_onnx(ck: &Checkpoint) -> Result<Vec<u8>> {
    Ok(to_model(ck)?.encode_to_vec())
}

/// Reads an `.onnx` file's bytes back (for tests and tools).
pub fn from_onnx(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| Error::InvalidModel(format!("not an ONNX model: {e}")))
}

/// Appends the nodes of `act` on `a`, producing `out`; returns `out`.
fn activation(g: &mut Graph, act: Activation, a: &str, out: &str, layer: usize) -> String {
    match act {
        Activation::Identity => g.node("Identity", &[a], out, vec![]),
        Activation::Sigmoid => g.node("Sigmoid", &[a], out, vec![]),
        Activation::Tanh => g.node("Tanh", &[a], out, vec![]),
        Activation::Relu => g.node("Relu", &[a], out, vec![]),
        Activation::LeakyRelu(alpha) => {
            g.node("LeakyRelu", &[a], out, vec![float_attr("alpha", alpha)])
        }
        Activation::Softmax => g.node("Softmax", &[a], out, vec![int_attr("axis", 1)]),
        Activation::Step => {
            let zero = format!("layers.{layer}.zero");
            g.constant_f32(&zero, 0.0);
            let ge = g.node(
                "GreaterOrEqual",
                &[a, &zero],
                &format!("layers.{layer}.ge"),
                vec![],
            );
            g.node(
                "Cast",
                &[&ge],
                out,
                vec![int_attr("to", DataType::Float as i64)],
            )
        }
    }
}

/// The graph under construction: nodes and initializers in the order they are added.
#[derive(Default)]
struct Graph {
    graph: GraphProto,
}

impl Graph {
    /// Adds node `op(inputs) → output` and returns the output's name.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let n = self.graph.node.len();
        self.graph.node.push(NodeProto {
            name: Some(format!("{op}_{n}")),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
        output.to_string()
    }

    /// A float32 initializer `[dims]` named `name`.
    fn initializer(&mut self, name: &str, dims: &[usize], values: Vec<f32>) {
        self.graph.initializer.push(TensorProto {
            name: Some(name.into()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            float_data: values,
            ..Default::default()
        });
    }

    /// A float32 scalar initializer.
    fn constant_f32(&mut self, name: &str, value: f32) {
        self.initializer(name, &[], vec![value]);
    }

    /// `(x − norm.shift) / norm.scale` on input `x` when `ck` has a normalization; returns
    /// the name of the normalized input (`x` itself when there is none).
    fn normalization(&mut self, ck: &Checkpoint, x: &str) -> Result<String> {
        let spec = &ck.spec;
        let Some(n) = ck
            .normalization
            .as_ref()
            .filter(|n| n.method != NormalizeMethod::None)
        else {
            return Ok(x.to_string());
        };
        if n.shift.len() != spec.inputs() || n.scale.len() != spec.inputs() {
            return Err(Error::shape(
                "normalization statistics",
                spec.inputs(),
                format!("{} shifts and {} scales", n.shift.len(), n.scale.len()),
            ));
        }
        self.initializer("norm.shift", &[spec.inputs()], n.shift.clone());
        self.initializer("norm.scale", &[spec.inputs()], n.scale.clone());
        let x = self.node("Sub", &[x, "norm.shift"], "norm.centered", vec![]);
        Ok(self.node("Div", &[&x, "norm.scale"], "norm.out", vec![]))
    }

    /// Every layer's `Gemm` and activation on `x`: [batch, in], ending in [`OUTPUT`].
    fn layers(&mut self, ck: &Checkpoint, x: &str) {
        let spec = &ck.spec;
        let layout = spec.layout();
        let mut x = x.to_string();
        for (i, (l, act)) in layout.iter().zip(&spec.activations).enumerate() {
            // our W: [in, out] row-major → the checkpoint's [out, in], used with transB = 1
            let mut wt = vec![0.0f32; l.weight_len()];
            for r in 0..l.inputs {
                for c in 0..l.outputs {
                    wt[c * l.inputs + r] = ck.params[l.weight + r * l.outputs + c];
                }
            }
            let (w, b) = (format!("layers.{i}.weight"), format!("layers.{i}.bias"));
            self.initializer(&w, &[l.outputs, l.inputs], wt);
            self.initializer(&b, &[l.outputs], ck.params[l.bias..l.end()].to_vec());
            let a = self.node(
                "Gemm",
                &[&x, &w, &b],
                &format!("layers.{i}.pre"),
                vec![int_attr("transB", 1)],
            );
            let last = i + 1 == layout.len();
            let out = if last {
                OUTPUT.to_string()
            } else {
                format!("layers.{i}.out")
            };
            x = activation(self, *act, &a, &out, i);
        }
    }

    /// The predicted class [`LABEL`] from [`OUTPUT`]: `output ≥ 0.5` for one output, else
    /// `ArgMax` over the `outputs`.
    fn label(&mut self, outputs: usize) {
        if outputs != 1 {
            self.node(
                "ArgMax",
                &[OUTPUT],
                LABEL,
                vec![int_attr("axis", 1), int_attr("keepdims", 0)],
            );
            return;
        }
        self.constant_f32("label.threshold", 0.5);
        let ge = self.node(
            "GreaterOrEqual",
            &[OUTPUT, "label.threshold"],
            "label.ge",
            vec![],
        );
        let as_int = self.node(
            "Cast",
            &[&ge],
            "label.int",
            vec![int_attr("to", DataType::Int64 as i64)],
        );
        self.graph.initializer.push(TensorProto {
            name: Some("label.axes".into()),
            dims: vec![1],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![1],
            ..Default::default()
        });
        self.node("Squeeze", &[&as_int, "label.axes"], LABEL, vec![]);
    }
}

/// An integer attribute.
fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

/// A float attribute.
fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

/// A metadata entry `key: value`.
fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

/// A tensor's name, element type and dimensions, for the graph's inputs and outputs.
fn tensor_info(name: &str, elem: DataType, dims: Vec<dimension::Value>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
