//! Host storage of machine frames, raw reads and writes, and the snapshots that catch
//! writes to frames the guest could not have written on the real Xen.

use super::*;

impl XenModel {
    pub(super) fn owned(&self, mfn: u32) -> bool {
        self.frames
            .get(mfn as usize)
            .is_some_and(|s| s.owner == Owner::Domain)
    }

    pub(super) fn host(&self, mfn: u32) -> *mut u8 {
        self.mem.page(mfn).expect("machine frame inside the model")
    }

    pub(super) fn bytes(&self, mfn: u32) -> Option<&[u8; FB]> {
        let p = self.mem.existing(mfn)?;
        // SAFETY: an allocated frame of FB bytes; the model is single-threaded and the guest
        // does not write through frame_ptr while a model method runs.
        (!p.is_null()).then(|| unsafe { &*(p as *const [u8; FB]) })
    }

    pub(super) fn pte(&self, mfn: u32, index: usize) -> u64 {
        match self.bytes(mfn) {
            Some(b) => u64::from_le_bytes(b[index * 8..index * 8 + 8].try_into().expect("8 bytes")),
            None => 0,
        }
    }

    pub(super) fn read_u32(&self, mfn: u32, off: usize) -> u32 {
        match self.bytes(mfn) {
            Some(b) => u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes")),
            None => 0,
        }
    }

    pub(super) fn write_raw(&self, mfn: u32, off: usize, data: &[u8]) {
        assert!(off + data.len() <= FB);
        // SAFETY: host frame of FB bytes, in bounds.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.host(mfn).add(off), data.len())
        };
    }

    /// A write by Xen (or the builder): memory and, if the frame has one, its snapshot.
    pub(super) fn xen_write(&mut self, mfn: u32, index: usize, val: u64) {
        self.write_raw(mfn, index * 8, &val.to_le_bytes());
        if let Some(s) = self.snaps.get_mut(&mfn) {
            s[index * 8..index * 8 + 8].copy_from_slice(&val.to_le_bytes());
        }
    }

    pub(super) fn snap_take(&mut self, mfn: u32) {
        if !self.owned(mfn) {
            return;
        }
        let mut b = Box::new([0u8; FB]);
        if let Some(src) = self.bytes(mfn) {
            b.copy_from_slice(src);
        }
        self.snaps.insert(mfn, b);
    }

    pub(super) fn snap_check(&mut self, mfn: u32, when: &str) {
        let Some(s) = self.snaps.get(&mfn) else {
            return;
        };
        let zero = [0u8; FB];
        let cur = self.bytes(mfn).unwrap_or(&zero);
        if let Some(off) = (0..FB).find(|i| s[*i] != cur[*i]) {
            let st = self.frames[mfn as usize];
            let msg = format!(
                "mfn {mfn:#x} (pfn {:?}, type {} count {}) changed at byte {off:#x} while it had no writable mapping (seen at {when}): \
                 {:#x} -> {:#x}; on Xen that write faults",
                self.pfn(MachineFrame::new(mfn)),
                st.ty.name(),
                st.count,
                s[off],
                cur[off]
            );
            let copy: Box<[u8; FB]> = Box::new(*cur);
            self.violations.push(msg);
            self.snaps.insert(mfn, copy);
        }
    }

    pub(super) fn why(&mut self, errno: Errno, f: impl FnOnce() -> String) -> Errno {
        if self.reason.is_none() {
            self.reason = Some(f());
        }
        errno
    }
}
