//! CSV datasets through the `csv` crate: one sample per record, plain or gzip-compressed.
//!
//! Fields are separated by a comma, or by [`CsvOptions::delimiter`]; a field in double quotes
//! may hold the delimiter, a newline or a doubled quote (`"a ""b"", c"`). Whether the first row
//! names the columns is [`CsvOptions::header`]: `auto` (the default) takes it as a header when
//! one of its *feature* fields is not empty and none of them is a number, so a class-label
//! column of names (`1,2,setosa`) does not make a data row a header. A first row whose features
//! mix numbers and text, such as `1,x,0`, is read as data, so its bad field is reported with its
//! line and column like any other row's instead of the row being dropped as a header; a header
//! with a numeric name (`id,2019,label`) is read as data too, and its error says to rename the
//! column or load with the header on. Blank lines are skipped, fields may be surrounded by
//! spaces, and line endings may be `\n` or `\r\n`. Error messages ([`Error::Format`]) count
//! lines and columns from 1, like an editor (a record spanning lines is named by its first); a
//! label column chosen by index (`label=COL`) counts from 0.

mod bounded;
mod fields;
mod options;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use bounded::{Bounded, Lines, TooLong};
use fields::{clean, is_header};
pub use options::{CsvHeader, CsvOptions};

use super::source;
use super::{check_finite, Dataset};
use crate::error::{Error, Result};
use crate::limits::MAX_CSV_LINE_BYTES;

/// The largest number of classes a label column may imply; larger labels are almost always
/// real-valued targets or ids read as labels.
pub const MAX_CLASSES: usize = 1 << 20;

/// Which columns of a CSV file are targets; every other column is a feature.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvTarget {
    /// One integer class-label column: the last column when `None`, else the column with this
    /// header name or, failing that, this 0-based index.
    Label {
        /// The label column's header name or 0-based index; `None`: the last column.
        column: Option<String>,
    },
    /// The last `count` columns are real-valued targets.
    Values {
        /// How many trailing columns are targets.
        count: usize,
    },
    /// No target column: every column is a feature (data to predict on).
    None,
}

/// Loads a CSV file (gzip-compressed or not, detected from its first bytes), comma-separated
/// with the header detected.
pub fn load_csv(path: &Path, target: CsvTarget) -> Result<Dataset> {
    load_csv_with(path, target, &CsvOptions::default())
}

/// [`load_csv`] with the delimiter and header given by `options`.
pub fn load_csv_with(path: &Path, target: CsvTarget, options: &CsvOptions) -> Result<Dataset> {
    let mut reader = source::open(path)?;
    if path.to_string_lossy().ends_with(".gz") {
        let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        if !head.is_empty() && !source::is_gzip(head) {
            return Err(Error::file(
                path,
                "is named .gz but does not start with the gzip magic bytes 1f 8b: the file is \
                 damaged, or it is plain text (then rename it without .gz)",
            ));
        }
    }
    read_csv_with(reader, path, &target, options)
}

/// Loads a CSV file whose every column is a feature (no labels): features `[rows, cols]` and
/// `cols`, for prediction.
pub fn load_csv_features(path: &Path) -> Result<(Vec<f32>, usize)> {
    load_csv_features_with(path, &CsvOptions::default())
}

/// [`load_csv_features`] with the delimiter and header given by `options`.
pub fn load_csv_features_with(path: &Path, options: &CsvOptions) -> Result<(Vec<f32>, usize)> {
    let reader = source::open(path)?;
    let (reader, gz) = source::maybe_gunzip(BufReader::new(reader), path)?;
    let rows = Parser::new(reader, path, gz, options)?.rows(&CsvTarget::None)?;
    check_finite("features", &rows.features, rows.features_per_row)?;
    Ok((rows.features, rows.features_per_row))
}

/// Parses CSV from any reader, decompressing it first if it starts with the gzip magic bytes.
/// `source` names the data in error messages.
pub fn read_csv<R: Read>(reader: R, source: &Path, target: &CsvTarget) -> Result<Dataset> {
    read_csv_with(reader, source, target, &CsvOptions::default())
}

/// [`read_csv`] with the delimiter and header given by `options`.
pub fn read_csv_with<R: Read>(
    reader: R,
    source: &Path,
    target: &CsvTarget,
    options: &CsvOptions,
) -> Result<Dataset> {
    let (reader, gz) = source::maybe_gunzip(BufReader::new(reader), source)?;
    Parser::new(reader, source, gz, options)?.parse(target)
}

/// A file's rows split by role: features `[rows, features_per_row]`, labels, target values.
struct Rows {
    features: Vec<f32>,
    features_per_row: usize,
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

struct Parser<'a, R> {
    reader: csv::Reader<Bounded<R>>,
    record: csv::ByteRecord,
    /// Where lines and the next record begin, shared with the reader's [`Bounded`].
    lines: Rc<RefCell<Lines>>,
    source: &'a Path,
    gz: bool,
    options: CsvOptions,
    /// The line the current record begins on (1-based).
    line_no: usize,
    /// The current record's fields, each without surrounding whitespace.
    line: Vec<String>,
    header: Option<Vec<String>>,
    /// The line number of the first non-blank line (the header, if there is one).
    first_line: usize,
}

impl<'a, R: Read> Parser<'a, R> {
    fn new(reader: R, source: &'a Path, gz: bool, options: &CsvOptions) -> Result<Self> {
        CsvOptions::check_delimiter(options.delimiter)?;
        let lines = Rc::new(RefCell::new(Lines {
            starts: VecDeque::new(),
            record: (0, 1),
        }));
        let bounded = Bounded {
            inner: reader,
            read: 0,
            line_bytes: 0,
            line: 1,
            line_seen: false,
            lines: lines.clone(),
        };
        let reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter)
            // The header is decided here (auto needs the targets), and row widths are checked
            // here, so that blank lines can be skipped and messages say what to fix.
            .has_headers(false)
            .flexible(true)
            .from_reader(bounded);
        Ok(Parser {
            reader,
            record: csv::ByteRecord::new(),
            lines,
            source,
            gz,
            options: *options,
            line_no: 0,
            line: Vec::new(),
            header: None,
            first_line: 0,
        })
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::file(self.source, message)
    }

    /// An error about the current record (`col`: 0-based, or the whole record).
    fn error_at(&self, col: Option<usize>, message: impl Into<String>) -> Error {
        Error::Format {
            path: self.source.to_path_buf(),
            line: Some(self.line_no),
            column: col.map(|c| c + 1),
            message: message.into(),
        }
    }

    /// Reads the next non-blank record into `self.line`; false at the end.
    fn next_line(&mut self) -> Result<bool> {
        loop {
            let got = self.reader.read_byte_record(&mut self.record);
            let more = got.map_err(|e| self.read_error(e))?;
            if !more {
                return Ok(false);
            }
            // The record's line: the first line with content at or after where it begins.
            let begin = self.record.position().map_or(0, |p| p.byte());
            let mut lines = self.lines.borrow_mut();
            while lines.starts.front().is_some_and(|&(at, _)| at < begin) {
                lines.starts.pop_front();
            }
            self.line_no = lines.starts.front().map_or(0, |&(_, line)| line);
            let next = self.reader.position();
            lines.record = (next.byte(), self.line_no);
            drop(lines);
            self.line.clear();
            for (i, field) in self.record.iter().enumerate() {
                let Ok(text) = std::str::from_utf8(field) else {
                    return Err(self.error_at(
                        None,
                        format!(
                            "line {} is not valid UTF-8 text: is this really a CSV file?",
                            self.line_no
                        ),
                    ));
                };
                let text = if i == 0 && self.first_line == 0 {
                    text.trim_start_matches('\u{feff}')
                } else {
                    text
                };
                self.line.push(clean(text).to_string());
            }
            if !(self.line.len() == 1 && self.line[0].is_empty()) {
                return Ok(true);
            }
        }
    }

    /// The library's error for one the csv reader met while reading.
    fn read_error(&self, e: csv::Error) -> Error {
        match e.into_kind() {
            csv::ErrorKind::Io(e) => {
                if let Some(TooLong { line }) = e.get_ref().and_then(|r| r.downcast_ref()) {
                    return Error::Format {
                        path: self.source.to_path_buf(),
                        line: Some(*line),
                        column: None,
                        message: format!(
                            "line {line} is longer than {MAX_CSV_LINE_BYTES} bytes, the longest line gpumlp reads (reading stopped there): is this really a CSV file of samples, one per line?"
                        ),
                    };
                }
                if self.gz {
                    source::gzip_error(self.source, &e)
                } else {
                    Error::io(self.source, e)
                }
            }
            other => self.error(format!("cannot read it as CSV: {other:?}")),
        }
    }

    /// ` ("name")` when the file has a header that names column `col`, for messages.
    fn column_name(&self, col: usize) -> String {
        match self.header.as_ref().and_then(|h| h.get(col)) {
            Some(name) if !name.is_empty() => format!(" (\"{name}\")"),
            _ => String::new(),
        }
    }

    fn where_(&self, col: usize) -> String {
        format!(
            "line {}, column {}{}",
            self.line_no,
            col + 1,
            self.column_name(col)
        )
    }

    fn parse(self, target: &CsvTarget) -> Result<Dataset> {
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
    fn rows(mut self, target: &CsvTarget) -> Result<Rows> {
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
