//! Host memory behind the simulated machine and the Xen model: 4 KiB machine frames allocated
//! lazily (zero-filled, page-aligned, never moved until the store is dropped).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::Cell;

/// Bytes in a frame.
pub const FRAME_BYTES: usize = 4096;

/// Lazily backed host storage for machine frames `0..len`: a frame costs host memory only
/// once it is touched, so a 2 GiB machine costs what its boot writes.
pub struct FrameStore {
    frames: Vec<Cell<*mut u8>>,
    touched: Cell<usize>,
}

fn frame_layout() -> Layout {
    Layout::from_size_align(FRAME_BYTES, FRAME_BYTES).expect("4 KiB layout")
}

impl FrameStore {
    /// Storage for machine frames `0..len`, none allocated yet.
    pub fn new(len: usize) -> FrameStore {
        FrameStore {
            frames: (0..len).map(|_| Cell::new(std::ptr::null_mut())).collect(),
            touched: Cell::new(0),
        }
    }

    /// Number of machine frames the store can back.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the store backs no frame at all.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames allocated so far.
    pub fn touched(&self) -> usize {
        self.touched.get()
    }

    /// The host page of `mfn`, allocated (zeroed) on first use; `None` beyond the store.
    pub fn page(&self, mfn: u32) -> Option<*mut u8> {
        let cell = self.frames.get(mfn as usize)?;
        if cell.get().is_null() {
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { alloc_zeroed(frame_layout()) };
            assert!(!p.is_null(), "host out of memory");
            cell.set(p);
            self.touched.set(self.touched.get() + 1);
        }
        Some(cell.get())
    }

    /// The host page of `mfn` if it was ever touched (no allocation).
    pub fn existing(&self, mfn: u32) -> Option<*mut u8> {
        let p = self.frames.get(mfn as usize)?.get();
        (!p.is_null()).then_some(p)
    }
}

impl Drop for FrameStore {
    fn drop(&mut self) {
        for c in &self.frames {
            let p = c.get();
            if !p.is_null() {
                // SAFETY: allocated in `page` with `frame_layout()`, freed only here.
                unsafe { dealloc(p, frame_layout()) };
            }
        }
    }
}

impl std::fmt::Debug for FrameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStore")
            .field("len", &self.len())
            .field("touched", &self.touched())
            .finish()
    }
}
