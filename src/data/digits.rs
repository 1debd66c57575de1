//! The built-in dataset: 1797 handwritten digits as 8×8 images of pixel counts 0..=16, 10 classes.
//!
//! From the UCI "Optical Recognition of Handwritten Digits" data set by E. Alpaydin and
//! C. Kaynak (CC BY 4.0), as shipped by scikit-learn; see `data/README.md`.

use std::path::Path;

use super::csv::{read_csv, CsvTarget};
use super::Dataset;
use crate::error::Result;

/// The range of every digits feature: pixels count on-bits in 4×4 blocks, so they lie in 0..=16.
pub const DIGITS_RANGE: f32 = 16.0;

/// The compressed CSV: 64 pixel columns, then the label, no header.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The 8×8 digits: 1797 rows, 64 features in 0..=16, labels 0..=9.
pub fn digits() -> Result<Dataset> {
    read_csv(
        DIGITS_CSV_GZ,
        Path::new("digits.csv.gz (built in)"),
        &CsvTarget::Label { column: None },
    )
}
