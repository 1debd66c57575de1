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
mod rows;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use bounded::{Bounded, Lines, TooLong};
use fields::clean;
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
}
