//! The lecture's experiment on why shuffling matters: 10,000 points, half on the parabola
//! y = x² and half uniformly random, classified by a network with one hidden layer of 3 units.
//! Trained with a fresh shuffle every epoch, then in a fixed order (random points first, then
//! parabola points first), and evaluated on all points.
//! `cargo run --release --example shuffle_matters`

use gpumlp::{Activation, Dataset, Device, Loss, ModelSpec, Optimizer, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 5,000 points on the parabola (label 1) and 5,000 uniform in [-1, 1] × [0, 1] (label 0),
/// in the order given.
fn points(parabola_first: bool) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut parabola = Vec::new();
    let mut random = Vec::new();
    for _ in 0..5000 {
        let x: f32 = rng.random_range(-1.0..1.0);
        parabola.extend_from_slice(&[x, x * x]);
        random.extend_from_slice(&[rng.random_range(-1.0..1.0), rng.random_range(0.0..1.0)]);
    }
    let (first, second, labels) = if parabola_first {
        (parabola, random, [1u32, 0])
    } else {
        (random, parabola, [0u32, 1])
    };
    let mut x = first;
    x.extend(second);
    let y = [vec![labels[0]; 5000], vec![labels[1]; 5000]].concat();
    Dataset::from_classes(x, 2, y, 2).expect("finite points")
}

fn train(data: &Dataset, shuffle: bool) -> anyhow::Result<f64> {
    let spec = ModelSpec::new(
        &[2, 3, 1],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::BinaryCrossEntropy,
    )?;
    let mut config = TrainConfig::default();
    config.lr = 0.5;
    config.optimizer = Optimizer::Sgd;
    config.batch_size = 10;
    config.epochs = 20;
    config.seed = 1;
    config.shuffle = shuffle;
    let mut trainer = Trainer::builder(&spec)
        .device(Device::default())
        .config(config)
        .init_seed(7)
        .build()?;
    trainer.fit(data, None, |_| {})?;
    Ok(trainer.evaluate(&points(false))?.accuracy())
}

fn main() -> anyhow::Result<()> {
    let shuffled = train(&points(false), true)?;
    let random_first = train(&points(false), false)?;
    let parabola_first = train(&points(true), false)?;
    println!("accuracy on all 10,000 points after 20 epochs:");
    println!(
        "  shuffled every epoch:              {:.1}%",
        shuffled * 100.0
    );
    println!(
        "  in order, random points first:     {:.1}%",
        random_first * 100.0
    );
    println!(
        "  in order, parabola points first:   {:.1}%",
        parabola_first * 100.0
    );
    println!("(the lecture saw about 95%, 75% and 50%)");
    Ok(())
}
