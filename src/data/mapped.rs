//! Memory-mapped training inputs: uncompressed IDX images and float32 `.npy` matrices, read a
//! row at a time by [`RowSource::gather_features`] so a training set larger than memory can
//! stream. Labels are small and are read into memory. Features are the same numbers the
//! in-memory loaders ([`super::load_idx`], [`super::load_npy`]) give.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::rows::{check_gather, RowSource};
use super::{idx, npy, Targets};
use crate::error::{Error, Result};

/// Maps `path` read-only.
fn map(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| super::source::open_error(path, e))?;
    map_file(&file, path)
}

/// Maps an open file read-only.
fn map_file(file: &std::fs::File, path: &Path) -> Result<Mmap> {
    // SAFETY: the map is read-only; a file truncated or rewritten by another process while it
    // is mapped is outside what gpumlp supports (as for any memory-mapped reader).
    unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, e))
}

/// `idx:IMAGES,LABELS` with the images memory-mapped (u8 pixels become f32 0..=255).
pub struct MappedIdx {
    map: Mmap,
    /// Where the pixels start in `map`.
    offset: usize,
    rows: usize,
    cols: usize,
    targets: Targets,
    path: PathBuf,
}

impl MappedIdx {
    /// # Errors
    /// A gzip-compressed images file (a compressed stream cannot be mapped: decompress it with
    /// `gunzip -k`, or train without streaming), and every error of [`super::load_idx`].
    pub fn open(images: &Path, labels: &Path) -> Result<MappedIdx> {
        let map = map(images)?;
        if super::source::is_gzip(&map) {
            return Err(Error::file(
                images,
                "is gzip-compressed, and a compressed file cannot be memory-mapped: decompress it (gunzip -k FILE) to stream it from the file, or load it into memory (load_idx)",
            ));
        }
        let (dims, data) = idx::parse_mapped(&map, images, idx::IDX_IMAGES_MAGIC)?;
        let offset = map.len() - data.len();
        let (n, h, w) = (dims[0], dims[1], dims[2]);
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::file(
                images,
                format!("holds {n} images of {h}×{w} pixels: there are no samples or features"),
            ));
        }
        let (labels, classes) = idx::read_labels(labels, images, n)?;
        Ok(MappedIdx {
            map,
            offset,
            rows: n,
            cols: h * w,
            targets: Targets::Classes { labels, classes },
            path: images.to_path_buf(),
        })
    }
}

impl RowSource for MappedIdx {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn targets(&self) -> &Targets {
        &self.targets
    }
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()> {
        check_gather(idx, x, self.rows, self.cols)?;
        let c = self.cols;
        let pixels = &self.map[self.offset..];
        for (dst, &r) in x.chunks_exact_mut(c).zip(idx) {
            let r = r as usize;
            for (d, &p) in dst.iter_mut().zip(&pixels[r * c..(r + 1) * c]) {
                *d = p as f32;
            }
        }
        Ok(())
    }
    fn mapped(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for MappedIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedIdx({}, {}×{})",
            self.path.display(),
            self.rows,
            self.cols
        )
    }
}

/// `npy:FEATURES,LABELS` with float32 C-order features `[n, in]` memory-mapped.
pub struct MappedNpy {
    map: Mmap,
    offset: usize,
    rows: usize,
    cols: usize,
    targets: Targets,
    class_names: Option<Vec<String>>,
    path: PathBuf,
}

impl MappedNpy {
    /// # Errors
    /// Features that are not little-endian float32 in C order with 1 or 2 dimensions (float64
    /// or Fortran order cannot be read in place: convert with
    /// `np.save(f, np.ascontiguousarray(x, dtype='<f4'))`, or load them into memory), and
    /// every error of [`super::load_npy`].
    pub fn open(features: &Path, labels: &Path) -> Result<MappedNpy> {
        let (checked, file) = npy::read_header(features)?;
        let h = &checked.header;
        if h.kind != 'f' || h.size != 4 || h.fortran {
            return Err(npy::bad(
                features,
                format!(
                    "dtype {}{}{} cannot be memory-mapped, only float32 in C order can: convert it with np.save(path, np.ascontiguousarray(x, dtype='<f4')) to stream it from the file, or load it into memory (load_npy)",
                    h.kind,
                    h.size,
                    if h.fortran { " in Fortran order" } else { "" }
                ),
            ));
        }
        let (rows, cols) = match h.shape[..] {
            [n] => (n, 1),
            [n, k] => (n, k),
            ref s => {
                return Err(npy::bad(
                    features,
                    format!("shape {s:?}: 1 or 2 dimensions are read"),
                ))
            }
        };
        if rows == 0 || cols == 0 {
            return Err(Error::InvalidData(format!(
                "{} holds {rows} rows of {cols} features: the dataset is empty",
                features.display()
            )));
        }
        let map = map_file(&file, features)?;
        let offset = usize::try_from(checked.offset).unwrap_or(usize::MAX);
        if offset.checked_add(checked.data_bytes) != Some(map.len()) {
            return Err(npy::bad(features, "the file changed while it was opened"));
        }
        let (targets, class_names) = npy::read_targets(labels, rows, features)?;
        Ok(MappedNpy {
            map,
            offset,
            rows,
            cols,
            targets,
            class_names,
            path: features.to_path_buf(),
        })
    }
}

impl RowSource for MappedNpy {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn targets(&self) -> &Targets {
        &self.targets
    }
    fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()> {
        check_gather(idx, x, self.rows, self.cols)?;
        let row_bytes = self.cols * 4;
        let data = &self.map[self.offset..];
        for (dst, &r) in x.chunks_exact_mut(self.cols).zip(idx) {
            let r = r as usize;
            let src = &data[r * row_bytes..(r + 1) * row_bytes];
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }
    fn mapped(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for MappedNpy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedNpy({}, {}×{})",
            self.path.display(),
            self.rows,
            self.cols
        )
    }
}

/// The memory-mapped source of a data spec (`idx:IMAGES,LABELS` or
/// `npy:FEATURES.npy,LABELS.npy`), or `None` for other specs (CSV, built-in sets), which are
/// loaded into memory.
///
/// # Errors
/// As [`MappedIdx::open`] and [`MappedNpy::open`].
pub fn open_spec(spec: &str) -> Result<Option<Box<dyn RowSource>>> {
    let pair = |rest: &str| -> Option<(PathBuf, PathBuf)> {
        match rest.split_once(',') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(',') => {
                Some((a.into(), b.into()))
            }
            _ => None,
        }
    };
    if let Some((a, b)) = spec.strip_prefix("idx:").and_then(pair) {
        return Ok(Some(Box::new(MappedIdx::open(&a, &b)?)));
    }
    if let Some((a, b)) = spec.strip_prefix("npy:").and_then(pair) {
        return Ok(Some(Box::new(MappedNpy::open(&a, &b)?)));
    }
    Ok(None)
}
