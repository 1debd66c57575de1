//! XOR learned by a 2-4-1 sigmoid network from a fixed seed, on the best GPU adapter (or the CPU
//! reference when there is none): `cargo run --release --example xor`.

use gpumlp::{Activation, Dataset, Device, Loss, ModelSpec, TrainConfig, Trainer};

fn main() -> anyhow::Result<()> {
    let spec = ModelSpec::new(
        &[2, 4, 1],
        Activation::Sigmoid,
        Activation::Sigmoid,
        Loss::SquaredError,
    )?;
    let x = vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let data = Dataset::from_classes(x.clone(), 2, vec![0, 1, 1, 0], 2)?;
    let mut config = TrainConfig::default();
    config.lr = 2.0;
    config.batch_size = 4;
    config.epochs = 3000;
    config.seed = 1;
    let mut trainer = Trainer::builder(&spec)
        .device(Device::default())
        .config(config)
        .build()?;
    println!("device: {}", trainer.placement().unwrap_or_default());
    trainer.fit(&data, None, |r| {
        if r.epoch % 500 == 0 {
            println!(
                "epoch {:>4}: loss {:.5}, accuracy {:.2}",
                r.epoch,
                r.train_loss,
                r.train_accuracy.unwrap_or(0.0)
            );
        }
    })?;
    let y = trainer.predict(&x, 4)?;
    for (row, y) in x.chunks(2).zip(&y) {
        println!(
            "{} XOR {} -> {:.4} ({})",
            row[0],
            row[1],
            y,
            (*y >= 0.5) as u8
        );
    }
    Ok(())
}
