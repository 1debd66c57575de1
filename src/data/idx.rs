//! MNIST-format IDX files (plain or gzip, detected from the first bytes), and Fashion-MNIST from
//! the Debian package `dataset-fashion-mnist`.
//!
//! An IDX file is a big-endian header — the magic number `0x0000_08NN` (`08` = unsigned bytes,
//! `NN` = number of dimensions), then one u32 per dimension — followed by the data.

use std::path::{Path, PathBuf};

use super::source;
use super::Dataset;
use crate::error::{Error, Result};

/// The magic number of an IDX file of u8 images `[n, rows, cols]`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of u8 labels `[n]`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Where `apt-get install dataset-fashion-mnist` puts the Fashion-MNIST files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Loads images and labels from two IDX files. Features are the raw pixel values (0..=255) as
/// f32, one row per image; there are 10 classes unless a label is 10 or more (then max + 1).
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let image_bytes = source::read_all(images)?;
    let label_bytes = source::read_all(labels)?;
    let (dims, pixels) = parse_idx(&image_bytes, images, IDX_IMAGES_MAGIC)?;
    let (label_dims, label_data) = parse_idx(&label_bytes, labels, IDX_LABELS_MAGIC)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(Error::file(
            images,
            format!("the images are {rows}×{cols} pixels: there are no features"),
        ));
    }
    if n == 0 {
        return Err(Error::file(images, "holds 0 images: the dataset is empty"));
    }
    if label_dims[0] != n {
        return Err(Error::InvalidData(format!(
            "{} holds {n} images but {} holds {} labels: pass the labels that belong to these \
             images (train with train, t10k with t10k)",
            images.display(),
            labels.display(),
            label_dims[0]
        )));
    }
    let max = label_data.iter().copied().max().unwrap_or(0) as usize;
    let classes = if max < 10 { 10 } else { max + 1 };
    let features = pixels.iter().map(|&p| p as f32).collect();
    let labels = label_data.iter().map(|&l| l as u32).collect();
    Dataset::from_classes(features, rows * cols, labels, classes)
}

/// Loads the Fashion-MNIST training set (60000 images) or, with `test`, the test set (10000),
/// from [`FASHION_MNIST_DIR`].
pub fn fashion_mnist(test: bool) -> Result<Dataset> {
    fashion_mnist_from(Path::new(FASHION_MNIST_DIR), test)
}

/// Loads Fashion-MNIST from `dir`, which holds `train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each with or
/// without `.gz`.
pub fn fashion_mnist_from(dir: &Path, test: bool) -> Result<Dataset> {
    let prefix = if test { "t10k" } else { "train" };
    let images = format!("{prefix}-images-idx3-ubyte");
    let labels = format!("{prefix}-labels-idx1-ubyte");
    match (find(dir, &images), find(dir, &labels)) {
        (Some(i), Some(l)) => load_idx(&i, &l),
        _ => Err(Error::file(
            dir,
            format!(
                "the Fashion-MNIST {} files ({images}[.gz] and {labels}[.gz]) are not here: \
                 install them with `apt-get install -y dataset-fashion-mnist`, or pass the files \
                 yourself as idx:IMAGES_FILE,LABELS_FILE",
                if test { "test" } else { "training" }
            ),
        )),
    }
}

/// `dir/name` or `dir/name.gz`, whichever exists.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Checks an IDX file's magic number and size; returns its dimensions and its data.
fn parse_idx<'a>(bytes: &'a [u8], path: &Path, magic: u32) -> Result<(Vec<usize>, &'a [u8])> {
    let what = if magic == IDX_IMAGES_MAGIC {
        "images [n, rows, cols]"
    } else {
        "labels [n]"
    };
    let truncated = |expected: usize, detail: &str| {
        Error::file(
            path,
            format!(
                "truncated IDX file: expected {expected} bytes{detail}, found {}; the file is \
                 incomplete: download it again",
                bytes.len()
            ),
        )
    };
    if bytes.len() < 4 {
        return Err(truncated(4, " or more (the magic number)"));
    }
    let found = be_u32(&bytes[0..4]);
    if found != magic {
        let hint = match found {
            IDX_LABELS_MAGIC => " (this is a labels file: are the images and labels swapped?)",
            IDX_IMAGES_MAGIC => " (this is an images file: are the images and labels swapped?)",
            _ => "",
        };
        return Err(Error::file(
            path,
            format!(
                "not an IDX file of u8 {what}: the magic number is 0x{found:08x}, expected \
                 0x{magic:08x}{hint}; pass MNIST-format files such as train-images-idx3-ubyte \
                 and train-labels-idx1-ubyte"
            ),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header, " or more (the header)"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| be_u32(&bytes[4 + 4 * d..8 + 4 * d]) as usize)
        .collect();
    let data_len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = data_len.and_then(|d| d.checked_add(header)) else {
        return Err(Error::file(
            path,
            format!("the header's dimensions {dims:?} are impossibly large: the file is damaged"),
        ));
    };
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let detail = format!(" ({header}-byte header + {shape} data bytes)");
    if bytes.len() < expected {
        return Err(truncated(expected, &detail));
    }
    if bytes.len() > expected {
        return Err(Error::file(
            path,
            format!(
                "expected {expected} bytes{detail}, found {}: there is extra data after the \
                 images or labels, so the file is damaged or not what its header says",
                bytes.len()
            ),
        ));
    }
    Ok((dims, &bytes[header..]))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
