//! `gpumlp` on real-world CSV: `--delimiter`, `--header`, quoted fields holding the delimiter
//! and newlines, string labels, and the closed sets of values the flags take.

use gpumlp::checkpoint::Checkpoint;
use std::path::Path;

mod common;

use common::cli::{fails, gpumlp, ok, p, text};

/// 60 rows of `petal;sepal;species`, semicolon-separated, with quoted names that hold the
/// delimiter, a doubled quote and a newline; and a header whose second name is a number.
fn flowers(dir: &Path) -> (String, [&'static str; 3]) {
    let names = ["setosa; wild", "versi\"color\"", "virgin\nica"];
    let mut csv = String::from("petal;2019;species\n");
    for i in 0..60 {
        let c = i % 3;
        let jitter = (i as f32 * 0.37).sin() * 0.2;
        let quoted = names[c].replace('"', "\"\"");
        csv += &format!(
            "{};{};\"{quoted}\"\n",
            c as f32 + jitter,
            2.0 - c as f32 - jitter
        );
    }
    let path = p(dir, "flowers.csv");
    std::fs::write(&path, csv).unwrap();
    (format!("csv:{path}"), names)
}

#[test]
fn a_semicolon_csv_with_quoted_names_trains_evaluates_and_predicts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, names) = flowers(dir.path());
    let model = p(dir.path(), "m.safetensors");
    let csv_flags = ["--delimiter", ";", "--header", "on"];
    let mut train = vec![
        "train", "--data", &spec, "--epochs", "40", "--lr", "0.05", "--device", "cpu", "--out",
        &model, "--quiet",
    ];
    train.extend(csv_flags);
    ok(&train);
    let ck = Checkpoint::load(Path::new(&model)).unwrap();
    let mut sorted = names.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(ck.class_names.as_deref().unwrap(), sorted);

    let mut eval = vec![
        "eval", "--model", &model, "--data", &spec, "--device", "cpu", "--json",
    ];
    eval.extend(csv_flags);
    let o = gpumlp(&eval);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["classes"], serde_json::json!(sorted));
    assert!(v["accuracy"].as_f64().unwrap() > 0.95, "{v}");

    let preds = p(dir.path(), "preds.csv");
    let mut predict = vec![
        "predict", "--model", &model, "--data", &spec, "--device", "cpu", "--out", &preds,
    ];
    predict.extend(csv_flags);
    ok(&predict);
    // The predictions are CSV too: names with quotes, delimiters or newlines come back intact.
    let mut r = csv::Reader::from_path(&preds).unwrap();
    let predicted: Vec<String> = r.records().map(|rec| rec.unwrap()[0].to_string()).collect();
    assert_eq!(predicted.len(), 60);
    let right = (0..60).filter(|&i| predicted[i] == names[i % 3]).count();
    assert!(right > 56, "{right}/60 right: {predicted:?}");

    // Read with the default comma and an auto header, the file is one column: said clearly.
    fails(
        &["train", "--data", &spec, "--device", "cpu", "--quiet"],
        &["flowers.csv", "1 column"],
    );
}

#[test]
fn the_config_file_takes_the_csv_keys_and_resume_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _) = flowers(dir.path());
    let model = p(dir.path(), "m.safetensors");
    let config = p(dir.path(), "run.toml");
    std::fs::write(
        &config,
        format!(
            "data = {spec:?}\ndelimiter = \";\"\nheader = \"on\"\nepochs = 1\ndevice = \"cpu\"\n"
        ),
    )
    .unwrap();
    ok(&["train", "--config", &config, "--out", &model, "--quiet"]);
    // The run's arguments keep them: resuming reads the data as it was read.
    ok(&[
        "train", "--resume", &model, "--epochs", "2", "--quiet", "--device", "cpu",
    ]);
    let info = ok(&["info", "--model", &model]);
    assert!(
        info.contains("delimiter = \";\"") && info.contains("header = \"on\""),
        "{info}"
    );
    // A file's delimiter is checked as the flag's is.
    std::fs::write(&config, "delimiter = \"ab\"\nepochs = 1\n").unwrap();
    fails(
        &["train", "--config", &config, "--device", "cpu"],
        &["--delimiter \"ab\"", "one ASCII character"],
    );
}

#[test]
fn flag_values_are_listed_and_typos_get_suggestions() {
    let help = ok(&["train", "-h"]);
    for values in [
        "auto, gpu, cpu, reference",
        "sgd, momentum, adam",
        "none, unit, standard",
        "val_loss, val_accuracy, train_loss",
        "vulkan, metal, dx12, gl",
    ] {
        assert!(help.contains(values), "--help lacks {values}:\n{help}");
    }
    fails(
        &["train", "--device", "gpus"],
        &["invalid value 'gpus'", "similar value exists: 'gpu'"],
    );
    fails(
        &["eval", "--header", "yes"],
        &["invalid value 'yes'", "on, off"],
    );
    fails(
        &["train", "--delimiter", "ab"],
        &["--delimiter", "one ASCII character"],
    );
    // Spellings accepted before stay accepted.
    ok(&[
        "train",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--loss",
        "MSE",
        "--output-activation",
        "softmax",
        "--quiet",
    ]);
    // Conflicts are declared to clap.
    fails(
        &["bench", "--fused-mlp", "--layered"],
        "cannot be used with",
    );
}
