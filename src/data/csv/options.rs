//! How a CSV file is split into fields: the delimiter and the header setting.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Whether the first row of a CSV file names the columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsvHeader {
    /// A header when one of its feature fields is not empty and none of them is a number.
    #[default]
    Auto,
    /// The first row is a header, whatever it holds.
    On,
    /// Every row is data.
    Off,
}

impl FromStr for CsvHeader {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(CsvHeader::Auto),
            "on" => Ok(CsvHeader::On),
            "off" => Ok(CsvHeader::Off),
            other => Err(Error::InvalidConfig(format!(
                "unknown CSV header setting \"{other}\": use on, off or auto"
            ))),
        }
    }
}

impl fmt::Display for CsvHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CsvHeader::Auto => "auto",
            CsvHeader::On => "on",
            CsvHeader::Off => "off",
        })
    }
}

/// How a CSV file is split into fields: build from [`CsvOptions::default`] (comma, header
/// detected) and set fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsvOptions {
    /// The byte between fields (`b','`; `b'\t'` for TSV). Not `"`, a newline or non-ASCII.
    pub delimiter: u8,
    /// Whether the first line is a header (detected by default).
    pub header: CsvHeader,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            header: CsvHeader::Auto,
        }
    }
}

impl CsvOptions {
    /// The delimiter written as the command line takes it: one ASCII character, or `\t` / `tab`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for anything else.
    pub fn parse_delimiter(s: &str) -> Result<u8> {
        let d = match s {
            "\\t" | "tab" | "\t" => b'\t',
            _ if s.len() == 1 => s.as_bytes()[0],
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "the CSV delimiter must be one ASCII character (or \\t / tab), got \"{s}\""
                )))
            }
        };
        Self::check_delimiter(d)?;
        Ok(d)
    }

    pub(super) fn check_delimiter(d: u8) -> Result<()> {
        if !d.is_ascii() || matches!(d, b'"' | b'\n' | b'\r') || d.is_ascii_alphanumeric() {
            return Err(Error::InvalidConfig(format!(
                "{:?} cannot separate CSV fields: use a punctuation character, a space or a tab",
                d as char
            )));
        }
        Ok(())
    }

    /// How messages name the delimiter: "comma-separated", "tab-separated", "';'-separated".
    pub(super) fn separated(&self) -> String {
        match self.delimiter {
            b',' => "comma-separated".into(),
            b'\t' => "tab-separated".into(),
            b' ' => "space-separated".into(),
            d => format!("'{}'-separated", d as char),
        }
    }
}
