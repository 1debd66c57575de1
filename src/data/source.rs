//! Opening data files: friendly errors for missing files, and gzip detected by its magic bytes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use crate::error::{Error, Result};

/// The first two bytes of every gzip stream.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` starts like a gzip stream.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// An error for a file that could not be opened, saying what to check.
pub(crate) fn open_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::file(
            path,
            "no such file: check the path (a relative path starts from the current directory)",
        ),
        std::io::ErrorKind::PermissionDenied => {
            Error::file(path, "permission denied: make the file readable (chmod +r)")
        }
        _ => Error::io(path, e),
    }
}

/// An error for a gzip stream that failed to decompress.
pub(crate) fn gzip_error(path: &Path, e: &std::io::Error) -> Error {
    Error::file(
        path,
        format!(
            "corrupt or truncated gzip data ({e}): download the file again, or check it with `gzip -t`"
        ),
    )
}

/// Opens `path` for buffered reading.
pub(crate) fn open(path: &Path) -> Result<BufReader<File>> {
    if path.is_dir() {
        return Err(Error::file(path, "is a directory, not a data file"));
    }
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| open_error(path, e))
}

/// A reader that yields the decompressed bytes when the stream starts with the gzip magic, and
/// the bytes as they are otherwise. Returns the reader and whether it decompresses.
pub(crate) fn maybe_gunzip<'a, R: BufRead + 'a>(
    mut reader: R,
    path: &Path,
) -> Result<(Box<dyn BufRead + 'a>, bool)> {
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
    if is_gzip(head) {
        Ok((Box::new(BufReader::new(MultiGzDecoder::new(reader))), true))
    } else {
        Ok((Box::new(reader), false))
    }
}
