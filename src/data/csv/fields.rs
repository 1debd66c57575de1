//! One field at a time: numbers, class labels, and whether the first row is a header.

use std::io::Read;

use super::{CsvHeader, CsvTarget, Parser, MAX_CLASSES};
use crate::error::Result;

impl<R: Read> Parser<'_, R> {
    /// For a field that is not a number on the first row: why that row was not taken as a header.
    fn first_row_hint(&self) -> &'static str {
        let auto = self.options.header == CsvHeader::Auto;
        if auto && self.header.is_none() && self.line_no == self.first_line {
            " (the first row is read as a header only when none of its feature fields is a \
             number, and this one mixes numbers and text: fix the field or, if the row is a \
             header, rename its numeric columns or load the file with the header on)"
        } else {
            ""
        }
    }

    /// A finite f32 feature or target value.
    pub(super) fn number(&self, field: &str, col: usize) -> Result<f32> {
        let v = self.finite(field, col)?;
        let x = v as f32;
        if !x.is_finite() {
            return Err(self.error_at(
                Some(col),
                format!(
                "{}: {field} is too large for a 32-bit float (max ≈ 3.4e38): rescale that column",
                self.where_(col)
            ),
            ));
        }
        Ok(x)
    }

    /// A finite f64, or an error naming the line and column.
    fn finite(&self, field: &str, col: usize) -> Result<f64> {
        if field.is_empty() {
            return Err(self.error_at(
                Some(col),
                format!(
                    "{}: the field is empty (a missing value): fill it in or drop the row",
                    self.where_(col)
                ),
            ));
        }
        let Ok(v) = field.parse::<f64>() else {
            return Err(self.error_at(
                Some(col),
                format!(
                    "{}: \"{field}\" is not a number{}; every field after the optional header row \
                 must be a number",
                    self.where_(col),
                    self.first_row_hint()
                ),
            ));
        };
        if !v.is_finite() {
            return Err(self.error_at(
                Some(col),
                format!(
                    "{}: {field} is not a finite number (NaN and infinity are not allowed): clean \
                 or drop that row",
                    self.where_(col)
                ),
            ));
        }
        Ok(v)
    }

    /// A class label: a non-negative integer (`2.0` counts as 2) below [`MAX_CLASSES`].
    pub(super) fn label(&self, field: &str, col: usize) -> Result<u32> {
        let bad = |why: &str| {
            self.error_at(
                Some(col),
                format!(
                    "{}: class label \"{field}\" {why}; labels must be integers 0, 1, 2, … as the \
                 column's first label is a number, or all names (for real-valued targets, load \
                 the file with targets=K instead of a label column)",
                    self.where_(col)
                ),
            )
        };
        let Ok(v) = field.parse::<f64>() else {
            return Err(bad(&format!("is not a number{}", self.first_row_hint())));
        };
        if !v.is_finite() {
            return Err(bad("is not finite"));
        }
        if v < 0.0 {
            return Err(bad("is negative"));
        }
        if v.fract() != 0.0 {
            return Err(bad("is not a whole number"));
        }
        if v >= MAX_CLASSES as f64 {
            return Err(bad(&format!(
                "is too large (at most {} classes are supported)",
                MAX_CLASSES
            )));
        }
        Ok(v as u32)
    }
}

/// Whether the first row is a header (`--header auto`): the label column's name when the
/// target names one, else at least one non-empty feature field and no feature field that is a
/// number. Only feature columns count, so that a label column of names does not make a data row
/// a header; a row like `1,x,0` is data with a bad field, not a header.
pub(super) fn is_header(first: &[String], target: &CsvTarget) -> bool {
    let width = first.len();
    let label = match target {
        CsvTarget::Label { column: Some(c) } => {
            if first.iter().any(|f| f == c && f.parse::<f64>().is_err()) {
                return true;
            }
            c.trim().parse::<usize>().ok()
        }
        CsvTarget::Label { column: None } => width.checked_sub(1),
        _ => None,
    };
    let features = first.iter().enumerate().filter(|&(i, _)| match target {
        CsvTarget::Values { count } => i + count < width,
        _ => Some(i) != label,
    });
    let mut any_text = false;
    for (_, f) in features {
        if f.parse::<f64>().is_ok() {
            return false;
        }
        any_text |= !f.is_empty();
    }
    any_text
}

/// A field without surrounding whitespace, or one pair of double quotes the csv reader left
/// (a quote after leading spaces, `a, "b"`, is not CSV quoting).
pub(super) fn clean(field: &str) -> &str {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|g| g.strip_suffix('"'))
        .unwrap_or(f)
        .trim()
}
