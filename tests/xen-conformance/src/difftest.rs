//! The differential test: seeded random sequences of page-table operations, valid and
//! invalid, sent through the raw hypercall layer to whatever [`Hypervisor`] runs them (the
//! real Xen in guest-demo, the model on the host), one [`Record`] per operation.
//!
//! The operations work in a sandbox: [`SANDBOX`] frames the guest allocates for the test (and
//! one buffer frame for multicall arguments). They are written directly while the direct map
//! maps them writable, remapped read-only or writable, pinned and unpinned at every level,
//! updated with `mmu_update` (single requests and batches, random indexes, frames and flags,
//! the three sub-commands), `update_va_mapping`, `MMUEXT_NEW_BASEPTR` and multicalls mixing
//! them. Of the kernel's own tables only entries that map nothing the kernel uses are
//! touched: the empty scratch slot of the live slot-3 L2, the user slot 0 of the live L3 (and
//! slot 3 and the first Xen-private L2 slot with their own values, which Xen refuses) and the
//! direct-map entries of the sandbox frames (always mapping their own frame). A
//! `NEW_BASEPTR` to a sandbox L3 is issued only when it cannot leave the kernel unmapped:
//! the L3 is a copy of the kernel's (then the next operation switches back) or it has no
//! slot 3 (Xen must refuse it).
//!
//! A record holds what the operation was (frames named by their role: `s3` = sandbox frame
//! 3, `L3`/`L2` = the live tables, `kL1` = the kernel L1 of the direct map's first 2 MiB
//! (slot 0 of the live L2), `img` = the kernel's first frame, `xen` = a frame of Xen's M2P,
//! `apic`, `lowio`), what Xen returned (each return value, `done` counts, each multicall
//! entry's result) and a digest of every entry it touched, read back afterwards with
//! machine frames replaced by those role names (so the real machine and the model, whose
//! frame numbers differ, compare equal) and the Accessed/Dirty bits left out (the CPU sets
//! them on its walks; the model has no CPU). Entries 428..511 of a frame are left out of a frame's digest (a slot-3 L2's
//! Xen-private slots, which Xen fills with its own mappings). The sequence of operations is
//! a function of the seed and of what the records already say, so the same seed on the
//! real Xen and on the model gives the same operations until the first record that
//! differs. No name may depend on where the kernel's image ends or where the allocator put
//! the sandbox (the real guest and the model's domain differ there): `kL1` is the L1 in
//! slot 0 because a copy of the kernel's L2 names it at that slot whatever the layout (it
//! was the L1 of sandbox frame 0, whose slot moved with the image: a guest-demo 2 MiB
//! larger diverged at seed 1's record 0x1b).
//!
//! One file (about 1,300 lines) on purpose: the generator, the operations, the sandbox set-up
//! and clean-up and the record format are one protocol that the guest and the host replay
//! must run identically; a change to one part changes the records of the others.

use super::*;
use core::fmt::Write;

/// Frames in the sandbox.
pub const SANDBOX: usize = 10;
/// First Xen-private slot of a slot-3 L2 (entries from here on are left out of digests).
const PRIVATE: usize = 428;
const A: u64 = PteFlags::ACCESSED.bits();
const D: u64 = PteFlags::DIRTY.bits();
const PWT: u64 = PteFlags::WRITE_THROUGH.bits();
const G: u64 = PteFlags::GLOBAL.bits();
const NX: u64 = 1 << 63;
const AVAIL: u64 = 1 << 9;
const FLAG_BITS: u64 = !ADDRESS_MASK;

/// A line of text kept inline (no heap), truncated at its capacity `N`.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: u16,
}

/// A record's line.
pub type Line = Text<256>;
/// A verbose record's entries.
pub type Detail = Text<1536>;

impl<const N: usize> Text<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text::new()
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let at = self.len as usize;
        let n = s.len().min(self.buf.len() - at);
        self.buf[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n as u16;
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One operation's record.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// Its index in the sequence (0-based).
    pub index: u32,
    /// What the operation was (roles instead of frame numbers).
    pub op: Line,
    /// What Xen returned: return values, `done` counts, multicall results.
    pub result: Line,
    /// Digest (24 bits) of the entries it touched, read back afterwards.
    pub digest: u32,
    /// In a verbose run, the entries the digest covers (`s6[3]=s1|1 ...`); empty otherwise.
    pub detail: Detail,
}

impl Record {
    /// The compact form the guest prints: `<result>.<digest>`.
    pub fn token(&self) -> Token<'_> {
        Token(self)
    }
}

/// The compact form of a [`Record`] (see [`Record::token`]).
pub struct Token<'a>(&'a Record);

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06x}", self.0.result, self.0.digest)
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:x} {} = {} #{:06x}",
            self.index, self.op, self.result, self.digest
        )
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Operations run.
    pub ops: u32,
    /// Operations Xen refused (any negative result).
    pub refused: u32,
    /// Operations that were not issued (a precondition did not hold, e.g. a direct write to a
    /// frame mapped read-only).
    pub skipped: u32,
    /// The sandbox's machine frames (`s0`, `s1`, ...), to read the hypervisor's own logs.
    pub sandbox: [MachineFrame; SANDBOX],
    /// Sandbox frames Xen still held a page-table type on after the cleanup had unpinned
    /// every frame and cleared every entry (a reference Xen took and can never drop, see
    /// docs/DIFFTEST.md #10): they stay read-only and out of the allocator.
    pub held: u32,
}

/// splitmix64: small, fast, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// FNV-1a over 64-bit words.
struct Digest(u32);

impl Digest {
    fn new() -> Digest {
        Digest(0x811C_9DC5)
    }
    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.0 = (self.0 ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    fn value(&self) -> u32 {
        (self.0 ^ (self.0 >> 24)) & 0xFF_FFFF
    }
}

/// Frames with a name in the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Sandbox(usize),
    Buf,
    LiveL3,
    LiveL2,
    KernelL1,
    Image,
    Xen,
    Apic,
    LowIo,
    /// Another frame of the domain.
    Own,
    /// A frame that is not the domain's.
    Foreign,
}

impl Role {
    fn code(self) -> u64 {
        match self {
            Role::Sandbox(k) => 0x100 + k as u64,
            Role::Buf => 0x200,
            Role::LiveL3 => 0x201,
            Role::LiveL2 => 0x202,
            Role::KernelL1 => 0x203,
            Role::Image => 0x204,
            Role::Own => 0x210,
            Role::Xen => 0x300,
            Role::Apic => 0x301,
            Role::LowIo => 0x302,
            Role::Foreign => 0x3FF,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Sandbox(k) => write!(f, "s{k}"),
            Role::Buf => f.write_str("buf"),
            Role::LiveL3 => f.write_str("L3"),
            Role::LiveL2 => f.write_str("L2"),
            Role::KernelL1 => f.write_str("kL1"),
            Role::Image => f.write_str("img"),
            Role::Xen => f.write_str("xen"),
            Role::Apic => f.write_str("apic"),
            Role::LowIo => f.write_str("lowio"),
            Role::Own => f.write_str("own"),
            Role::Foreign => f.write_str("foreign"),
        }
    }
}

/// A normalised entry as text: `<role>|<flags>`.
struct Norm(u64);

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0 >> 12;
        let flags = self.0 & 0xFFF | self.0 & !((1 << 52) - 1);
        let name: Role = match code {
            0 => return write!(f, "0|{flags:x}"),
            0x100..=0x1FF => Role::Sandbox((code - 0x100) as usize),
            0x200 => Role::Buf,
            0x201 => Role::LiveL3,
            0x202 => Role::LiveL2,
            0x203 => Role::KernelL1,
            0x204 => Role::Image,
            0x210 => Role::Own,
            0x300 => Role::Xen,
            0x301 => Role::Apic,
            0x302 => Role::LowIo,
            _ => Role::Foreign,
        };
        write!(f, "{name}|{flags:x}")
    }
}

/// Values the generator puts in entries: a frame's role and flags.
const VALUE_ROLES: [Role; 8] = [
    Role::Buf,
    Role::LiveL3,
    Role::LiveL2,
    Role::KernelL1,
    Role::Image,
    Role::Xen,
    Role::Apic,
    Role::LowIo,
];

/// Flags of present-looking entries the generator starts from.
const GOOD_FLAGS: [u64; 7] = [0x63, 0x21, 0x67, 0x01, 0x03, 0x05, 0x00];
/// One of them may be added.
const BAD_FLAGS: [u64; 7] = [PWT, PCD, PSE, G, NX, AVAIL, 1 << 62];

/// The sandbox and the names of everything a record mentions.
struct Sandbox {
    frames: [PhysFrame; SANDBOX],
    mfns: [MachineFrame; SANDBOX],
    /// Where each frame's direct-map entry is: (kernel L1, index).
    dm: [(PhysFrame, usize); SANDBOX],
    buf: PhysFrame,
    buf_m: MachineFrame,
    live_l3: MachineFrame,
    live_l2: PhysFrame,
    live_l2_m: MachineFrame,
    kernel_l1: MachineFrame,
    image: MachineFrame,
    xen: MachineFrame,
    /// The live L2's scratch slot (empty after a boot).
    scratch_slot: usize,
    /// The live L3's slot 0 as the boot left it.
    l3_slot0: u64,
}

struct Run<'e, 'a, H: Hypervisor> {
    env: &'e mut Env<'a, H>,
    verbose: bool,
    detail: Detail,
    sb: Sandbox,
    rng: Rng,
    op: Line,
    result: Line,
    digest: Digest,
    summary: Summary,
    refused: bool,
    /// The last copy of the kernel's table made (L3, L2): later operations prefer it.
    last_copy: Option<(usize, usize)>,
}

fn b(step: &'static str, r: i32) -> Result<(), Verdict> {
    ok0(step, r)
}

/// Runs `ops` operations of the sequence `seed` on the sandbox, reporting each record; then
/// undoes everything (frames back to the allocator, the kernel's entries as they were).
/// `Err` when a setup or cleanup step failed (the machine may not be in a known state).
pub fn run<H: Hypervisor>(
    env: &mut Env<'_, H>,
    seed: u64,
    ops: u32,
    verbose: bool,
    report: &mut dyn FnMut(&Record),
) -> Result<Summary, Verdict> {
    run_inner(env, seed, ops, verbose, true, report)
}

/// [`run`] without the cleanup: the sandbox stays as the last operation left it (its frames
/// are not given back), to look at the hypervisor's state after a divergence.
pub fn run_without_cleanup<H: Hypervisor>(
    env: &mut Env<'_, H>,
    seed: u64,
    ops: u32,
    report: &mut dyn FnMut(&Record),
) -> Result<Summary, Verdict> {
    run_inner(env, seed, ops, true, false, report)
}

fn run_inner<H: Hypervisor>(
    env: &mut Env<'_, H>,
    seed: u64,
    ops: u32,
    verbose: bool,
    cleanup: bool,
    report: &mut dyn FnMut(&Record),
) -> Result<Summary, Verdict> {
    let sb = setup(env)?;
    let sandbox = sb.mfns;
    let mut r = Run {
        env,
        verbose,
        detail: Detail::new(),
        sb,
        rng: Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B),
        op: Line::new(),
        result: Line::new(),
        digest: Digest::new(),
        summary: Summary {
            ops: 0,
            refused: 0,
            skipped: 0,
            sandbox,
            held: 0,
        },
        refused: false,
        last_copy: None,
    };
    let mut outcome = Ok(());
    for i in 0..ops {
        r.op = Line::new();
        r.result = Line::new();
        r.digest = Digest::new();
        r.detail = Detail::new();
        r.refused = false;
        if let Err(v) = r.step() {
            outcome = Err(v);
            break;
        }
        r.summary.ops += 1;
        if r.refused {
            r.summary.refused += 1;
        }
        if r.result.as_str() == "skip" {
            r.summary.skipped += 1;
        }
        report(&Record {
            index: i,
            op: r.op,
            result: r.result,
            digest: r.digest.value(),
            detail: r.detail,
        });
    }
    if !cleanup {
        return outcome.map(|()| r.summary);
    }
    let cleanup = r.cleanup();
    outcome.and(cleanup).map(|()| r.summary)
}

fn setup<H: Hypervisor>(env: &mut Env<'_, H>) -> Result<Sandbox, Verdict> {
    let mut frames = [PhysFrame::new(0); SANDBOX];
    for (i, f) in frames.iter_mut().enumerate() {
        match env.fresh() {
            Ok(x) => *f = x,
            Err(v) => {
                for g in &frames[..i] {
                    let _ = env.give_back(*g);
                }
                return Err(v);
            }
        }
    }
    let buf = env.fresh()?;
    let mut mfns = [MachineFrame::new(0); SANDBOX];
    let mut dm = [(PhysFrame::new(0), 0); SANDBOX];
    for k in 0..SANDBOX {
        mfns[k] = env.mfn(frames[k])?;
        dm[k] = env.live_l1(direct_va(frames[k]))?;
    }
    let live_l2 = env.live_l2()?;
    let (xen, _) = env.xen_frame()?;
    Ok(Sandbox {
        frames,
        mfns,
        dm,
        buf,
        buf_m: env.mfn(buf)?,
        live_l3: env.mfn(env.cr3)?,
        live_l2,
        live_l2_m: env.mfn(live_l2)?,
        kernel_l1: env.mfn(env.live_l1(direct_va(PhysFrame::new(0)))?.0)?,
        image: env.mfn(PhysFrame::new(0))?,
        xen,
        scratch_slot: env.free_l2_slot()?,
        l3_slot0: env.entry(env.cr3, 0)?,
    })
}

impl<H: Hypervisor> Run<'_, '_, H> {
    fn mfn_of(&self, role: Role) -> MachineFrame {
        let s = &self.sb;
        match role {
            Role::Sandbox(k) => s.mfns[k],
            Role::Buf => s.buf_m,
            Role::LiveL3 => s.live_l3,
            Role::LiveL2 => s.live_l2_m,
            Role::KernelL1 => s.kernel_l1,
            Role::Image => s.image,
            Role::Xen => s.xen,
            Role::Apic => LAPIC_MFN,
            Role::LowIo => LOW_IO_MFN,
            Role::Own | Role::Foreign => MachineFrame::new(0),
        }
    }

    fn role_of(&self, m: MachineFrame) -> Role {
        let s = &self.sb;
        if let Some(k) = s.mfns.iter().position(|x| *x == m) {
            return Role::Sandbox(k);
        }
        for r in VALUE_ROLES {
            if self.mfn_of(r) == m {
                return r;
            }
        }
        match self.env.hv.m2p(m) {
            Some(p) if self.env.hv.p2m(p) == Some(m) => Role::Own,
            _ => Role::Foreign,
        }
    }

    /// An entry with its frame replaced by the frame's role, A/D left out.
    fn norm(&self, e: u64) -> u64 {
        if e == 0 {
            return 0;
        }
        (self.role_of(frame_of(e)).code() << 12) | (e & FLAG_BITS & !(A | D))
    }

    fn hash_entry(&mut self, e: u64) {
        let n = self.norm(e);
        self.digest.word(n);
        if self.verbose {
            let _ = write!(self.detail, " e={}", Norm(n));
        }
    }

    /// Adds sandbox frame `k` to the digest: entries 0..427 naming a frame with a name
    /// (entries naming other frames of the domain, e.g. a copy of the kernel's L2, only by
    /// their index) and its direct-map entry.
    fn hash_frame(&mut self, k: usize) -> Result<(), Verdict> {
        let f = self.sb.frames[k];
        self.digest.word(0xF000 + k as u64);
        if self.verbose {
            let _ = write!(self.detail, " |s{k}:");
        }
        for i in 0..PRIVATE {
            let e = self.env.entry(f, i)?;
            if e == 0 {
                continue;
            }
            let n = self.norm(e);
            self.digest.word(i as u64);
            if n >> 12 != Role::Own.code() {
                self.digest.word(n);
            }
            if self.verbose {
                let _ = write!(self.detail, " s{k}[{i}]={}", Norm(n));
            }
        }
        if self.verbose {
            // Xen's private slots, shown (not digested) in a verbose run.
            for i in PRIVATE..512 {
                let e = self.env.entry(f, i)?;
                if e != 0 {
                    let _ = write!(self.detail, " s{k}[{i}]~{}", Norm(self.norm(e)));
                }
            }
        }
        let dm = self.dm_entry(k)?;
        self.hash_entry(dm);
        Ok(())
    }

    fn dm_entry(&self, k: usize) -> Result<u64, Verdict> {
        let (l1, i) = self.sb.dm[k];
        self.env.entry(l1, i)
    }

    /// True when sandbox frame `k` is mapped writable by its direct-map entry.
    fn writable(&self, k: usize) -> Result<bool, Verdict> {
        let e = self.dm_entry(k)?;
        Ok(e & (P | RW) == (P | RW) && frame_of(e) == self.sb.mfns[k])
    }

    fn ret(&mut self, r: i32) {
        if r < 0 {
            self.refused = true;
        }
        let sep = if self.result.len == 0 { "" } else { ":" };
        let _ = write!(self.result, "{sep}{r}");
    }

    fn done(&mut self, n: u32) {
        let _ = write!(self.result, "/{n}");
    }

    fn skip(&mut self) {
        self.result = Line::new();
        let _ = write!(self.result, "skip");
    }

    fn pick_frame(&mut self) -> usize {
        self.rng.below(SANDBOX as u64) as usize
    }

    /// A random entry value: a frame (mostly the sandbox's) and flags, or zero.
    fn value(&mut self) -> u64 {
        if self.rng.chance(15) {
            let _ = write!(self.op, " 0");
            return 0;
        }
        let role = if self.rng.chance(70) {
            Role::Sandbox(self.pick_frame())
        } else {
            VALUE_ROLES[self.rng.below(VALUE_ROLES.len() as u64) as usize]
        };
        let mut flags = GOOD_FLAGS[self.rng.below(GOOD_FLAGS.len() as u64) as usize];
        if self.rng.chance(15) {
            flags |= BAD_FLAGS[self.rng.below(BAD_FLAGS.len() as u64) as usize];
        }
        let _ = write!(self.op, " {role}|{flags:x}");
        self.mfn_of(role).start().as_u64() | flags
    }

    fn index(&mut self) -> usize {
        match self.rng.below(10) {
            0..=4 => self.rng.below(4) as usize,
            5..=6 => self.rng.below(16) as usize,
            7 => 425 + self.rng.below(8) as usize,
            _ => self.rng.below(512) as usize,
        }
    }

    fn entry_ma(&self, k: usize, i: usize) -> u64 {
        self.sb.mfns[k].start().as_u64() + i as u64 * 8
    }

    fn step(&mut self) -> Result<(), Verdict> {
        match self.rng.below(100) {
            0..=7 => self.op_poke(),
            8..=9 => self.op_switch(),
            10..=15 => self.op_fill(),
            16..=17 => self.op_clone(),
            18..=23 => self.op_zero(),
            24..=35 => self.op_remap(),
            36..=47 => self.op_mmu(),
            48..=51 => self.op_mmu_batch(),
            52..=56 => self.op_kernel_entry(),
            57..=69 => self.op_pin(),
            70..=75 => self.op_unpin(),
            76..=79 => self.op_ext_batch(),
            80..=83 => self.op_new_baseptr(),
            84..=92 => self.op_uvm(),
            _ => self.op_multicall(),
        }
    }

    /// A direct write of one entry of a frame mapped writable.
    fn op_poke(&mut self) -> Result<(), Verdict> {
        let k = self.pick_frame();
        let i = self.index();
        let _ = write!(self.op, "poke s{k}[{i}]");
        let v = self.value();
        if self.writable(k)? {
            self.env.poke(self.sb.frames[k], i, v)?;
            self.ret(0);
        } else {
            self.skip();
        }
        self.hash_frame(k)
    }

    /// Direct writes making a frame look like a table: a few entries naming the sandbox.
    fn op_fill(&mut self) -> Result<(), Verdict> {
        let k = self.pick_frame();
        let n = 1 + self.rng.below(4) as usize;
        let _ = write!(self.op, "fill s{k} n={n}");
        let writable = self.writable(k)?;
        for i in 0..n {
            let g = self.pick_frame();
            let flags = GOOD_FLAGS[self.rng.below(4) as usize];
            let _ = write!(self.op, " s{g}|{flags:x}");
            if writable {
                let v = self.sb.mfns[g].start().as_u64() | flags;
                self.env.poke(self.sb.frames[k], i, v)?;
            }
        }
        if writable {
            self.ret(0);
        } else {
            self.skip();
        }
        self.hash_frame(k)
    }

    /// Direct writes making frames `l3`, `l2` a copy of the kernel's table (slots 0..2 of
    /// the live L3, the live L2's guest slots): an L3 `NEW_BASEPTR` may switch to.
    fn op_clone(&mut self) -> Result<(), Verdict> {
        let l3 = self.pick_frame();
        let l2 = self.pick_frame();
        let _ = write!(self.op, "clone s{l3} s{l2}");
        if l3 == l2 || !self.writable(l3)? || !self.writable(l2)? {
            self.skip();
            return Ok(());
        }
        for i in 0..PRIVATE {
            let e = self.env.entry(self.sb.live_l2, i)?;
            self.env.poke(self.sb.frames[l2], i, e)?;
        }
        for i in 0..3 {
            let e = self.env.entry(self.env.cr3, i)?;
            self.env
                .poke(self.sb.frames[l3], i, e & !(RW | US | A | D))?;
        }
        let v = self.sb.mfns[l2].start().as_u64() | P;
        self.env.poke(self.sb.frames[l3], 3, v)?;
        self.ret(0);
        self.last_copy = Some((l3, l2));
        if self.rng.chance(60) {
            // Both read-only, ready to be validated.
            let _ = write!(self.op, " +ro");
            let r = self.env.map(self.sb.frames[l2], false)?;
            self.ret(r);
            let r = self.env.map(self.sb.frames[l3], false)?;
            self.ret(r);
        }
        self.hash_frame(l3)?;
        self.hash_frame(l2)
    }

    /// A whole switch: two frames made writable, a copy of the kernel's table written into
    /// them, both made read-only, `NEW_BASEPTR` to the copy and back to the kernel's table.
    fn op_switch(&mut self) -> Result<(), Verdict> {
        let l3 = self.pick_frame();
        let l2 = (l3 + 1 + self.rng.below(SANDBOX as u64 - 1) as usize) % SANDBOX;
        let _ = write!(self.op, "switch s{l3} s{l2}");
        for k in [l3, l2] {
            let r = self.env.map(self.sb.frames[k], true)?;
            self.ret(r);
        }
        if !self.writable(l3)? || !self.writable(l2)? {
            return self.hash_frame(l3).and_then(|()| self.hash_frame(l2));
        }
        for i in 0..512 {
            let e = if i < PRIVATE {
                self.env.entry(self.sb.live_l2, i)?
            } else {
                0
            };
            self.env.poke(self.sb.frames[l2], i, e)?;
        }
        for i in 0..512 {
            let e = match i {
                0..=2 => self.env.entry(self.env.cr3, i)? & !(RW | US | A | D),
                3 => self.sb.mfns[l2].start().as_u64() | P,
                _ => 0,
            };
            self.env.poke(self.sb.frames[l3], i, e)?;
        }
        self.last_copy = Some((l3, l2));
        for k in [l2, l3] {
            let r = self.env.map(self.sb.frames[k], false)?;
            self.ret(r);
        }
        if self.is_kernel_copy(l3)? {
            let r = self
                .env
                .ext1(mmuext::NEW_BASEPTR, self.sb.mfns[l3].number());
            self.ret(r);
            if r == 0 {
                let back = self.env.ext1(mmuext::NEW_BASEPTR, self.sb.live_l3.number());
                b("NEW_BASEPTR back to the kernel's table", back)?;
            }
        }
        self.hash_frame(l3)?;
        self.hash_frame(l2)
    }

    /// A sandbox frame, or with `percent` chance the last copy's L3.
    fn pick_l3(&mut self, percent: u64) -> usize {
        match self.last_copy {
            Some((l3, _)) if self.rng.chance(percent) => l3,
            _ => self.pick_frame(),
        }
    }

    fn op_zero(&mut self) -> Result<(), Verdict> {
        let k = self.pick_frame();
        let _ = write!(self.op, "zero s{k}");
        if self.writable(k)? {
            for i in 0..512 {
                if self.env.entry(self.sb.frames[k], i)? != 0 {
                    self.env.poke(self.sb.frames[k], i, 0)?;
                }
            }
            self.ret(0);
        } else {
            self.skip();
        }
        self.hash_frame(k)
    }

    /// The frame's direct-map entry read-only or writable (`mmu_update`, then an invlpg).
    fn op_remap(&mut self) -> Result<(), Verdict> {
        let k = self.pick_frame();
        let rw = self.rng.chance(40);
        let _ = write!(self.op, "remap s{k} {}", if rw { "rw" } else { "ro" });
        let r = self.env.map(self.sb.frames[k], rw)?;
        self.ret(r);
        self.hash_frame(k)
    }

    fn subcommand(&mut self) -> u64 {
        match self.rng.below(50) {
            0 => {
                let _ = write!(self.op, " cmd=7");
                UNKNOWN_MMU_SUBCMD
            }
            1..=4 => {
                let _ = write!(self.op, " preserve_ad");
                2
            }
            _ => 0,
        }
    }

    fn op_mmu(&mut self) -> Result<(), Verdict> {
        let k = self.pick_frame();
        let i = self.index();
        let _ = write!(self.op, "mmu s{k}[{i}]");
        let v = self.value();
        let sub = self.subcommand();
        let r = self.env.mmu1(self.entry_ma(k, i) | sub, v);
        self.ret(r);
        self.hash_frame(k)
    }

    fn op_mmu_batch(&mut self) -> Result<(), Verdict> {
        let n = 2 + self.rng.below(3) as usize;
        let _ = write!(self.op, "mmu-batch");
        let mut reqs = [MmuUpdate { ptr: 0, val: 0 }; 4];
        let mut touched = [0usize; 4];
        for (j, req) in reqs.iter_mut().enumerate().take(n) {
            let k = self.pick_frame();
            let i = self.index();
            let _ = write!(self.op, " s{k}[{i}]");
            let v = self.value();
            *req = MmuUpdate {
                ptr: self.entry_ma(k, i),
                val: v,
            };
            touched[j] = k;
        }
        let mut done = 0;
        // SAFETY: every request targets a sandbox frame's entry: refused by Xen or changing
        // only what the sandbox maps (see the module's rules).
        let r = unsafe { self.env.hv.mmu_update(&reqs[..n], &mut done) };
        self.ret(r);
        self.done(done);
        for k in touched.into_iter().take(n) {
            self.hash_frame(k)?;
        }
        Ok(())
    }

    /// An entry of the kernel's live tables that maps nothing the kernel uses.
    fn op_kernel_entry(&mut self) -> Result<(), Verdict> {
        let l2m = self.sb.live_l2_m.start().as_u64();
        let l3m = self.sb.live_l3.start().as_u64();
        let (ma, what) = match self.rng.below(6) {
            0 | 1 => {
                let _ = write!(self.op, "kernel L2[scratch]");
                (l2m + self.sb.scratch_slot as u64 * 8, 0)
            }
            2 => {
                let _ = write!(self.op, "kernel L2[scratch] 0");
                let r = self.env.mmu1(l2m + self.sb.scratch_slot as u64 * 8, 0);
                self.ret(r);
                return self.hash_kernel_entries();
            }
            3 => {
                let _ = write!(self.op, "kernel L3[0]");
                (l3m, 1)
            }
            4 => {
                let _ = write!(self.op, "kernel L3[0] as booted");
                let r = self.env.mmu1(l3m, self.sb.l3_slot0 & !(RW | US | A | D));
                self.ret(r);
                return self.hash_kernel_entries();
            }
            _ => {
                // Values Xen must refuse: the live L3's slot 3 (same value), the first
                // Xen-private slot of the live L2 (same value).
                if self.rng.chance(50) {
                    let _ = write!(self.op, "kernel L3[3] same");
                    let cur = self.env.entry(self.env.cr3, 3)?;
                    let r = self.env.mmu1(l3m + 24, cur & !(RW | US));
                    self.ret(r);
                } else {
                    let _ = write!(self.op, "kernel L2[private] same");
                    let slot = self.env.first_xen_slot();
                    let cur = self.env.entry(self.sb.live_l2, slot)?;
                    let r = self.env.mmu1(l2m + slot as u64 * 8, cur);
                    self.ret(r);
                }
                return self.hash_kernel_entries();
            }
        };
        // Sandbox frames (or a frame Xen must refuse) with flags of this level.
        let role = if self.rng.chance(80) {
            Role::Sandbox(self.pick_frame())
        } else {
            [Role::Xen, Role::Apic, Role::LiveL2, Role::KernelL1][self.rng.below(4) as usize]
        };
        let flags = if what == 0 {
            [0x67u64, 0x63, 0x25, 0x21, 0xE3][self.rng.below(5) as usize]
        } else {
            [0x01u64, 0x01, 0x11, 0x07][self.rng.below(4) as usize]
        };
        let _ = write!(self.op, " {role}|{flags:x}");
        let r = self
            .env
            .mmu1(ma, self.mfn_of(role).start().as_u64() | flags);
        self.ret(r);
        if r == 0 {
            let _ = self.env.ext1(mmuext::TLB_FLUSH_LOCAL, 0);
        }
        self.hash_kernel_entries()
    }

    fn hash_kernel_entries(&mut self) -> Result<(), Verdict> {
        let a = self.env.entry(self.sb.live_l2, self.sb.scratch_slot)?;
        let c = self.env.entry(self.env.cr3, 0)?;
        self.hash_entry(a);
        self.hash_entry(c);
        Ok(())
    }

    /// A frame for an mmuext operation: mostly the sandbox's.
    fn ext_target(&mut self) -> (MachineFrame, Option<usize>) {
        if self.rng.chance(90) {
            let k = self.pick_frame();
            let _ = write!(self.op, " s{k}");
            (self.sb.mfns[k], Some(k))
        } else {
            let role = [Role::LiveL2, Role::Xen, Role::Buf][self.rng.below(3) as usize];
            let _ = write!(self.op, " {role}");
            (self.mfn_of(role), None)
        }
    }

    fn pin_cmd(&mut self) -> u32 {
        let (cmd, name) = match self.rng.below(10) {
            0..=3 => (mmuext::PIN_L1_TABLE, "pin1"),
            4..=6 => (mmuext::PIN_L2_TABLE, "pin2"),
            7..=8 => (mmuext::PIN_L3_TABLE, "pin3"),
            _ => (3, "pin4"),
        };
        let _ = write!(self.op, "{name}");
        cmd
    }

    fn op_pin(&mut self) -> Result<(), Verdict> {
        let cmd = self.pin_cmd();
        let (m, k) =
            if cmd == mmuext::PIN_L3_TABLE && self.last_copy.is_some() && self.rng.chance(40) {
                let k = self.pick_l3(100);
                let _ = write!(self.op, " s{k}");
                (self.sb.mfns[k], Some(k))
            } else {
                self.ext_target()
            };
        let r = self.env.ext1(cmd, m.number());
        self.ret(r);
        if let Some(k) = k {
            self.hash_frame(k)?;
        }
        Ok(())
    }

    fn op_unpin(&mut self) -> Result<(), Verdict> {
        let _ = write!(self.op, "unpin");
        let (m, k) = self.ext_target();
        let r = self.env.ext1(mmuext::UNPIN_TABLE, m.number());
        self.ret(r);
        if let Some(k) = k {
            self.hash_frame(k)?;
        }
        Ok(())
    }

    fn op_ext_batch(&mut self) -> Result<(), Verdict> {
        let n = 2 + self.rng.below(2) as usize;
        let _ = write!(self.op, "ext-batch");
        let mut ops = [MmuextOp {
            cmd: 0,
            arg1: 0,
            arg2: 0,
        }; 3];
        let mut touched = [None; 3];
        for j in 0..n {
            let _ = write!(self.op, " ");
            let cmd = match self.rng.below(10) {
                0..=4 => self.pin_cmd(),
                5..=7 => {
                    let _ = write!(self.op, "unpin");
                    mmuext::UNPIN_TABLE
                }
                8 => {
                    let _ = write!(self.op, "flush");
                    ops[j] = MmuextOp {
                        cmd: mmuext::TLB_FLUSH_LOCAL,
                        arg1: 0,
                        arg2: 0,
                    };
                    continue;
                }
                _ => {
                    let _ = write!(self.op, "cmd=7f");
                    ops[j] = MmuextOp {
                        cmd: UNKNOWN_MMUEXT_CMD,
                        arg1: 0,
                        arg2: 0,
                    };
                    continue;
                }
            };
            let (m, k) = self.ext_target();
            ops[j] = MmuextOp {
                cmd,
                arg1: m.number(),
                arg2: 0,
            };
            touched[j] = k;
        }
        let mut done = 0;
        // SAFETY: pins, unpins and flushes of sandbox frames (or of frames Xen must refuse);
        // never the kernel's live tables.
        let r = unsafe { self.env.hv.mmuext_op(&ops[..n], &mut done) };
        self.ret(r);
        self.done(done);
        for k in touched.into_iter().take(n).flatten() {
            self.hash_frame(k)?;
        }
        Ok(())
    }

    /// True when sandbox L3 `k` maps what the kernel's table maps: slots 0..2 as the live
    /// L3's, slot 3 a sandbox frame holding the live L2's guest slots.
    fn is_kernel_copy(&self, k: usize) -> Result<bool, Verdict> {
        let f = self.sb.frames[k];
        for i in 0..3 {
            let want = self.env.entry(self.env.cr3, i)? & !(RW | US | A | D);
            if self.env.entry(f, i)? & !(RW | US | A | D) != want {
                return Ok(false);
            }
        }
        let e3 = self.env.entry(f, 3)?;
        let Some(l2) = self.sb.mfns.iter().position(|m| *m == frame_of(e3)) else {
            return Ok(false);
        };
        if e3 & P == 0 {
            return Ok(false);
        }
        for i in 0..PRIVATE {
            let e = self.env.entry(self.sb.frames[l2], i)?;
            if e & !(A | D) != self.env.entry(self.sb.live_l2, i)? & !(A | D) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `MMUEXT_NEW_BASEPTR` to a sandbox L3, only when it cannot leave the kernel unmapped:
    /// a copy of the kernel's table (then back to the kernel's at once) or an L3 without
    /// slot 3 (refused).
    fn op_new_baseptr(&mut self) -> Result<(), Verdict> {
        let k = self.pick_l3(60);
        let _ = write!(self.op, "new_baseptr s{k}");
        let copy = self.is_kernel_copy(k)?;
        let no_slot3 = self.env.entry(self.sb.frames[k], 3)? & P == 0;
        if !copy && !no_slot3 {
            self.skip();
            return self.hash_frame(k);
        }
        let _ = write!(self.op, "{}", if copy { " (copy)" } else { " (no slot 3)" });
        let r = self.env.ext1(mmuext::NEW_BASEPTR, self.sb.mfns[k].number());
        self.ret(r);
        if r == 0 {
            if !copy {
                return Err(Verdict::broken(
                    "NEW_BASEPTR to an L3 without slot 3",
                    format_args!("Xen accepted it"),
                ));
            }
            let back = self.env.ext1(mmuext::NEW_BASEPTR, self.sb.live_l3.number());
            b("NEW_BASEPTR back to the kernel's table", back)?;
        }
        self.hash_frame(k)
    }

    /// False when `va`'s leaf entry, which an update_va_mapping would change, lies in a
    /// table that is not the sandbox's (e.g. a kernel L1 linked under the scratch slot or
    /// under user space by the random operations): the operation is then not issued.
    fn uvm_reaches_sandbox_only(&self, va: VirtAddr) -> bool {
        match self.env.live_l1(va) {
            // No guest L1 (not present, a 2 MiB entry, a frame not ours): Xen refuses.
            Err(_) => true,
            Ok((l1, _)) => self.sb.frames.contains(&l1),
        }
    }

    /// A virtual address for update_va_mapping and the entry value to put there.
    fn uvm_target(&mut self) -> (VirtAddr, u64, Option<usize>) {
        match self.rng.below(10) {
            0..=4 => {
                let page = if self.rng.chance(70) {
                    self.rng.below(4)
                } else {
                    self.rng.below(512)
                } as u32;
                let _ = write!(self.op, " scratch+{page}");
                let va = VIRT_BASE + ((self.sb.scratch_slot as u32) << 21) + page * 4096;
                (VirtAddr::new(va), self.value(), None)
            }
            5..=7 => {
                // A sandbox frame's direct-map entry: always its own frame, present.
                let k = self.pick_frame();
                let mut flags = [0x63u64, 0x21, 0x23, 0x61][self.rng.below(4) as usize];
                if self.rng.chance(15) {
                    flags |= BAD_FLAGS[self.rng.below(BAD_FLAGS.len() as u64) as usize];
                }
                let _ = write!(self.op, " dm(s{k}) own|{flags:x}");
                (
                    direct_va(self.sb.frames[k]),
                    self.sb.mfns[k].start().as_u64() | flags,
                    Some(k),
                )
            }
            _ => {
                let page = self.rng.below(4) as u32;
                let _ = write!(self.op, " user+{page}");
                (VirtAddr::new(0x0040_0000 + page * 4096), self.value(), None)
            }
        }
    }

    fn op_uvm(&mut self) -> Result<(), Verdict> {
        let _ = write!(self.op, "uvm");
        let (va, v, k) = self.uvm_target();
        if k.is_none() && !self.uvm_reaches_sandbox_only(va) {
            self.skip();
            return self.hash_uvm(va, k);
        }
        let r = self.env.uvm(va, v);
        self.ret(r);
        self.hash_uvm(va, k)
    }

    /// Digest after an update_va_mapping of `va`: the frame whose direct-map entry it was,
    /// or the leaf entry the live table now has for `va` when that entry lies in a sandbox
    /// frame. An entry of a kernel L1 (one the random operations linked under the scratch
    /// slot) maps whatever the kernel's layout put there, which differs between the real
    /// guest and the model's domain: it is not hashed (seed 14 diverged at record 0xe6a on
    /// exactly that, a skipped operation whose L1 was the kernel's).
    fn hash_uvm(&mut self, va: VirtAddr, k: Option<usize>) -> Result<(), Verdict> {
        if let Some(k) = k {
            return self.hash_frame(k);
        }
        self.hash_kernel_entries()?;
        if let Ok((l1, i)) = self.env.live_l1(va) {
            if self.sb.frames.contains(&l1) {
                let e = self.env.entry(l1, i)?;
                self.hash_entry(e);
            }
        }
        Ok(())
    }

    fn buf_write(&mut self, off: usize, bytes: &[u8]) -> Result<(), Verdict> {
        let p = self.env.ptr(self.sb.buf)? as *mut u8;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: the buffer is the test's own frame, direct-mapped writable; off + i <
            // 4096 (callers stay inside their 512-byte region).
            unsafe { p.add((off + i) % PAGE_SIZE as usize).write_volatile(*b) };
        }
        Ok(())
    }

    fn buf_u32(&self, off: usize) -> Result<u32, Verdict> {
        let e = self.env.entry(self.sb.buf, off / 8)?;
        Ok((e >> ((off % 8) * 8)) as u32)
    }

    /// A multicall of 2..4 entries: mmu_update and mmuext_op batches read from the buffer
    /// frame, update_va_mapping, an unknown hypercall.
    fn op_multicall(&mut self) -> Result<(), Verdict> {
        let n = 2 + self.rng.below(3) as usize;
        let _ = write!(self.op, "multicall");
        let buf_va = direct_va(self.sb.buf).as_u32();
        let mut calls = [MulticallEntry {
            op: 0,
            result: 0,
            args: [0; 6],
        }; 4];
        let mut touched = [None; 8];
        let mut hashes_uvm = [None; 4];
        let mut kinds = [0u8; 4];
        let mut mmu_before = false;
        for j in 0..n {
            let region = j * 512;
            let done_off = region + 480;
            self.buf_write(done_off, &0xFFFF_FFFFu32.to_le_bytes())?;
            let kind = self.rng.below(10);
            kinds[j] = kind as u8;
            calls[j] = match kind {
                0..=3 => {
                    mmu_before = true;
                    let cnt = 1 + self.rng.below(2) as usize;
                    let _ = write!(self.op, " [mmu");
                    for q in 0..cnt {
                        let k = self.pick_frame();
                        let i = self.index();
                        let _ = write!(self.op, " s{k}[{i}]");
                        let v = self.value();
                        let ptr = self.entry_ma(k, i);
                        let mut req = [0u8; 16];
                        req[..8].copy_from_slice(&ptr.to_le_bytes());
                        req[8..].copy_from_slice(&v.to_le_bytes());
                        self.buf_write(region + q * 16, &req)?;
                        touched[j * 2 + q] = Some(k);
                    }
                    let _ = write!(self.op, "]");
                    MulticallEntry {
                        op: nr::MMU_UPDATE as u32,
                        result: 0x5A5A,
                        args: [
                            buf_va + region as u32,
                            cnt as u32,
                            buf_va + done_off as u32,
                            DOMID_SELF as u32,
                            0,
                            0,
                        ],
                    }
                }
                4..=5 => {
                    let _ = write!(self.op, " [");
                    let cmd = if self.rng.chance(60) {
                        self.pin_cmd()
                    } else {
                        let _ = write!(self.op, "unpin");
                        mmuext::UNPIN_TABLE
                    };
                    let (m, k) = self.ext_target();
                    let _ = write!(self.op, "]");
                    let mut op = [0u8; 12];
                    op[..4].copy_from_slice(&cmd.to_le_bytes());
                    op[4..8].copy_from_slice(&m.number().to_le_bytes());
                    self.buf_write(region, &op)?;
                    touched[j * 2] = k;
                    MulticallEntry {
                        op: nr::MMUEXT_OP as u32,
                        result: 0x5A5A,
                        args: [
                            buf_va + region as u32,
                            1,
                            buf_va + done_off as u32,
                            DOMID_SELF as u32,
                            0,
                            0,
                        ],
                    }
                }
                6..=8 => {
                    let _ = write!(self.op, " [uvm");
                    let (va, v, k) = self.uvm_target();
                    hashes_uvm[j] = Some((va, k));
                    // Not issued when it could change a kernel table's entry: an unknown
                    // hypercall takes its place.
                    // (An mmu_update entry before it may relink what the walk reaches.)
                    let safe = k.is_some() || (!mmu_before && self.uvm_reaches_sandbox_only(va));
                    let (op, args) = if safe {
                        let _ = write!(self.op, "]");
                        (
                            nr::UPDATE_VA_MAPPING as u32,
                            [va.as_u32(), v as u32, (v >> 32) as u32, UVMF_INVLPG, 0, 0],
                        )
                    } else {
                        let _ = write!(self.op, " -> op=63]");
                        (63, [0; 6])
                    };
                    MulticallEntry {
                        op,
                        result: 0x5A5A,
                        args,
                    }
                }
                _ => {
                    let _ = write!(self.op, " [op=63]");
                    MulticallEntry {
                        op: 63,
                        result: 0x5A5A,
                        args: [0; 6],
                    }
                }
            };
        }
        let r = self.env.multicall(&mut calls[..n]);
        self.ret(r);
        for (j, c) in calls.iter().enumerate().take(n) {
            self.ret(c.result as i32);
            if kinds[j] <= 5 {
                let d = self.buf_u32(j * 512 + 480)?;
                self.done(d);
            }
        }
        for k in touched.into_iter().flatten() {
            self.hash_frame(k)?;
        }
        for (va, k) in hashes_uvm.into_iter().flatten() {
            self.hash_uvm(va, k)?;
        }
        Ok(())
    }

    /// Undoes everything: the kernel's entries as booted, every sandbox frame unpinned,
    /// emptied, writable, zeroed and freed; a frame Xen will not make writable again
    /// (EBUSY: it still holds a type reference on it) stays out of the allocator, counted
    /// in [`Summary::held`].
    fn cleanup(&mut self) -> Result<(), Verdict> {
        let l2m = self.sb.live_l2_m.start().as_u64();
        let l3m = self.sb.live_l3.start().as_u64();
        b(
            "cleanup: the scratch slot of the live L2 emptied",
            self.env.mmu1(l2m + self.sb.scratch_slot as u64 * 8, 0),
        )?;
        b(
            "cleanup: the live L3's slot 0 as booted",
            self.env.mmu1(l3m, self.sb.l3_slot0 & !(RW | US | A | D)),
        )?;
        b(
            "cleanup: TLB_FLUSH_LOCAL",
            self.env.ext1(mmuext::TLB_FLUSH_LOCAL, 0),
        )?;
        for _ in 0..2 {
            for k in 0..SANDBOX {
                let _ = self.env.ext1(mmuext::UNPIN_TABLE, self.sb.mfns[k].number());
            }
            for k in 0..SANDBOX {
                for i in 0..512 {
                    if self.env.entry(self.sb.frames[k], i)? != 0 {
                        let _ = self.env.mmu1(self.entry_ma(k, i), 0);
                    }
                }
            }
        }
        for k in 0..SANDBOX {
            if !self.env.give_back_unless_held(self.sb.frames[k])? {
                self.summary.held += 1;
            }
        }
        self.env.give_back(self.sb.buf)
    }
}
