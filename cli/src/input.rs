//! Reading a file the user names (an experiment, a workload, a topology): regular files
//! only, at most [`MAX_FILE_BYTES`](crate::limits::MAX_FILE_BYTES), UTF-8, and never
//! blocking. A FIFO blocks the reader until a writer comes, and a device such as
//! /dev/zero never ends, so the kind of file is checked before it is opened for reading.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use faultline_agent::diag::SourceError;

use crate::limits::MAX_FILE_BYTES;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It is not a regular file, or too large: a phrase that follows the file's name,
    /// like "is a FIFO, not a regular file: ...".
    Refused(String),
    /// It is not UTF-8: the first bad byte, at its line and column.
    NotUtf8(SourceError),
}

impl ReadError {
    /// The error about the file as a whole; `cannot_read` starts the message of an I/O
    /// error ("cannot read the topology file").
    pub fn into_source(self, shown: &str, cannot_read: &str) -> SourceError {
        match self {
            ReadError::Io(e) => SourceError::whole_file(shown, format!("{cannot_read}: {e}")),
            ReadError::Refused(m) => SourceError::whole_file(shown, m),
            ReadError::NotUtf8(e) => e,
        }
    }
}

/// The text of `path`, named `shown` in a [`ReadError::NotUtf8`].
pub fn read(path: &Path, shown: &str) -> Result<String, ReadError> {
    // The kind first, by name: nothing is opened unless it is a regular file.
    admit(&std::fs::metadata(path).map_err(ReadError::Io)?)?;
    // Opened without blocking, and checked again on the open file, because the path
    // may name another file by now (O_NONBLOCK changes nothing for a regular file).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    admit(&file.metadata().map_err(ReadError::Io)?)?;
    let bytes = read_bounded(file).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // It grew between the check and the read.
        return Err(ReadError::Refused(too_big(bytes.len() as u64)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        let before = String::from_utf8_lossy(&bytes[..valid]);
        ReadError::NotUtf8(SourceError::at(
            shown,
            &before,
            valid..valid + 1,
            "the file is not UTF-8 text: save it as UTF-8",
        ))
    })
}

/// At most one byte past the limit, so that a file that grows is not read without end.
fn read_bounded(file: File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Refuses a file with this metadata unless it is a regular file within the limit.
fn admit(meta: &Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    let kind = if t.is_file() {
        return if meta.len() > MAX_FILE_BYTES {
            Err(ReadError::Refused(too_big(meta.len())))
        } else {
            Ok(())
        };
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of another kind"
    };
    Err(ReadError::Refused(format!(
        "is {kind}, not a regular file: faultline reads its input only from regular files"
    )))
}

fn too_big(len: u64) -> String {
    format!(
        "is {len} bytes, over the {} MiB limit for input files",
        MAX_FILE_BYTES >> 20
    )
}
