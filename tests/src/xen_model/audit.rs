//! Introspection through the live table and the audit of every counted reference.

use super::*;

impl XenModel {
    /// Translates `va` through the live table (no access check).
    pub fn translate(&self, va: VirtAddr) -> Option<Mapping> {
        let va = va.as_u32();
        let l3e = self.pte(self.cr3, (va >> 30) as usize);
        if l3e & P == 0 {
            return None;
        }
        let l2e = self.pte(frame_of(l3e), ((va >> 21) & 511) as usize);
        if l2e & P == 0 {
            return None;
        }
        if l2e & PSE != 0 {
            let mfn = frame_of(l2e) + ((va >> 12) & 511);
            return Some(Mapping {
                mfn: MachineFrame::new(mfn),
                writable: l3e & l2e & RW != 0,
                l1: None,
                entry: l2e,
            });
        }
        let l1 = frame_of(l2e);
        let idx = ((va >> 12) & 511) as usize;
        let l1e = self.pte(l1, idx);
        if l1e & P == 0 {
            return None;
        }
        Some(Mapping {
            mfn: MachineFrame::new(frame_of(l1e)),
            writable: l3e & l2e & l1e & RW != 0,
            l1: Some((MachineFrame::new(l1), idx)),
            entry: l1e,
        })
    }

    /// A guest access to `va` as the CPU does it (ring 1, CR0.WP set).
    pub fn access(&self, va: VirtAddr, write: bool) -> Result<Mapping, PageFault> {
        let w = if write { 2 } else { 0 };
        match self.translate(va) {
            None => Err(PageFault { addr: va, error: w }),
            Some(m) if write && !m.writable => Err(PageFault {
                addr: va,
                error: 1 | w,
            }),
            Some(m) => Ok(m),
        }
    }

    /// Checks the model's own invariants and the guest's conduct; returns every problem
    /// (the recorded [violations](XenModel::violations) included):
    /// - every type count equals the references the validated tables, pins and cr3 hold,
    ///   and each reference names a frame of the right type;
    /// - no frame without a writable mapping changed outside Xen;
    /// - the p2m list in guest memory still matches the p2m.
    pub fn audit(&mut self) -> Vec<String> {
        let snaps: Vec<u32> = self.snaps.keys().copied().collect();
        for mfn in snaps {
            self.snap_check(mfn, "audit");
        }
        let mut out = self.violations.clone();
        let mut exp: HashMap<u32, (u32, PageType, bool)> = HashMap::new();
        let mut add = |out: &mut Vec<String>, t: u32, ty: PageType, pae: bool, from: String| {
            let e = exp.entry(t).or_insert((0, ty, pae));
            if e.1 != ty || e.2 != pae {
                out.push(format!(
                    "mfn {t:#x} is referenced as {} and as {} ({from})",
                    e.1.name(),
                    ty.name()
                ));
            }
            e.0 += 1;
        };
        for (m, ty) in self.tables() {
            let st = self.frames[m.number() as usize];
            if !st.validated {
                out.push(format!(
                    "mfn {:#x} has type {} but is not validated",
                    m.number(),
                    ty.name()
                ));
            }
            for i in 0..512 {
                let e = self.pte(m.number(), i);
                if e & P == 0 {
                    continue;
                }
                let t = frame_of(e);
                match ty {
                    PageType::L1 if e & RW != 0 && self.owned(t) => add(
                        &mut out,
                        t,
                        PageType::Writable,
                        false,
                        format!("l1 {:#x}[{i}]", m.number()),
                    ),
                    // An entry naming the L2 itself holds no reference; one naming
                    // another L2 is a linear page table (an L2 reference).
                    PageType::L2 if st.pae_xen_l2 && i >= FIRST_XEN_L2_SLOT => {}
                    PageType::L2 if t == m.number() => {}
                    PageType::L2 if self.state_mfn(MachineFrame::new(t)).ty == PageType::L2 => add(
                        &mut out,
                        t,
                        PageType::L2,
                        self.state_mfn(MachineFrame::new(t)).pae_xen_l2,
                        format!("linear l2 {:#x}[{i}]", m.number()),
                    ),
                    PageType::L2 => add(
                        &mut out,
                        t,
                        PageType::L1,
                        false,
                        format!("l2 {:#x}[{i}]", m.number()),
                    ),
                    PageType::L3 if i < 4 => add(
                        &mut out,
                        t,
                        PageType::L2,
                        i == 3,
                        format!("l3 {:#x}[{i}]", m.number()),
                    ),
                    PageType::L3 => out.push(format!("l3 {:#x} has entry {i} present", m.number())),
                    _ => {}
                }
            }
        }
        for (m, st) in self.frames.iter().enumerate() {
            if st.pinned {
                add(&mut out, m as u32, st.ty, st.pae_xen_l2, "pin".into());
            }
        }
        add(&mut out, self.cr3, PageType::L3, false, "cr3".into());
        for (m, st) in self.frames.iter().enumerate() {
            for _ in 0..st.leaked {
                add(
                    &mut out,
                    m as u32,
                    st.ty,
                    st.pae_xen_l2,
                    "leaked by Xen".into(),
                );
            }
        }
        for (m, st) in self.frames.iter().enumerate() {
            let (n, ty, pae) = exp
                .get(&(m as u32))
                .copied()
                .unwrap_or((0, PageType::None, false));
            if st.count != n
                || (n > 0 && (st.ty != ty || st.pae_xen_l2 != pae))
                || (n == 0 && st.ty != PageType::None)
            {
                out.push(format!(
                    "mfn {m:#x}: type {} (pae {}) count {} but {n} refs of type {} (pae {pae}) exist",
                    st.ty.name(),
                    st.pae_xen_l2,
                    st.count,
                    ty.name()
                ));
            }
        }
        if let Some(l) = self.layout {
            for pfn in 0..self.nr_pages {
                let at = l.p2m_list.start.number() + pfn / 1024;
                let v = self.read_u32(self.p2m[at as usize], (pfn % 1024) as usize * 4);
                if v != self.p2m[pfn as usize] {
                    out.push(format!(
                        "p2m list entry {pfn:#x} = {v:#x}, p2m says {:#x}",
                        self.p2m[pfn as usize]
                    ));
                    break;
                }
            }
        }
        out
    }
}
