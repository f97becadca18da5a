//! What a loader hands over, read by the entries' parsers (multiboot, `hvm_start_info`):
//! little-endian fields of a structure's bytes, and `PVOPS-BOOTINPUT:` lines that show those
//! bytes as hex for `cargo xtask fuzz --capture` (fuzz seeds made of real boot input; the
//! entries print them only when built with their `dump-boot-input` feature).

use core::fmt::{self, Write};

/// The little-endian `u32` at `off`, or 0 where `b` ends before `off + 4` (the parsers check
/// a structure's length before reading its fields; a short slice must still not panic).
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    off.checked_add(4)
        .and_then(|end| b.get(off..end))
        .map_or(0, |f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
}

/// The little-endian `u64` at `off`, or 0 where `b` ends before `off + 8`.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    match off.checked_add(8).and_then(|end| b.get(off..end)) {
        Some(_) => u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32,
        None => 0,
    }
}

/// `bytes` as they were read at `addr`, after writing them as `PVOPS-BOOTINPUT: <head>
/// addr=...` lines: wraps a parser's reader so that every range it reads is shown.
pub fn logged<'a>(
    w: &mut dyn Write,
    head: fmt::Arguments<'_>,
    addr: usize,
    bytes: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    write_hex_lines(w, head, "addr", addr, bytes.unwrap_or_default());
    bytes
}

/// Writes `bytes` as `PVOPS-BOOTINPUT: <head> <at_key>=<at> hex=<64 bytes>` lines, `at`
/// counting from `base` (the first byte's address or offset) in steps of 64.
pub fn write_hex_lines(
    w: &mut dyn Write,
    head: fmt::Arguments<'_>,
    at_key: &str,
    base: usize,
    bytes: &[u8],
) {
    for (i, chunk) in bytes.chunks(64).enumerate() {
        let _ = write!(
            w,
            "PVOPS-BOOTINPUT: {head} {at_key}={:#x} hex=",
            base + i * 64
        );
        for b in chunk {
            let _ = write!(w, "{b:02x}");
        }
        let _ = writeln!(w);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    #[test]
    fn fields_inside_the_bytes_only() {
        let b = [0x78, 0x56, 0x34, 0x12, 0xf0, 0xde, 0xbc, 0x9a, 0xff];
        assert_eq!(u32_at(&b, 0), 0x1234_5678);
        assert_eq!(u64_at(&b, 0), 0x9abc_def0_1234_5678);
        assert_eq!(u32_at(&b, 5), 0xff9a_bcde);
        assert_eq!(u32_at(&b, 6), 0);
        assert_eq!(u64_at(&b, 1), 0xff9a_bcde_f012_3456);
        assert_eq!(u64_at(&b, 2), 0);
        assert_eq!(u32_at(&b, usize::MAX - 1), 0);
    }

    #[test]
    fn lines_of_64_bytes_with_their_address() {
        let bytes: std::vec::Vec<u8> = (0..70u8).collect();
        let mut out = String::new();
        write_hex_lines(
            &mut out,
            format_args!("multiboot mbi={:#x}", 0x9500),
            "addr",
            0x9500,
            &bytes,
        );
        let lines: std::vec::Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("PVOPS-BOOTINPUT: multiboot mbi=0x9500 addr=0x9500 hex=000102")
        );
        assert_eq!(
            lines[0].len(),
            "PVOPS-BOOTINPUT: multiboot mbi=0x9500 addr=0x9500 hex=".len() + 128
        );
        assert_eq!(
            lines[1],
            "PVOPS-BOOTINPUT: multiboot mbi=0x9500 addr=0x9540 hex=404142434445"
        );
    }
}
