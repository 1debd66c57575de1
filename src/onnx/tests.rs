//! The exported graph read back with the same prost types: names, shapes, nodes, weights, and
//! its outputs (by a small interpreter of the operators we emit) against the CPU reference's.

use super::proto::{tensor_proto::DataType, type_proto, ModelProto, NodeProto, TensorProto};
use super::*;
use crate::data::Normalization;
use crate::model::{Loss, ModelSpec};
use crate::{Backend, Optimizer, ReferenceBackend, Tolerance};
use std::collections::HashMap;

fn checkpoint(
    sizes: &[usize],
    acts: Vec<Activation>,
    loss: Loss,
    norm: NormalizeMethod,
) -> Checkpoint {
    let spec = ModelSpec::with_activations(sizes, acts, loss).unwrap();
    let params = spec.init_params(7);
    let cols = sizes[0];
    let normalization = match norm {
        NormalizeMethod::None => None,
        method => Some(Normalization {
            method,
            shift: (0..cols).map(|i| 0.3 * i as f32 - 0.5).collect(),
            scale: (0..cols).map(|i| 0.5 + 0.25 * i as f32).collect(),
        }),
    };
    Checkpoint {
        spec,
        params,
        normalization,
        training: None,
        class_names: None,
    }
}

fn dims(m: &ModelProto, name: &str, outputs: bool) -> Vec<String> {
    let g = m.graph.as_ref().unwrap();
    let list = if outputs { &g.output } else { &g.input };
    let vi = list.iter().find(|v| v.name() == name).unwrap();
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().unwrap().value.as_ref() else {
        panic!("{name} is not a tensor");
    };
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            proto::tensor_shape_proto::dimension::Value::DimValue(v) => v.to_string(),
            proto::tensor_shape_proto::dimension::Value::DimParam(p) => p.clone(),
        })
        .collect()
}

fn ops(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect()
}

/// A matrix `[rows, cols]` (scalars are `[1, 1]`, vectors `[1, n]`).
#[derive(Clone, Debug)]
struct T {
    v: Vec<f32>,
    rows: usize,
    cols: usize,
}

fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name() == name).map(|a| a.i())
}

/// Runs the graph on x: [rows, in] with the few operators `to_model` emits, each to its ONNX
/// definition; returns every graph output by name.
fn run(m: &ModelProto, x: &[f32], rows: usize) -> HashMap<String, T> {
    let g = m.graph.as_ref().unwrap();
    let mut env: HashMap<String, T> = HashMap::new();
    let cols = x.len() / rows;
    env.insert(
        INPUT.into(),
        T {
            v: x.to_vec(),
            rows,
            cols,
        },
    );
    for t in &g.initializer {
        let t: &TensorProto = t;
        let v: Vec<f32> = if t.data_type() == DataType::Int64 as i32 {
            t.int64_data.iter().map(|&i| i as f32).collect()
        } else {
            t.float_data.clone()
        };
        let (r, c) = match t.dims.as_slice() {
            [] => (1, 1),
            [n] => (1, *n as usize),
            [r, c] => (*r as usize, *c as usize),
            d => panic!("{d:?}"),
        };
        env.insert(
            t.name().into(),
            T {
                v,
                rows: r,
                cols: c,
            },
        );
    }
    // b broadcast over a's rows (b: [1, cols] or [1, 1])
    let bcast = |a: &T, b: &T, f: fn(f32, f32) -> f32| T {
        v: a.v
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                f(
                    x,
                    if b.v.len() == 1 {
                        b.v[0]
                    } else {
                        b.v[i % a.cols]
                    },
                )
            })
            .collect(),
        ..a.clone()
    };
    let map = |a: &T, f: &dyn Fn(f32) -> f32| T {
        v: a.v.iter().map(|&x| f(x)).collect(),
        ..a.clone()
    };
    for n in &g.node {
        let i = |k: usize| env[&n.input[k]].clone();
        let out = match n.op_type() {
            "Sub" => bcast(&i(0), &i(1), |a, b| a - b),
            "Div" => bcast(&i(0), &i(1), |a, b| a / b),
            "GreaterOrEqual" => bcast(&i(0), &i(1), |a, b| (a >= b) as u8 as f32),
            "Cast" | "Identity" => i(0),
            "Gemm" => {
                assert_eq!(attr_i(n, "transB"), Some(1));
                let (a, w, b) = (i(0), i(1), i(2));
                assert_eq!(a.cols, w.cols, "Gemm inner dimension");
                let mut v = vec![0.0f32; a.rows * w.rows];
                for r in 0..a.rows {
                    for o in 0..w.rows {
                        let mut s = 0.0f32;
                        for k in 0..a.cols {
                            s += a.v[r * a.cols + k] * w.v[o * w.cols + k];
                        }
                        v[r * w.rows + o] = s + b.v[o];
                    }
                }
                T {
                    v,
                    rows: a.rows,
                    cols: w.rows,
                }
            }
            "Sigmoid" => map(&i(0), &crate::model::sigmoid),
            "Tanh" => map(&i(0), &f32::tanh),
            "Relu" => map(&i(0), &|x| x.max(0.0)),
            "LeakyRelu" => {
                let alpha = n
                    .attribute
                    .iter()
                    .find(|a| a.name() == "alpha")
                    .unwrap()
                    .f();
                map(&i(0), &move |x| if x >= 0.0 { x } else { alpha * x })
            }
            "Softmax" => {
                assert_eq!(attr_i(n, "axis"), Some(1));
                let mut t = i(0);
                t.v.chunks_mut(t.cols).for_each(crate::model::softmax_row);
                t
            }
            "ArgMax" => {
                let t = i(0);
                let v =
                    t.v.chunks(t.cols)
                        .map(|r| crate::reference::ops::argmax(r) as f32)
                        .collect();
                T {
                    v,
                    rows: t.rows,
                    cols: 1,
                }
            }
            "Squeeze" => i(0),
            op => panic!("the interpreter does not know {op}"),
        };
        env.insert(n.output[0].clone(), out);
    }
    g.output
        .iter()
        .map(|o| (o.name().to_string(), env[o.name()].clone()))
        .collect()
}

/// Every activation, as a hidden layer and (where allowed) as the output, with each
/// normalization: the graph's outputs equal the CPU reference's predictions.
#[test]
fn every_activation_and_normalization_exports_and_computes_the_reference_outputs() {
    let hidden = [
        Activation::Identity,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Step,
    ];
    let heads = [
        (Activation::Softmax, Loss::CrossEntropy, 4),
        (Activation::Sigmoid, Loss::BinaryCrossEntropy, 1),
        (Activation::Identity, Loss::SquaredError, 3),
        (Activation::Tanh, Loss::SquaredError, 2),
    ];
    let norms = [
        NormalizeMethod::None,
        NormalizeMethod::Unit,
        NormalizeMethod::Standard,
    ];
    // 7 rows of 5 features: awkward sizes, values on both sides of every threshold.
    let rows = 7;
    let x: Vec<f32> = (0..rows * 5)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
        .collect();
    for &h in &hidden {
        for &(out_act, loss, outputs) in &heads {
            for &norm in &norms {
                let ck = checkpoint(&[5, 6, 3, outputs], vec![h, h, out_act], loss, norm);
                let bytes = to_onnx(&ck).unwrap();
                let m = from_onnx(&bytes).unwrap();
                let what = format!("{h} → {out_act} ({loss}), normalization {norm:?}");
                assert_eq!(m.ir_version(), IR_VERSION);
                assert_eq!(m.opset_import[0].version(), OPSET);
                assert_eq!(dims(&m, INPUT, false), ["batch", "5"], "{what}");
                assert_eq!(
                    dims(&m, OUTPUT, true),
                    ["batch".to_string(), outputs.to_string()],
                    "{what}"
                );
                let classifier = loss != Loss::SquaredError;
                let g = m.graph.as_ref().unwrap();
                assert_eq!(g.output.len(), 1 + classifier as usize, "{what}");
                if classifier {
                    assert_eq!(dims(&m, LABEL, true), ["batch"], "{what}");
                }
                let ops = ops(&m);
                assert_eq!(
                    ops.iter().filter(|o| *o == "Gemm").count(),
                    3,
                    "{what}: {ops:?}"
                );
                let normalized = norm != NormalizeMethod::None;
                assert_eq!(
                    ops[0] == "Sub" && ops[1] == "Div",
                    normalized,
                    "{what}: {ops:?}"
                );
                let want_hidden = match h {
                    Activation::Step => "Cast",
                    a => match a {
                        Activation::Identity => "Identity",
                        Activation::Sigmoid => "Sigmoid",
                        Activation::Tanh => "Tanh",
                        Activation::Relu => "Relu",
                        _ => "LeakyRelu",
                    },
                };
                let after_first_gemm = ops.iter().position(|o| o == "Gemm").unwrap() + 1;
                let first_act = if h == Activation::Step {
                    &ops[after_first_gemm + 1]
                } else {
                    &ops[after_first_gemm]
                };
                assert_eq!(first_act, want_hidden, "{what}: {ops:?}");
                // Weights keep the checkpoint's [out, in] layout and names.
                let w0 = g
                    .initializer
                    .iter()
                    .find(|t| t.name() == "layers.0.weight")
                    .unwrap();
                assert_eq!(w0.dims, [6, 5]);
                assert_eq!(
                    w0.float_data[5], ck.params[1],
                    "W[0][1] is layers.0.weight[1][0]"
                );

                let got = run(&m, &x, rows);
                let mut b = ReferenceBackend::new(&ck.spec, Optimizer::Sgd).unwrap();
                b.set_params(&ck.params).unwrap();
                let mut xn = x.clone();
                if let Some(n) = &ck.normalization {
                    n.apply_features(&mut xn, 5).unwrap();
                }
                let want = b.predict(&xn, rows).unwrap();
                // Same f32 operations in a different order of the normalization and the sums.
                let tol = Tolerance {
                    rel: 1e-5,
                    abs: 1e-5,
                };
                tol.assert_close(&what, &got[OUTPUT].v, &want);
                if classifier {
                    let labels: Vec<f32> = if outputs == 1 {
                        got[OUTPUT]
                            .v
                            .iter()
                            .map(|&p| (p >= 0.5) as u8 as f32)
                            .collect()
                    } else {
                        got[OUTPUT]
                            .v
                            .chunks(outputs)
                            .map(|r| crate::reference::ops::argmax(r) as f32)
                            .collect()
                    };
                    assert_eq!(got[LABEL].v, labels, "{what}");
                }
            }
        }
    }
}

#[test]
fn labels_and_spec_go_into_the_metadata() {
    let mut ck = checkpoint(
        &[4, 3],
        vec![Activation::Softmax],
        Loss::CrossEntropy,
        NormalizeMethod::None,
    );
    ck.class_names = Some(vec!["cat".into(), "dog".into(), "emu".into()]);
    let m = from_onnx(&to_onnx(&ck).unwrap()).unwrap();
    let meta: HashMap<_, _> = m
        .metadata_props
        .iter()
        .map(|e| (e.key(), e.value()))
        .collect();
    assert_eq!(meta["class_names"], r#"["cat","dog","emu"]"#);
    assert_eq!(meta["sizes"], "[4,3]");
    assert_eq!(meta["activations"], "softmax");
    assert_eq!(ops(&m), ["Gemm", "Softmax", "ArgMax"]);
}

#[test]
fn parameters_that_do_not_fit_the_model_are_refused() {
    let mut ck = checkpoint(
        &[4, 3],
        vec![Activation::Softmax],
        Loss::CrossEntropy,
        NormalizeMethod::None,
    );
    ck.params.pop();
    let e = to_onnx(&ck).unwrap_err().to_string();
    assert!(e.contains("parameters"), "{e}");
}
