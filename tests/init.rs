//! Seeded initialization (Xavier/Glorot uniform, He/Kaiming uniform, zero biases) and the
//! activation derivatives at 0 that the lecture notes fix. Host-side only: no adapter needed.

use gpumlp::model::{Activation, Loss, ModelSpec};

/// One layer per activation, wide enough that the largest |w| of each layer comes within 1% of
/// its bound (the smallest layer has 1000 weights: P(max < 0.99·bound) = 0.99^1000 ≈ 4e-5).
fn every_activation() -> ModelSpec {
    ModelSpec::with_activations(
        &[257, 300, 200, 150, 129, 100, 10],
        vec![
            Activation::Relu,
            Activation::Sigmoid,
            Activation::LeakyRelu(0.01),
            Activation::Tanh,
            Activation::Identity,
            Activation::Softmax,
        ],
        Loss::CrossEntropy,
    )
    .unwrap()
}

/// The bound the issue names: Xavier `√(6/(in+out))` for identity, sigmoid, tanh and softmax;
/// He uniform `√(6/in)` (variance `2/in`) for the ReLU family. Written out here, independently of
/// `src/model.rs`, so that a change of variant there fails this test.
fn expected_bound(act: Activation, inputs: usize, outputs: usize) -> f64 {
    match act {
        Activation::Relu | Activation::LeakyRelu(_) => (6.0 / inputs as f64).sqrt(),
        Activation::Identity | Activation::Sigmoid | Activation::Tanh | Activation::Softmax => {
            (6.0 / (inputs + outputs) as f64).sqrt()
        }
        Activation::Step => unreachable!("step layers are not initialized for training"),
        other => panic!("{other:?}: add its expected bound here"),
    }
}

#[test]
fn weights_are_uniform_within_the_xavier_or_he_bound_and_biases_zero() {
    let spec = every_activation();
    let params = spec.init_params(42);
    assert_eq!(params.len(), spec.param_count());
    for (l, (layout, &act)) in spec.layout().iter().zip(&spec.activations).enumerate() {
        let bound = expected_bound(act, layout.inputs, layout.outputs);
        let w = &params[layout.weight..layout.bias];
        let what = format!(
            "layer {l} ({act}, {}→{}, bound {bound:.5})",
            layout.inputs, layout.outputs
        );
        let max = w.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
        // f32 rounding of the bound itself: allow one ulp.
        assert!(
            max <= bound * (1.0 + 1e-6),
            "{what}: |w| up to {max} is over the bound"
        );
        assert!(
            max >= 0.99 * bound,
            "{what}: the largest |w| is only {max}: the bound in use is smaller (another variant?)"
        );
        // U(−b, b) has mean 0 and variance b²/3.
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 * bound,
            "{what}: mean {mean} is not near 0"
        );
        let want_var = bound * bound / 3.0;
        assert!(
            (var / want_var - 1.0).abs() < 0.1,
            "{what}: variance {var}, a uniform over ±bound has {want_var}"
        );
        let b = &params[layout.bias..layout.end()];
        assert!(
            b.iter().all(|&v| v == 0.0),
            "{what}: biases must start at zero"
        );
    }
}

#[test]
fn he_and_xavier_bounds_differ_where_the_test_can_tell_them_apart() {
    // The relu layer 257→300: He √(6/257) ≈ 0.153, Xavier √(6/557) ≈ 0.104. The test above
    // requires max |w| ≥ 0.99 × He bound, which a Xavier-initialized layer cannot reach.
    let he = expected_bound(Activation::Relu, 257, 300);
    let xavier = expected_bound(Activation::Sigmoid, 257, 300);
    assert!(0.99 * he > xavier, "{he} vs {xavier}");
}

#[test]
fn same_seed_same_parameters_different_seed_different_parameters() {
    let spec = every_activation();
    let a = spec.init_params(7);
    let b = spec.init_params(7);
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the same seed must give bit-identical parameters"
    );
    let c = spec.init_params(8);
    let weights: usize = spec.layout().iter().map(|l| l.weight_len()).sum();
    let differ = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    // Every weight is an independent draw: all but a handful must change with the seed.
    assert!(
        differ as f64 > 0.999 * weights as f64,
        "seeds 7 and 8 share {} of {weights} weights",
        weights - differ
    );
    // A different architecture from the same seed is still deterministic.
    let small = ModelSpec::new(
        &[3, 5, 2],
        Activation::Tanh,
        Activation::Sigmoid,
        Loss::BinaryCrossEntropy,
    )
    .unwrap();
    assert_eq!(small.init_params(0), small.init_params(0));
    assert_ne!(small.init_params(0), small.init_params(1));
}

#[test]
fn relu_and_leaky_relu_derivatives_at_zero_are_one() {
    // The lecture notes define relu'(0) = 1; leaky relu follows it.
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::LeakyRelu(0.2),
    ] {
        assert_eq!(act.derivative(0.0), 1.0, "{act}'(0)");
        assert_eq!(act.derivative(-0.0), 1.0, "{act}'(-0)");
        assert_eq!(act.derivative(1e-30), 1.0, "{act}'(tiny > 0)");
        assert_eq!(act.apply(0.0), 0.0, "{act}(0)");
    }
    assert_eq!(Activation::Relu.derivative(-1e-30), 0.0, "relu'(tiny < 0)");
    assert_eq!(
        Activation::LeakyRelu(0.01).derivative(-1e-30),
        0.01,
        "leaky_relu'(tiny < 0) = alpha"
    );
    assert_eq!(Activation::LeakyRelu(0.01).apply(-2.0), -0.02);
}
