//! `.npy` files as NumPy writes them (format versions 1–3): features `[n, in]` as float32 or
//! float64, and labels `[n]` as integers or strings (`<U`, `|S`), or float targets `[n, k]`
//! (`npy:FEATURES.npy,LABELS.npy`). Little-endian and C or Fortran order; the data must be
//! exactly as long as the header promises, and nothing is read beyond it.

use super::Dataset;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The header's promise: element type, order and shape.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Header {
    /// `f` float, `i` signed, `u` unsigned, `b` bool, `U` UTF-32 string, `S` byte string.
    pub(super) kind: char,
    /// Bytes per element (per string for `U`/`S`).
    pub(super) size: usize,
    pub(super) fortran: bool,
    pub(super) shape: Vec<usize>,
}

/// One array: its header and raw little-endian bytes.
struct Array {
    header: Header,
    data: Vec<u8>,
}

pub(super) fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::file(path, format!("not a readable .npy file: {}", why.into()))
}

/// Longest header we accept (NumPy pads headers to 64 bytes; 64 KiB is far more than any).
const MAX_HEADER: usize = 1 << 16;

fn read_array(path: &Path) -> Result<Array> {
    let (header, mut f) = read_header(path)?;
    let mut data = vec![0u8; header.data_bytes];
    f.read_exact(&mut data).map_err(|e| Error::io(path, e))?;
    Ok(Array {
        header: header.header,
        data,
    })
}

/// A checked header: the file holds exactly `data_bytes` after `offset`.
pub(super) struct Checked {
    pub(super) header: Header,
    pub(super) offset: u64,
    pub(super) data_bytes: usize,
}

/// Reads and checks `path`'s header, leaving the file at the data.
pub(super) fn read_header(path: &Path) -> Result<(Checked, std::fs::File)> {
    let mut f = std::fs::File::open(path).map_err(|e| super::source::open_error(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| bad(path, "shorter than the 8-byte preamble"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad(path, "the magic \\x93NUMPY is missing"));
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b)
                .map_err(|_| bad(path, "truncated header"))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b)
                .map_err(|_| bad(path, "truncated header"))?;
            u32::from_le_bytes(b) as usize
        }
        v => {
            return Err(bad(
                path,
                format!("format version {v} (1, 2 and 3 are read)"),
            ))
        }
    };
    if header_len > MAX_HEADER {
        return Err(bad(
            path,
            format!("a header of {header_len} bytes (the limit is {MAX_HEADER})"),
        ));
    }
    let mut text = vec![0u8; header_len];
    f.read_exact(&mut text)
        .map_err(|_| bad(path, "truncated header"))?;
    let text = String::from_utf8(text).map_err(|_| bad(path, "the header is not text"))?;
    let header = parse_header(&text).map_err(|why| bad(path, why))?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(header.size))
        .ok_or_else(|| bad(path, format!("shape {:?} overflows", header.shape)))?;
    let offset = if magic[6] == 1 { 10 } else { 12 } + header_len as u64;
    let left = file_len.saturating_sub(offset);
    if left != count as u64 {
        return Err(bad(
            path,
            format!(
                "the header promises {count} data bytes (shape {:?}), the file holds {left}",
                header.shape
            ),
        ));
    }
    Ok((
        Checked {
            header,
            offset,
            data_bytes: count,
        },
        f,
    ))
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let value = |key: &str| -> std::result::Result<&str, String> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("the header has no '{key}'"))?;
        let rest = text[at + key.len() + 2..].trim_start();
        Ok(rest
            .strip_prefix(':')
            .ok_or("a malformed header")?
            .trim_start())
    };
    let descr = value("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("a malformed 'descr'")?;
    let mut chars = descr.chars();
    let order = chars.next().ok_or("an empty 'descr'")?;
    let kind = chars.next().ok_or("a malformed 'descr'")?;
    let width: usize = chars
        .as_str()
        .parse()
        .map_err(|_| format!("dtype '{descr}'"))?;
    if order == '>' && width > 1 {
        return Err(format!(
            "big-endian dtype '{descr}': save it little-endian (arr.astype('<{kind}{width}'))"
        ));
    }
    let size = if kind == 'U' {
        width.checked_mul(4).ok_or("dtype too wide")?
    } else {
        width
    };
    let fortran = value("fortran_order")?.starts_with("True");
    let shape_text = value("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("a malformed 'shape'")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("shape entry '{s}'")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        kind,
        size,
        fortran,
        shape,
    })
}

impl Array {
    pub(super) fn rows_cols(&self, path: &Path) -> Result<(usize, usize)> {
        match self.header.shape[..] {
            [n] => Ok((n, 1)),
            [n, k] => Ok((n, k)),
            ref s => Err(bad(
                path,
                format!("shape {s:?}: 1 or 2 dimensions are read"),
            )),
        }
    }

    /// The elements as f64, in C (row-major) order.
    fn numbers(&self, path: &Path) -> Result<Vec<f64>> {
        let h = &self.header;
        let v: Vec<f64> = match (h.kind, h.size) {
            ('f', 4) => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('f', 8) => self
                .data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            ('i' | 'u' | 'b', 1) if h.kind == 'i' => {
                self.data.iter().map(|&b| b as i8 as f64).collect()
            }
            ('u' | 'b', 1) => self.data.iter().map(|&b| b as f64).collect(),
            ('i', 2) => self
                .data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('u', 2) => self
                .data
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('i', 4) => self
                .data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('u', 4) => self
                .data
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('i', 8) => self
                .data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            ('u', 8) => self
                .data
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            (k, s) => {
                return Err(bad(
                    path,
                    format!("element type {k}{s} is not a number type this reader takes"),
                ))
            }
        };
        self.c_order(v, path)
    }

    fn c_order<T: Clone>(&self, v: Vec<T>, path: &Path) -> Result<Vec<T>> {
        if !self.header.fortran {
            return Ok(v);
        }
        let (n, k) = self.rows_cols(path)?;
        Ok((0..n * k).map(|i| v[(i % k) * n + i / k].clone()).collect())
    }

    /// The elements as strings (`U`: UTF-32, `S`: bytes; trailing NULs dropped).
    fn strings(&self, path: &Path) -> Result<Vec<String>> {
        let h = &self.header;
        let size = h.size.max(1);
        self.data
            .chunks_exact(size)
            .enumerate()
            .map(|(i, b)| match h.kind {
                'U' => b
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .take_while(|&c| c != 0)
                    .map(|c| {
                        char::from_u32(c)
                            .ok_or_else(|| bad(path, format!("element {i} is not text")))
                    })
                    .collect(),
                _ => {
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    String::from_utf8(b[..end].to_vec())
                        .map_err(|_| bad(path, format!("element {i} is not UTF-8")))
                }
            })
            .collect()
    }
}

/// Loads `npy:FEATURES.npy,LABELS.npy`: features `[n, in]` (float32 or float64); labels `[n]`
/// integers (classes `0..=max`) or strings (a sorted vocabulary), or float targets `[n]` or
/// `[n, k]` (regression).
///
/// # Errors
/// A file that is not `.npy`, a type or shape this reader does not take, rows that disagree,
/// negative labels, or non-finite values; each names the file.
pub fn load_npy(features: &Path, labels: &Path) -> Result<Dataset> {
    let x = read_array(features)?;
    if x.header.kind != 'f' {
        return Err(bad(features, "features must be float32 or float64"));
    }
    let (rows, cols) = x.rows_cols(features)?;
    let feats: Vec<f32> = x.numbers(features)?.into_iter().map(|v| v as f32).collect();
    let (targets, class_names) = read_targets(labels, rows, features)?;
    let ds = Dataset {
        features: feats,
        rows,
        cols,
        targets,
        class_names,
    };
    ds.validate()?;
    Ok(ds)
}

/// The labels file of `npy:FEATURES,LABELS` for `rows` feature rows (read from `features`):
/// targets, and the sorted vocabulary of string labels.
pub(super) fn read_targets(
    labels: &Path,
    rows: usize,
    features: &Path,
) -> Result<(super::Targets, Option<Vec<String>>)> {
    let y = read_array(labels)?;
    let (label_rows, width) = y.rows_cols(labels)?;
    if label_rows != rows {
        return Err(Error::shape(
            format!("{}: rows", labels.display()),
            format!("{rows} (as {})", features.display()),
            label_rows,
        ));
    }
    match y.header.kind {
        'U' | 'S' => {
            let ds = Dataset::from_names(vec![0.0; rows], 1, &y.strings(labels)?)?;
            Ok((ds.targets, ds.class_names))
        }
        'f' => {
            let values = y.numbers(labels)?.into_iter().map(|v| v as f32).collect();
            Ok((super::Targets::Values { values, width }, None))
        }
        _ if width == 1 => {
            let v = y.numbers(labels)?;
            if let Some((i, l)) = v
                .iter()
                .enumerate()
                .find(|(_, l)| **l < 0.0 || **l > u32::MAX as f64)
            {
                return Err(Error::file(
                    labels,
                    format!("label {l} at row {i}: class labels are whole numbers from 0"),
                ));
            }
            let labels: Vec<u32> = v.into_iter().map(|l| l as u32).collect();
            let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
            Ok((super::Targets::Classes { labels, classes }, None))
        }
        _ => Err(bad(
            labels,
            "integer labels must be one per row (shape [n])",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An .npy file as NumPy 1.x writes it (version 1, header padded to 64 bytes).
    pub fn npy(descr: &str, shape: &[usize], data: &[u8], fortran: bool) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if shape.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn float_features_with_integer_string_and_float_labels() {
        let dir = tempfile::tempdir().unwrap();
        let x = write(
            dir.path(),
            "x.npy",
            npy("<f4", &[3, 2], &f32s(&[1., 2., 3., 4., 5., 6.]), false),
        );
        let ints: Vec<u8> = [2i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y = write(dir.path(), "y.npy", npy("<i8", &[3], &ints, false));
        let d = load_npy(&x, &y).unwrap();
        assert_eq!((d.rows, d.cols, d.classes()), (3, 2, Some(3)));
        assert_eq!(d.features, [1., 2., 3., 4., 5., 6.]);
        // '<U3': UTF-32 strings, padded with NULs.
        let names: Vec<u8> = ["cat", "dog", "ox"]
            .iter()
            .flat_map(|s| {
                let mut c: Vec<u32> = s.chars().map(|c| c as u32).collect();
                c.resize(3, 0);
                c.into_iter().flat_map(|u| u.to_le_bytes())
            })
            .collect();
        let y = write(dir.path(), "names.npy", npy("<U3", &[3], &names, false));
        let d = load_npy(&x, &y).unwrap();
        assert_eq!(d.class_names.as_deref().unwrap(), ["cat", "dog", "ox"]);
        let t = write(dir.path(), "t.npy", npy("<f8", &[3, 1], &[0u8; 24], false));
        assert_eq!(load_npy(&x, &t).unwrap().classes(), None);
        // Fortran order: the same matrix stored column by column.
        let xf = write(
            dir.path(),
            "xf.npy",
            npy("<f4", &[3, 2], &f32s(&[1., 3., 5., 2., 4., 6.]), true),
        );
        let y = write(dir.path(), "y2.npy", npy("<i8", &[3], &ints, false));
        assert_eq!(
            load_npy(&xf, &y).unwrap().features,
            [1., 2., 3., 4., 5., 6.]
        );
    }

    #[test]
    fn headers_that_lie_and_wrong_types_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ints: Vec<u8> = [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y = write(dir.path(), "y.npy", npy("<i8", &[2], &ints, false));
        // The header promises 2^40 rows; nothing that large is allocated.
        let huge = write(
            dir.path(),
            "huge.npy",
            npy("<f4", &[1 << 40, 784], &[0u8; 16], false),
        );
        let e = load_npy(&huge, &y).unwrap_err().to_string();
        assert!(e.contains("promises") && e.contains("huge.npy"), "{e}");
        let short = write(
            dir.path(),
            "short.npy",
            npy("<f4", &[2, 2], &[0u8; 12], false),
        );
        assert!(load_npy(&short, &y)
            .unwrap_err()
            .to_string()
            .contains("promises"));
        let ints_x = write(dir.path(), "ix.npy", npy("<i4", &[2, 1], &[0u8; 8], false));
        assert!(load_npy(&ints_x, &y)
            .unwrap_err()
            .to_string()
            .contains("float32 or float64"));
        let big_endian = write(dir.path(), "be.npy", npy(">f4", &[2, 1], &[0u8; 8], false));
        assert!(load_npy(&big_endian, &y)
            .unwrap_err()
            .to_string()
            .contains("big-endian"));
        let not_npy = write(dir.path(), "x.csv", b"1,2,3\n".to_vec());
        assert!(load_npy(&not_npy, &y)
            .unwrap_err()
            .to_string()
            .contains("x.csv"));
        let x = write(dir.path(), "x.npy", npy("<f4", &[3, 1], &[0u8; 12], false));
        assert!(load_npy(&x, &y).unwrap_err().to_string().contains("rows"));
        let neg: Vec<u8> = [0i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let yn = write(dir.path(), "neg.npy", npy("<i8", &[2], &neg, false));
        let x2 = write(dir.path(), "x2.npy", npy("<f4", &[2, 1], &[0u8; 8], false));
        assert!(load_npy(&x2, &yn)
            .unwrap_err()
            .to_string()
            .contains("label -1"));
    }
}
