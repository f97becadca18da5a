//! Running a guest entry and the generic boot path on a built domain.

use super::*;

/// Why a boot on the model failed.
#[derive(Debug)]
pub enum XenBootFailure {
    /// `start_info::validate` refused start_info.
    StartInfo(StartInfoError),
    /// `XenMmu::new` failed (its hypercall).
    Setup(XenError),
    /// The boot path failed.
    Boot(BootError<XenError>),
}

/// The Xen error inside a boot error, if its cause is one.
pub fn xen_error_of(kind: &BootErrorKind<XenError>) -> Option<XenError> {
    match kind {
        BootErrorKind::Backend(e)
        | BootErrorKind::Map(MapError::Backend(e))
        | BootErrorKind::Ioremap(IoremapError::Map(MapError::Backend(e))) => Some(*e),
        _ => None,
    }
}

impl XenBootFailure {
    /// The stage that failed ([`Stage::Entry`] before the boot path).
    pub fn stage(&self) -> Stage {
        match self {
            XenBootFailure::Boot(e) => e.stage,
            _ => Stage::Entry,
        }
    }
    /// The Xen error, if a hypercall failed.
    pub fn xen_error(&self) -> Option<XenError> {
        match self {
            XenBootFailure::StartInfo(_) => None,
            XenBootFailure::Setup(e) => Some(*e),
            XenBootFailure::Boot(e) => xen_error_of(&e.kind),
        }
    }
    /// The errno of the failed hypercall.
    pub fn errno(&self) -> Option<Errno> {
        match self.xen_error()? {
            XenError::Hypercall { errno, .. } => Some(errno),
            _ => None,
        }
    }
    /// The page fault, if the boot path faulted.
    pub fn fault(&self) -> Option<PageFault> {
        match self {
            XenBootFailure::Boot(BootError {
                kind: BootErrorKind::Fault(pf),
                ..
            }) => Some(*pf),
            _ => None,
        }
    }
}

impl fmt::Display for XenBootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenBootFailure::StartInfo(e) => write!(f, "stage=entry: {e}"),
            XenBootFailure::Setup(e) => write!(f, "stage=entry: XenMmu::new: {e}"),
            XenBootFailure::Boot(e) => write!(f, "{e}"),
        }
    }
}

/// A boot-log writer that notes the hypercall counters at every `stage <name> ok` line.
struct StageLog {
    text: String,
    scanned: usize,
    counters: Rc<Cell<HvCounters>>,
    marks: Vec<(String, HvCounters)>,
}

impl fmt::Write for StageLog {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text.push_str(s);
        while let Some(nl) = self.text[self.scanned..].find('\n') {
            let line = &self.text[self.scanned..self.scanned + nl];
            if let Some((name, _)) = line
                .strip_prefix("stage ")
                .and_then(|r| r.split_once(" ok"))
            {
                self.marks.push((name.to_string(), self.counters.get()));
            }
            self.scanned += nl + 1;
        }
        Ok(())
    }
}

/// One boot of the generic boot path on a built domain.
pub struct XenBootRun {
    /// What the boot returned.
    pub result: Result<BootReport<XenCounters>, XenBootFailure>,
    /// The boot path's log.
    pub log: String,
    /// The backend with the model inside (`None` if `XenMmu::new` failed).
    pub mmu: Option<XenMmu<XenModel>>,
    /// The boot path's state (its allocator).
    pub state: Box<BootState>,
    /// The builder's layout.
    pub layout: BuilderLayout,
    /// The bootstrap table frames as start_info::validate derived them.
    pub bootstrap_tables: FrameRange,
    /// First free frame as start_info::validate derived it.
    pub first_free: PhysFrame,
    /// Counters when the boot path started (after `XenMmu::new`).
    pub before_boot: HvCounters,
    /// Counters at the end of every stage that passed, in order.
    pub stages: Vec<(String, HvCounters)>,
}

impl XenBootRun {
    /// The model.
    pub fn model(&mut self) -> &mut XenModel {
        self.mmu
            .as_mut()
            .expect("XenMmu::new failed: no model")
            .model()
    }
    /// Hypercalls made during stage `name` (`None` if it did not pass).
    pub fn stage_counters(&self, name: &str) -> Option<HvCounters> {
        let i = self.stages.iter().position(|(n, _)| n == name)?;
        let prev = if i == 0 {
            self.before_boot
        } else {
            self.stages[i - 1].1
        };
        Some(self.stages[i].1.since(&prev))
    }
    /// Everything the backend logged plus the boot log, for failure messages.
    pub fn full_log(&mut self) -> String {
        let mut s = self.log.clone();
        if let Some(mmu) = self.mmu.as_mut() {
            s.push_str("--- backend/model log ---\n");
            for l in mmu.hypervisor().log_lines() {
                s.push_str(l);
                s.push('\n');
            }
            for f in mmu.hypervisor().failures() {
                s.push_str(&format!(
                    "model: hypercall #{} {:?}[{}] -> {}: {}\n",
                    f.seq, f.kind, f.index, f.errno, f.reason
                ));
            }
        }
        s
    }
    /// The report; panics with the error and the logs otherwise.
    #[track_caller]
    pub fn expect_pass(&mut self) -> BootReport<XenCounters> {
        match &self.result {
            Ok(r) => *r,
            Err(e) => {
                let msg = format!("boot failed: {e}");
                panic!("{msg}\n{}", self.full_log())
            }
        }
    }
    /// The failure; panics with the report and the logs if the boot passed.
    #[track_caller]
    pub fn expect_fail(&mut self) -> &XenBootFailure {
        if let Ok(r) = &self.result {
            let msg = format!("boot passed but should have failed: {r:?}");
            panic!("{msg}\n{}", self.full_log());
        }
        self.result.as_ref().expect_err("failed")
    }
}

/// What a model boot runs with: the core's options and the Xen backend's.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// The core's (`pvops.early_ioremap`).
    pub boot: BootOptions,
    /// The backend's (`pvops.batch`, `pvops.skip_unpin`), given to `XenMmu::new`.
    pub xen: XenOptions,
}

impl From<BootOptions> for ModelOptions {
    fn from(boot: BootOptions) -> Self {
        ModelOptions {
            boot,
            ..Default::default()
        }
    }
}

impl From<XenOptions> for ModelOptions {
    fn from(xen: XenOptions) -> Self {
        ModelOptions {
            xen,
            ..Default::default()
        }
    }
}

/// Runs a guest entry on `dom` (start_info::validate, `XenMmu::new`, `boot_info`), the
/// generic boot path and the exercise with `opts`.
pub fn boot_domain(dom: XenDomain, opts: impl Into<ModelOptions>) -> XenBootRun {
    let ModelOptions { boot: opts, xen } = opts.into();
    let facts = dom.facts();
    let XenDomain {
        model,
        image,
        table_pool,
        layout,
        ..
    } = dom;
    let counters = model.counters_handle();
    let mut run = XenBootRun {
        result: Ok(BootReport::default()),
        log: String::new(),
        mmu: None,
        state: Box::new(BootState::new()),
        layout,
        bootstrap_tables: FrameRange::EMPTY,
        first_free: PhysFrame::new(0),
        before_boot: HvCounters::default(),
        stages: Vec::new(),
    };
    let facts = match facts {
        Ok(f) => f,
        Err(e) => {
            run.result = Err(XenBootFailure::StartInfo(e));
            return run;
        }
    };
    run.bootstrap_tables = facts.bootstrap_tables;
    run.first_free = facts.first_free;
    let mut mmu = match XenMmu::new(model, &facts, &xen) {
        Ok(m) => m,
        Err(e) => {
            run.result = Err(XenBootFailure::Setup(e));
            return run;
        }
    };
    let info = backend_xen::boot_info(&mmu, &facts, image, table_pool);
    run.before_boot = counters.get();
    let mut log = StageLog {
        text: String::new(),
        scanned: 0,
        counters,
        marks: Vec::new(),
    };
    let result = crate::boot_and_exercise(&mut mmu, &info, opts, &mut run.state, &mut log);
    run.result = result.map_err(XenBootFailure::Boot);
    run.log = log.text;
    run.stages = log.marks;
    run.mmu = Some(mmu);
    run
}

/// Builds a `mib` MiB domU with the default layout and boots it with `opts`.
pub fn boot_mib(mib: u32, opts: impl Into<ModelOptions>) -> XenBootRun {
    boot_domain(DomainConfig::new(mib).build(), opts)
}

/// Mutable access to the model inside a `XenMmu`, for tests that inspect it, audit it or
/// inject faults into it.
pub trait ModelAccess {
    /// The model.
    fn model(&mut self) -> &mut XenModel;
}

impl ModelAccess for XenMmu<XenModel> {
    fn model(&mut self) -> &mut XenModel {
        // SAFETY: the model lives in host memory; what a test does through it can only
        // confuse the backend's bookkeeping, which is what such tests examine.
        unsafe { self.hypervisor_mut() }
    }
}

impl XenBootRun {
    /// The Xen conformance environment over this booted guest: the model as the raw
    /// hypercall layer, the boot path's allocator and the live L3.
    pub fn conformance_env(&mut self) -> pvops_xen_conformance::Env<'_, XenModel> {
        let mmu = self.mmu.as_mut().expect("booted");
        let cr3 = pvops_core::MmuOps::read_cr3(mmu);
        let hv = mmu.model();
        // SAFETY: the boot is over: nothing else uses the model or the allocator while the
        // environment lives; `cr3` is the live L3; allocated frames are in the direct map.
        unsafe { pvops_xen_conformance::Env::new(hv, &mut self.state.alloc, cr3) }
            .expect("XENMEM_machphys_mapping on the model")
    }
}
