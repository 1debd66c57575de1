//! A reader that bounds how much of a CSV file one line or one record may take.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::rc::Rc;

use crate::limits::MAX_CSV_LINE_BYTES;

/// What [`Bounded`] shares with the parser.
#[derive(Default)]
pub(super) struct Lines {
    /// (byte offset, 1-based line number) of each line with content that the csv reader has
    /// read ahead and the parser not yet passed: the csv crate's own line count leaves out the
    /// blank lines it skips, so the parser takes a record's line from here.
    pub(super) starts: VecDeque<(u64, usize)>,
    /// Where the record being parsed began (byte offset), and the last record's line.
    pub(super) record: (u64, usize),
}

/// The csv crate's reader buffers a whole record: this bound keeps a file without newlines (or
/// a quoted field that never closes) from being buffered whole. It refuses a physical line
/// longer than [`MAX_CSV_LINE_BYTES`], and a record that has run that far past where it began.
pub(super) struct Bounded<R> {
    pub(super) inner: R,
    /// Bytes read so far, and since the last newline.
    pub(super) read: u64,
    pub(super) line_bytes: usize,
    /// The current physical line (1-based), and whether its start is in `lines.starts`.
    pub(super) line: usize,
    pub(super) line_seen: bool,
    pub(super) lines: Rc<RefCell<Lines>>,
}

/// The error [`Bounded`] reads with: the line that was too long.
#[derive(Debug)]
pub(super) struct TooLong {
    pub(super) line: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} is too long", self.line)
    }
}

impl std::error::Error for TooLong {}

/// Slack for the csv reader's read-ahead beyond the record it is on.
const READ_AHEAD: u64 = 1 << 16;

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = self.lines.borrow_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            self.line_bytes += 1;
            if self.line_bytes > MAX_CSV_LINE_BYTES {
                return Err(std::io::Error::other(TooLong { line: self.line }));
            }
            match b {
                b'\n' => {
                    self.line += 1;
                    self.line_bytes = 0;
                    self.line_seen = false;
                }
                b'\r' => {}
                _ if !self.line_seen => {
                    lines.starts.push_back((self.read + i as u64, self.line));
                    self.line_seen = true;
                }
                _ => {}
            }
        }
        self.read += n as u64;
        let (start, line) = lines.record;
        if self.read.saturating_sub(start) > MAX_CSV_LINE_BYTES as u64 + READ_AHEAD {
            // The record begins on the first line with content after the last one parsed.
            let first = lines.starts.iter().find(|&&(at, _)| at >= start);
            let line = first.map_or(line, |&(_, l)| l);
            return Err(std::io::Error::other(TooLong { line }));
        }
        Ok(n)
    }
}
