//! The data specs of the command line: one string names a built-in set or files to load.

use std::path::Path;

use super::csv::{load_csv_with, CsvOptions, CsvTarget};
use super::digits::{digits, DIGITS_RANGE};
use super::idx::{fashion_mnist, load_idx};
use super::npy::load_npy;
use super::Dataset;
use crate::error::{Error, Result};

/// The accepted forms, for help texts and error messages.
pub const SPEC_FORMS: &str = "digits (built in), csv:PATH (label in the last column), \
    csv:PATH:label=COL (label column by header name or 0-based index), csv:PATH:targets=K \
    (the last K columns are real-valued targets), idx:IMAGES_FILE,LABELS_FILE (MNIST format), \
    npy:FEATURES.npy,LABELS.npy (NumPy arrays), \
    fashion-mnist, fashion-mnist-test";

/// Loads the dataset that `spec` names; see [`SPEC_FORMS`].
pub fn load_spec(spec: &str) -> Result<Dataset> {
    load_spec_with(spec, &CsvOptions::default())
}

/// [`load_spec`], reading `csv:` files with `csv` (delimiter, header).
pub fn load_spec_with(spec: &str, csv: &CsvOptions) -> Result<Dataset> {
    match spec {
        "digits" => return digits(),
        "fashion-mnist" => return fashion_mnist(false),
        "fashion-mnist-test" => return fashion_mnist(true),
        _ => {}
    }
    if let Some(rest) = spec.strip_prefix("csv:") {
        let (path, target) = csv_spec(spec, rest)?;
        return load_csv_with(Path::new(path), target, csv);
    }
    if let Some(rest) = spec.strip_prefix("npy:") {
        return match rest.split_once(',') {
            Some((x, y)) if !x.is_empty() && !y.is_empty() && !y.contains(',') => {
                load_npy(Path::new(x), Path::new(y))
            }
            _ => Err(bad_spec(
                spec,
                "give two files separated by one comma: npy:FEATURES.npy,LABELS.npy",
            )),
        };
    }
    if let Some(rest) = spec.strip_prefix("idx:") {
        return match rest.split_once(',') {
            Some((images, labels))
                if !images.is_empty() && !labels.is_empty() && !labels.contains(',') =>
            {
                load_idx(Path::new(images), Path::new(labels))
            }
            _ => Err(bad_spec(
                spec,
                "give two files separated by one comma: idx:IMAGES_FILE,LABELS_FILE",
            )),
        };
    }
    let hint = if [".csv", ".csv.gz", ".txt"]
        .iter()
        .any(|e| spec.ends_with(e))
    {
        format!(" (to load a CSV file, write csv:{spec})")
    } else {
        String::new()
    };
    Err(Error::InvalidData(format!(
        "unknown data spec \"{spec}\"{hint}; use one of: {SPEC_FORMS}"
    )))
}

/// The files a data spec reads (none for the built-in digits; the installed files for
/// Fashion-MNIST), so that a command can refuse an output that would overwrite its input.
pub fn spec_paths(spec: &str) -> Vec<std::path::PathBuf> {
    let fashion = |prefix: &str| {
        ["images-idx3-ubyte", "labels-idx1-ubyte"]
            .iter()
            .flat_map(|n| {
                let base = Path::new(super::idx::FASHION_MNIST_DIR).join(format!("{prefix}-{n}"));
                [base.clone(), base.with_extension("gz")]
            })
            .collect()
    };
    match spec {
        "fashion-mnist" => return fashion("train"),
        "fashion-mnist-test" => return fashion("t10k"),
        _ => {}
    }
    if let Some(rest) = spec.strip_prefix("csv:") {
        return csv_spec(spec, rest)
            .map(|(path, _)| vec![Path::new(path).to_path_buf()])
            .unwrap_or_default();
    }
    let pair = spec
        .strip_prefix("idx:")
        .or_else(|| spec.strip_prefix("npy:"))
        .and_then(|r| r.split_once(','));
    if let Some((images, labels)) = pair {
        return vec![images.into(), labels.into()];
    }
    Vec::new()
}

/// The known range of the features of `spec`'s dataset, used by unit normalization: 16 for
/// digits, 255 for IDX images and Fashion-MNIST, `None` for CSV (fitted from the data).
pub fn known_range(spec: &str) -> Option<f32> {
    match spec {
        "digits" => Some(DIGITS_RANGE),
        "fashion-mnist" | "fashion-mnist-test" => Some(255.0),
        s if s.starts_with("idx:") => Some(255.0),
        _ => None,
    }
}

/// The path and target of `csv:PATH[:label=COL|:targets=K]`; `rest` is the part after `csv:`.
fn csv_spec<'a>(spec: &str, rest: &'a str) -> Result<(&'a str, CsvTarget)> {
    let (path, target) = match rest.rsplit_once(':') {
        Some((path, opt)) if opt.starts_with("label=") => {
            let col = &opt["label=".len()..];
            if col.is_empty() {
                return Err(bad_spec(
                    spec,
                    "label= needs a column name or 0-based index",
                ));
            }
            let column = Some(col.to_string());
            (path, CsvTarget::Label { column })
        }
        Some((path, opt)) if opt.starts_with("targets=") => {
            let k = &opt["targets=".len()..];
            match k.parse::<usize>() {
                Ok(count) if count > 0 => (path, CsvTarget::Values { count }),
                _ => {
                    return Err(bad_spec(
                        spec,
                        &format!("targets=K needs a whole number K of at least 1, not \"{k}\""),
                    ))
                }
            }
        }
        _ => (rest, CsvTarget::Label { column: None }),
    };
    if path.is_empty() {
        return Err(bad_spec(spec, "the file path is missing: write csv:PATH"));
    }
    Ok((path, target))
}

fn bad_spec(spec: &str, why: &str) -> Error {
    Error::InvalidData(format!(
        "data spec \"{spec}\": {why}; accepted forms: {SPEC_FORMS}"
    ))
}
