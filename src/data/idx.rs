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
    let (dims, pixels) = read_idx(images, IDX_IMAGES_MAGIC)?;
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
    let (labels, classes) = read_labels(labels, images, n)?;
    // The features take 4 bytes per pixel: checked before they are made.
    crate::limits::check_host_bytes(
        &format!(
            "the features of {} ({n} images of {rows}×{cols} pixels as 32-bit floats)",
            images.display()
        ),
        crate::limits::bytes_of(&[pixels.len()], 4),
        "use a smaller dataset",
    )?;
    let features = pixels.iter().map(|&p| p as f32).collect();
    Dataset::from_classes(features, rows * cols, labels, classes)
}

/// The labels of `n` images (read from `images`): the labels, and the class count (10
/// unless a label is 10 or more, then max + 1).
pub(super) fn read_labels(labels: &Path, images: &Path, n: usize) -> Result<(Vec<u32>, usize)> {
    let (label_dims, label_data) = read_idx(labels, IDX_LABELS_MAGIC)?;
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
    Ok((label_data.iter().map(|&l| l as u32).collect(), classes))
}

/// Checks a whole (memory-mapped) IDX file: its dimensions and its data.
pub(super) fn parse_mapped<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
) -> Result<(Vec<usize>, &'a [u8])> {
    match parse_idx(bytes, path, magic, Some(bytes.len().to_string())) {
        Ok(v) => Ok(v),
        Err(IdxHeader::Error(e)) => Err(e),
        Err(IdxHeader::Needs(n)) => Err(Error::file(
            path,
            format!("expected {n} bytes: the file is damaged"),
        )),
    }
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

/// Reads an IDX file (plain or gzip) no further than its header promises: the header first,
/// then exactly the data its dimensions describe (checked against the host memory limit before
/// it is read), plus one byte to tell a longer file from an exact one. A gzip bomb or a header
/// that lies fails after reading at most what the header promised.
fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    use std::io::Read;
    let file_len = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let (mut reader, gz) = source::maybe_gunzip(source::open(path)?, path)?;
    let read_err = |e: std::io::Error| {
        if gz {
            source::gzip_error(path, &e)
        } else {
            Error::io(path, e)
        }
    };
    let header_len = 4 + 4 * (magic & 0xff) as u64;
    let mut bytes = Vec::new();
    (&mut reader)
        .take(header_len)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    // The header alone: `parse_idx` checks the magic and the dimensions and says how much data
    // they promise.
    let expected = match parse_idx(&bytes, path, magic, None) {
        Err(IdxHeader::Error(e)) => return Err(e),
        Err(IdxHeader::Needs(expected)) => expected,
        Ok(_) => header_len as usize,
    };
    let data_len = expected - bytes.len().min(expected);
    crate::limits::check_host_bytes(
        &format!("reading {}", path.display()),
        expected as u64,
        "the IDX header promises more data than fits in memory: the file is damaged, or use a smaller dataset",
    )?;
    (&mut reader)
        .take(data_len as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    // Sizes are reported as the file's real size where it is known (a plain file); reading a
    // stream stops one byte past the promised size.
    let found = match (gz, file_len) {
        (false, Some(len)) => len.to_string(),
        _ if bytes.len() > expected => format!("{} or more", bytes.len()),
        _ => bytes.len().to_string(),
    };
    let (dims, header) = match parse_idx(&bytes, path, magic, Some(found)) {
        Ok((dims, data)) => (dims, bytes.len() - data.len()),
        Err(IdxHeader::Error(e)) => return Err(e),
        Err(IdxHeader::Needs(n)) => {
            return Err(Error::file(
                path,
                format!("expected {n} bytes: the file is damaged"),
            ))
        }
    };
    bytes.drain(..header);
    Ok((dims, bytes))
}

/// Why a header could not be parsed: an error, or (while only the header has been read) the
/// total bytes the file should hold.
enum IdxHeader {
    Error(Error),
    Needs(usize),
}

impl From<Error> for IdxHeader {
    fn from(e: Error) -> Self {
        IdxHeader::Error(e)
    }
}

/// Checks an IDX file's magic number and size; returns its dimensions and its data. With
/// `found: None` only the header has been read: a valid header returns `Needs(total bytes)`.
/// `found`: the file's size for messages.
fn parse_idx<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
    found: Option<String>,
) -> std::result::Result<(Vec<usize>, &'a [u8]), IdxHeader> {
    let partial = found.is_none();
    let found = found.unwrap_or_else(|| bytes.len().to_string());
    if bytes.len() < 4 {
        return Err(truncated(path, 4, " or more (the magic number)", &found).into());
    }
    check_magic(path, be_u32(&bytes[0..4]), magic)?;
    let layout = IdxLayout::read(bytes, path, magic, &found)?;
    if partial {
        return Err(IdxHeader::Needs(layout.expected));
    }
    layout.check_size(path, bytes.len(), &found)?;
    Ok((layout.dims, &bytes[layout.header..]))
}

/// The error for an IDX file of `found` bytes that needs `expected` (`detail` says why).
fn truncated(path: &Path, expected: usize, detail: &str, found: &str) -> Error {
    Error::file(
        path,
        format!(
            "truncated IDX file: expected {expected} bytes{detail}, found {}; the file is \
             incomplete: download it again",
            found
        ),
    )
}

/// Refuses a magic number `found_magic` other than `magic`, naming a swapped images/labels pair.
fn check_magic(path: &Path, found_magic: u32, magic: u32) -> Result<()> {
    if found_magic == magic {
        return Ok(());
    }
    let what = if magic == IDX_IMAGES_MAGIC {
        "images [n, rows, cols]"
    } else {
        "labels [n]"
    };
    let hint = match found_magic {
        IDX_LABELS_MAGIC => " (this is a labels file: are the images and labels swapped?)",
        IDX_IMAGES_MAGIC => " (this is an images file: are the images and labels swapped?)",
        _ => "",
    };
    Err(Error::file(
        path,
        format!(
            "not an IDX file of u8 {what}: the magic number is 0x{found_magic:08x}, expected \
             0x{magic:08x}{hint}; pass MNIST-format files such as train-images-idx3-ubyte \
             and train-labels-idx1-ubyte"
        ),
    ))
}

/// What an IDX header describes: its dimensions, its own length and the file's total length.
struct IdxLayout {
    dims: Vec<usize>,
    /// Header bytes: the magic number and one u32 per dimension.
    header: usize,
    /// Header plus data bytes.
    expected: usize,
}

impl IdxLayout {
    /// The layout in the header of `bytes` (whose magic number `magic` is checked); `found`:
    /// the file's size for messages.
    fn read(bytes: &[u8], path: &Path, magic: u32, found: &str) -> Result<Self> {
        let ndim = (magic & 0xff) as usize;
        let header = 4 + 4 * ndim;
        if bytes.len() < header {
            return Err(truncated(path, header, " or more (the header)", found));
        }
        let dims: Vec<usize> = (0..ndim)
            .map(|d| be_u32(&bytes[4 + 4 * d..8 + 4 * d]) as usize)
            .collect();
        let data_len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let Some(expected) = data_len.and_then(|d| d.checked_add(header)) else {
            return Err(Error::file(
                path,
                format!(
                    "the header's dimensions {dims:?} are impossibly large: the file is damaged"
                ),
            ));
        };
        Ok(IdxLayout {
            dims,
            header,
            expected,
        })
    }

    /// Refuses a file of `len` bytes (`found` for messages) shorter or longer than expected.
    fn check_size(&self, path: &Path, len: usize, found: &str) -> Result<()> {
        let (header, expected) = (self.header, self.expected);
        let shape = self
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×");
        let detail = format!(" ({header}-byte header + {shape} data bytes)");
        if len < expected {
            return Err(truncated(path, expected, &detail, found));
        }
        if len > expected {
            return Err(Error::file(
                path,
                format!(
                    "expected {expected} bytes{detail}, found {found}: there is extra data after the \
                     images or labels (reading stopped there), so the file is damaged or not what \
                     its header says"
                ),
            ));
        }
        Ok(())
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
