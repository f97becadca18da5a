//! The kernel command line, copied out of loader memory into a buffer the kernel owns.
//!
//! A loader leaves the command line somewhere in RAM the frame allocator may later hand out,
//! so the kernel copies it before the allocator runs. [`copy_cmdline`] is a plain function
//! over bytes (what the loader's NUL-terminated string holds), so it can be fuzzed.

use core::fmt;

/// Bytes of command line the kernel keeps (Linux x86's `COMMAND_LINE_SIZE`). A longer one is
/// truncated, at a character boundary, and [`CmdlineCopy::truncated_from`] says so.
pub const CMDLINE_MAX: usize = 2048;

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// No NUL within the bytes the loader's memory holds.
    NotTerminated {
        /// How many bytes were scanned.
        scanned: usize,
    },
    /// A byte that is not valid UTF-8 where it stands.
    NotUtf8 {
        /// Its offset from the start of the command line.
        offset: usize,
        /// Its value.
        byte: u8,
    },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotTerminated { scanned } => {
                write!(f, "command line has no NUL within {scanned} bytes")
            }
            Self::NotUtf8 { offset, byte } => {
                write!(f, "command line byte {offset} ({byte:#04x}) is not UTF-8")
            }
        }
    }
}

/// A command line the kernel owns: at most [`CMDLINE_MAX`] bytes of UTF-8.
#[derive(Clone)]
pub struct CmdlineCopy {
    bytes: [u8; CMDLINE_MAX],
    len: usize,
    truncated_from: Option<usize>,
}

impl fmt::Debug for CmdlineCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmdlineCopy")
            .field("text", &self.as_str())
            .field("truncated_from", &self.truncated_from)
            .finish()
    }
}

impl CmdlineCopy {
    /// The empty command line.
    pub const fn empty() -> CmdlineCopy {
        CmdlineCopy {
            bytes: [0; CMDLINE_MAX],
            len: 0,
            truncated_from: None,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // `copy_cmdline` only ever stores a validated UTF-8 prefix cut at a char boundary.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// The loader's length when the text was cut to [`CMDLINE_MAX`] bytes (print a warning).
    pub fn truncated_from(&self) -> Option<usize> {
        self.truncated_from
    }
}

/// Copies the NUL-terminated command line at the start of `raw` (the bytes readable from the
/// loader's pointer on) into `out`. Text longer than [`CMDLINE_MAX`] is cut at the last
/// character boundary that fits; bad UTF-8 before the cut is refused with its offset.
pub fn copy_cmdline(raw: &[u8], out: &mut CmdlineCopy) -> Result<(), CmdlineError> {
    let len = raw
        .iter()
        .position(|b| *b == 0)
        .ok_or(CmdlineError::NotTerminated { scanned: raw.len() })?;
    let text = &raw[..len];
    let keep = len.min(CMDLINE_MAX);
    let valid = match core::str::from_utf8(&text[..keep]) {
        Ok(_) => keep,
        // A character cut by the limit is dropped; any other bad byte is an error.
        Err(e) if e.error_len().is_none() && keep < len => e.valid_up_to(),
        Err(e) => {
            let offset = e.valid_up_to();
            return Err(CmdlineError::NotUtf8 {
                offset,
                byte: text[offset],
            });
        }
    };
    out.bytes[..valid].copy_from_slice(&text[..valid]);
    out.len = valid;
    out.truncated_from = (len > CMDLINE_MAX).then_some(len);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn short_and_empty() {
        let mut c = CmdlineCopy::empty();
        copy_cmdline(b"k pvops.batch=1\0garbage", &mut c).unwrap();
        assert_eq!(c.as_str(), "k pvops.batch=1");
        assert_eq!(c.truncated_from(), None);
        copy_cmdline(b"\0", &mut c).unwrap();
        assert_eq!(c.as_str(), "");
    }

    #[test]
    fn accepts_linux_size_and_truncates_longer() {
        let mut c = CmdlineCopy::empty();
        let mut long: Vec<u8> = (0..CMDLINE_MAX).map(|i| b'a' + (i % 26) as u8).collect();
        long.push(0);
        copy_cmdline(&long, &mut c).unwrap();
        assert_eq!(c.as_str().len(), CMDLINE_MAX);
        assert_eq!(c.truncated_from(), None);
        let mut longer: Vec<u8> = std::vec![b'x'; 5000];
        longer.push(0);
        copy_cmdline(&longer, &mut c).unwrap();
        assert_eq!(c.as_str().len(), CMDLINE_MAX);
        assert_eq!(c.truncated_from(), Some(5000));
    }

    #[test]
    fn cut_inside_a_character_drops_it() {
        let mut c = CmdlineCopy::empty();
        let mut raw = std::vec![b'a'; CMDLINE_MAX - 1];
        raw.extend_from_slice("é tail".as_bytes());
        raw.push(0);
        copy_cmdline(&raw, &mut c).unwrap();
        assert_eq!(c.as_str().len(), CMDLINE_MAX - 1);
        assert_eq!(c.truncated_from(), Some(raw.len() - 1));
    }

    #[test]
    fn bad_bytes_are_named() {
        let mut c = CmdlineCopy::empty();
        assert_eq!(
            copy_cmdline(b"ok \xff rest\0", &mut c),
            Err(CmdlineError::NotUtf8 {
                offset: 3,
                byte: 0xff
            })
        );
        assert_eq!(
            copy_cmdline(b"no terminator", &mut c),
            Err(CmdlineError::NotTerminated { scanned: 13 })
        );
        // A truncated sequence at the very end (not cut by the limit) is an error too.
        assert_eq!(
            copy_cmdline(b"ab\xc3\0", &mut c),
            Err(CmdlineError::NotUtf8 {
                offset: 2,
                byte: 0xc3
            })
        );
    }
}
