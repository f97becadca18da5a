//! The guest console: the console ring + event channel for a domU (PV or PVH), console_io
//! for dom0, and Xen's debug port 0xe9 as the earliest console of a PVH guest (before its
//! hypercall page and ring are set up; Xen prints it on its own console as `(dN) ...`).

use crate::abi::XenconsInterface;
use crate::hypercall;
use core::fmt;
use core::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

static RING: AtomicUsize = AtomicUsize::new(0);
static EVTCHN: AtomicU32 = AtomicU32::new(0);
static MODE: AtomicU32 = AtomicU32::new(MODE_NONE);
const MODE_NONE: u32 = 0;
const MODE_RING: u32 = 1;
const MODE_IO: u32 = 2;
const MODE_DEBUG_PORT: u32 = 3;
/// Xen's HVM debug console port.
const DEBUG_PORT: u16 = 0xe9;
/// Yields allowed while waiting for xenconsoled (bounded by count, not by time).
const MAX_YIELDS: u32 = 20_000;

/// Sends output to the domU console ring at `ring` and notifies `evtchn`.
///
/// # Safety
/// `ring` must map the domain's console page (Xen's `struct xencons_interface`) for the rest
/// of the guest's life, at this address in every page table the guest will use.
pub unsafe fn use_ring(ring: *mut XenconsInterface, evtchn: u32) {
    RING.store(ring as usize, Ordering::Release);
    EVTCHN.store(evtchn, Ordering::Release);
    MODE.store(MODE_RING, Ordering::Release);
}

/// Sends output through console_io (dom0).
pub(crate) fn use_console_io() {
    MODE.store(MODE_IO, Ordering::Release);
}

/// Sends output to Xen's debug port 0xe9: an HVM or PVH guest's earliest console (a PV
/// guest would take a #GP on the `out`).
pub fn use_debug_port() {
    MODE.store(MODE_DEBUG_PORT, Ordering::Release);
}

fn ring() -> Option<*mut XenconsInterface> {
    let r = RING.load(Ordering::Acquire);
    (MODE.load(Ordering::Acquire) == MODE_RING && r != 0).then_some(r as *mut XenconsInterface)
}

fn notify_and_yield() {
    let _ = hypercall::evtchn_send(EVTCHN.load(Ordering::Acquire));
    let _ = hypercall::sched_yield();
}

/// Waits (bounded) until xenconsoled has read everything written to the ring.
pub fn drain() {
    let Some(r) = ring() else { return };
    for _ in 0..MAX_YIELDS {
        // SAFETY: the ring page is mapped for the guest's whole life; the indices are u32s
        // the console daemon updates.
        let (cons, prod) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*r).out_cons),
                core::ptr::read_volatile(&raw const (*r).out_prod),
            )
        };
        if cons == prod {
            return;
        }
        notify_and_yield();
    }
}

/// The console writer. Stateless: the state is global (one console per guest).
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match MODE.load(Ordering::Acquire) {
            MODE_IO => {
                let _ = hypercall::console_io_write(s.as_bytes());
            }
            MODE_RING => write_ring(s.as_bytes()),
            MODE_DEBUG_PORT => {
                for b in s.bytes() {
                    // SAFETY: port 0xe9 is Xen's HVM debug console; writing it only prints.
                    unsafe { x86::io::outb(DEBUG_PORT, b) };
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn write_ring(bytes: &[u8]) {
    let Some(r) = ring() else { return };
    let size = 2048u32;
    let mut sent = 0;
    let mut waited = 0;
    while sent < bytes.len() {
        // SAFETY: see drain; only the guest writes out[] and out_prod.
        let (cons, mut prod) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*r).out_cons),
                core::ptr::read_volatile(&raw const (*r).out_prod),
            )
        };
        fence(Ordering::SeqCst);
        while sent < bytes.len() && prod.wrapping_sub(cons) < size {
            // SAFETY: the index is masked into the 2048-byte output ring.
            unsafe {
                core::ptr::write_volatile(&raw mut (*r).output[(prod % size) as usize], bytes[sent])
            };
            prod = prod.wrapping_add(1);
            sent += 1;
        }
        fence(Ordering::SeqCst);
        // SAFETY: publishes the bytes written above.
        unsafe { core::ptr::write_volatile(&raw mut (*r).out_prod, prod) };
        if sent < bytes.len() {
            // The ring is full: let xenconsoled run, bounded.
            notify_and_yield();
            waited += 1;
            if waited > MAX_YIELDS {
                return;
            }
        }
    }
    // One notification per line, not per `write_str` piece (a formatted line is several):
    // each is a hypercall, which for a PVH guest is a VM exit. `drain` notifies what is left.
    if bytes.contains(&b'\n') {
        let _ = hypercall::evtchn_send(EVTCHN.load(Ordering::Acquire));
    }
}
