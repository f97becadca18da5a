//! COM1 (0x3f8) polled serial output.

use core::fmt;
use x86::io::{inb, outb};

const COM1: u16 = 0x3f8;

/// The COM1 port. Stateless: any number of writers may exist.
pub struct Serial;

impl Serial {
    /// Programs 38400 8N1, FIFOs on.
    pub fn init() {
        // SAFETY: COM1's registers on a PC; writing them only configures the UART.
        unsafe {
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x80);
            outb(COM1, 0x03);
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x03);
            outb(COM1 + 2, 0xC7);
            outb(COM1 + 4, 0x0B);
        }
    }

    fn put(b: u8) {
        // SAFETY: polling the line-status register and writing the data register of COM1.
        unsafe {
            for _ in 0..100_000 {
                if inb(COM1 + 5) & 0x20 != 0 {
                    break;
                }
            }
            outb(COM1, b);
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::put(b'\r');
            }
            Self::put(b);
        }
        Ok(())
    }
}
