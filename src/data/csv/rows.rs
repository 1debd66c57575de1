//! From records to a dataset: each column's role (feature, label or target value), and the rows
//! collected by role as they are read, within the host memory limit.

use std::io::Read;

use super::fields::is_header;
use super::{CsvHeader, CsvTarget, Parser};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// A file's rows split by role: features `[rows, features_per_row]`, labels, target values.
pub(super) struct Rows {
    pub(super) features: Vec<f32>,
    pub(super) features_per_row: usize,
    labels: Vec<u32>,
    /// The labels as names, when the label column's first label is not a number.
    names: Option<Vec<String>>,
    values: Vec<f32>,
    max_label: u32,
}

/// What each column of a row becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Feature,
    Label,
    Value,
}

impl<R: Read> Parser<'_, R> {
    /// The dataset of every row, its targets as `target` says.
    pub(super) fn parse(self, target: &CsvTarget) -> Result<Dataset> {
        let rows = self.rows(target)?;
        let (features, cols) = (rows.features, rows.features_per_row);
        match target {
            CsvTarget::Label { .. } => match &rows.names {
                Some(names) => Dataset::from_names(features, cols, names),
                None => {
                    let classes = rows.max_label as usize + 1;
                    Dataset::from_classes(features, cols, rows.labels, classes)
                }
            },
            CsvTarget::Values { count } => {
                Dataset::from_values(features, cols, rows.values, *count)
            }
            CsvTarget::None => Err(Error::InvalidData(
                "a dataset needs targets: name a label or target column".into(),
            )),
        }
    }

    /// Every row's fields, split by role: the first line settles the header and the columns'
    /// roles, then each line of the same width is checked against the memory limit and appended.
    pub(super) fn rows(mut self, target: &CsvTarget) -> Result<Rows> {
        let (width, roles, mut pending) = self.first_row(target)?;
        let mut rows = Rows {
            features: Vec::new(),
            features_per_row: roles.iter().filter(|&&r| r == Role::Feature).count(),
            labels: Vec::new(),
            names: None,
            values: Vec::new(),
            max_label: 0,
        };
        // What the rows hold so far is checked against the host memory limit as they grow.
        let (limit, limit_source) = crate::limits::host_memory_limit()?;
        loop {
            if !std::mem::take(&mut pending) && !self.next_line()? {
                break;
            }
            let got = self.line.len();
            if got != width {
                return Err(self.error_at(
                    None,
                    format!(
                        "line {}: expected {width} {} fields (as on line {}), found \
                         {got}; fix or remove that row",
                        self.line_no,
                        self.options.separated(),
                        self.first_line,
                    ),
                ));
            }
            self.check_growth(&rows, width, limit, &limit_source)?;
            rows.features.reserve(rows.features_per_row);
            self.push_row(&mut rows, &roles)?;
        }
        if rows.features.is_empty() {
            return Err(self.error("the file has a header row but no data rows"));
        }
        Ok(rows)
    }

    /// Reads the first line and decides whether it is the header; returns the row width, each
    /// column's role, and whether the first line is data still to be parsed.
    fn first_row(&mut self, target: &CsvTarget) -> Result<(usize, Vec<Role>, bool)> {
        if !self.next_line()? {
            return Err(self.error("the file is empty: it holds no rows"));
        }
        let first = self.line.clone();
        let width = first.len();
        let is_header = match self.options.header {
            CsvHeader::On => true,
            CsvHeader::Off => false,
            CsvHeader::Auto => is_header(&first, target),
        };
        self.first_line = self.line_no;
        if is_header {
            self.header = Some(first);
        }
        let roles = self.roles(width, target)?;
        Ok((width, roles, !is_header))
    }

    /// Checks that growing `rows` by one row of `width` fields (to twice its storage, as a Vec
    /// grows) stays within the host memory `limit`.
    fn check_growth(
        &self,
        rows: &Rows,
        width: usize,
        limit: u64,
        limit_source: &str,
    ) -> Result<()> {
        let grown = |len: usize, cap: usize, extra: usize| -> usize {
            if len + extra > cap {
                (cap * 2).max(len + extra)
            } else {
                cap
            }
        };
        let fpr = rows.features_per_row;
        let next = grown(rows.features.len(), rows.features.capacity(), fpr)
            + grown(rows.values.len(), rows.values.capacity(), width - fpr)
            + grown(rows.labels.len(), rows.labels.capacity(), 1);
        crate::limits::check_bytes(
            &format!(
                "the data of {} (at line {})",
                self.source.display(),
                self.line_no
            ),
            next as u64 * 4,
            limit,
            limit_source,
            "use a smaller file",
        )
    }

    /// Appends the current line's fields to `rows`, each as its column's role says.
    fn push_row(&self, rows: &mut Rows, roles: &[Role]) -> Result<()> {
        for (col, (field, role)) in self.line.iter().zip(roles).enumerate() {
            let field = field.as_str();
            match role {
                Role::Label => self.push_label(rows, field, col)?,
                Role::Feature => rows.features.push(self.number(field, col)?),
                Role::Value => rows.values.push(self.number(field, col)?),
            }
        }
        Ok(())
    }

    /// Appends the label `field` (column `col`): a class index, or a class name when the
    /// column's first label is not a number.
    fn push_label(&self, rows: &mut Rows, field: &str, col: usize) -> Result<()> {
        // A column whose first label is not a number holds class names.
        let first = rows.labels.is_empty() && rows.names.is_none();
        if first && !field.is_empty() && field.parse::<f64>().is_err() {
            rows.names = Some(Vec::new());
        }
        match &mut rows.names {
            Some(_) if field.is_empty() => Err(self.error_at(
                Some(col),
                format!("{}: the class label is empty", self.where_(col)),
            )),
            Some(_) if field.parse::<f64>().is_ok() => Err(self.error_at(Some(col), format!(
                "{}: class label \"{field}\" is a number, but the column's first label is a name: labels must be all numbers or all names",
                self.where_(col)
            ))),
            Some(names) => {
                names.push(field.to_string());
                Ok(())
            }
            None => {
                let label = self.label(field, col)?;
                rows.max_label = rows.max_label.max(label);
                rows.labels.push(label);
                Ok(())
            }
        }
    }

    /// The role of each of the `width` columns.
    fn roles(&self, width: usize, target: &CsvTarget) -> Result<Vec<Role>> {
        let mut roles = vec![Role::Feature; width];
        match target {
            CsvTarget::Label { column } => {
                if width < 2 {
                    return Err(self.error(format!(
                        "the file has {width} column(s), but a dataset needs at least one \
                         feature column and one label column"
                    )));
                }
                let col = match column {
                    None => width - 1,
                    Some(c) => self.find_column(c, width)?,
                };
                roles[col] = Role::Label;
            }
            CsvTarget::Values { count } => {
                if *count == 0 {
                    return Err(self.error("0 target columns requested: ask for at least 1"));
                }
                if *count >= width {
                    return Err(self.error(format!(
                        "{count} target column(s) requested, but the file has {width} \
                         column(s), which leaves no feature column"
                    )));
                }
                for r in &mut roles[width - count..] {
                    *r = Role::Value;
                }
            }
            CsvTarget::None => {}
        }
        Ok(roles)
    }

    /// The 0-based index of the column named `c` in the header, or with index `c`.
    fn find_column(&self, c: &str, width: usize) -> Result<usize> {
        if let Some(i) = self
            .header
            .as_ref()
            .and_then(|h| h.iter().position(|name| name == c))
        {
            return Ok(i);
        }
        match c.trim().parse::<usize>() {
            Ok(i) if i < width => Ok(i),
            Ok(i) => Err(self.error(format!(
                "label column index {i} is out of range: the file has {width} columns, \
                 numbered 0..={}",
                width - 1
            ))),
            Err(_) => Err(self.error(match &self.header {
                Some(h) => format!(
                    "no column named \"{c}\": the header has {}; give one of these names or a \
                     0-based column index",
                    h.iter()
                        .map(|n| format!("\"{n}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "the file has no header row, so the label column must be a 0-based index \
                     (0..={}), not \"{c}\"",
                    width - 1
                ),
            })),
        }
    }
}
