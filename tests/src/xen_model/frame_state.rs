//! Who owns each machine frame, its page type and counts (Xen's `page_info`), and the p2m layouts.

/// Who owns a machine frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The modelled domU.
    Domain,
    /// Another domain's RAM.
    Foreign(u16),
    /// Xen's own memory (heap, M2P).
    Xen,
    /// The low 1 MiB / MMIO (`dom_io`).
    Io,
}

/// A frame's type (`PGT_*`); `None` whenever the type count is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PageType {
    /// No type (count 0).
    #[default]
    None,
    /// `PGT_writable_page`: mapped writable somewhere.
    Writable,
    /// `PGT_l1_page_table`.
    L1,
    /// `PGT_l2_page_table`.
    L2,
    /// `PGT_l3_page_table`.
    L3,
}

impl PageType {
    /// True for L1/L2/L3.
    pub fn is_table(self) -> bool {
        matches!(self, PageType::L1 | PageType::L2 | PageType::L3)
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            PageType::None => "none",
            PageType::Writable => "writable",
            PageType::L1 => "l1",
            PageType::L2 => "l2",
            PageType::L3 => "l3",
        }
    }
}

/// The model's bookkeeping of one machine frame (Xen's `page_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameState {
    /// Owner.
    pub owner: Owner,
    /// Current type (`None` at count 0).
    pub ty: PageType,
    /// `PGT_pae_xen_l2`: the L2 in slot 3 of an L3, holding Xen's private slots.
    pub pae_xen_l2: bool,
    /// Type count.
    pub count: u32,
    /// `PGT_pinned`.
    pub pinned: bool,
    /// `PGT_validated`.
    pub validated: bool,
    /// Xen's `linear_pt_count`: > 0, the linear entries this L2 holds (entries naming
    /// another validated L2, read-only); < 0, the linear entries naming this L2. A table
    /// cannot be both (mm.c `inc_linear_entries` / `inc_linear_uses`).
    pub linear: i32,
    /// Type references Xen took and can never drop (see `XenModel::held_by_xen`).
    pub leaked: u32,
}

impl FrameState {
    pub(super) const fn owned_by(owner: Owner) -> FrameState {
        FrameState {
            owner,
            ty: PageType::None,
            pae_xen_l2: false,
            count: 0,
            pinned: false,
            validated: false,
            linear: 0,
            leaked: 0,
        }
    }
}

/// How the domain's pseudo-physical frames map to machine frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mLayout {
    /// mfn = base + pfn.
    Offset(u32),
    /// mfn = base + nr_pages - 1 - pfn.
    Reversed(u32),
    /// A deterministic random permutation of `base..base + nr_pages`.
    Shuffled {
        /// First machine frame.
        base: u32,
        /// Permutation seed.
        seed: u64,
    },
}

impl P2mLayout {
    pub(super) fn base(self) -> u32 {
        match self {
            P2mLayout::Offset(b) | P2mLayout::Reversed(b) | P2mLayout::Shuffled { base: b, .. } => {
                b
            }
        }
    }
    pub(super) fn build(self, nr: u32) -> Vec<u32> {
        match self {
            P2mLayout::Offset(b) => (0..nr).map(|p| b + p).collect(),
            P2mLayout::Reversed(b) => (0..nr).map(|p| b + nr - 1 - p).collect(),
            P2mLayout::Shuffled { base, seed } => {
                let mut v: Vec<u32> = (0..nr).map(|p| base + p).collect();
                let mut s = seed | 1;
                for i in (1..v.len()).rev() {
                    s = s
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let j = ((s >> 33) % (i as u64 + 1)) as usize;
                    v.swap(i, j);
                }
                v
            }
        }
    }
}
