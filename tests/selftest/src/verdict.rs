//! What a case expected and what it got: the verdict types of the misuse cases here and of
//! the Xen conformance cases.

use core::fmt::{self, Write};

/// A short text kept inline (no heap): the `Display` of an error, truncated to 96 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text {
    buf: [u8; 96],
    len: u8,
}

impl Text {
    /// The text of `args`, truncated (on a character boundary) to what fits.
    pub fn new(args: fmt::Arguments<'_>) -> Text {
        let mut t = Text {
            buf: [0; 96],
            len: 0,
        };
        let _ = t.write_fmt(args);
        t
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut b = [0u8; 4];
            let enc = c.encode_utf8(&mut b).as_bytes();
            let at = self.len as usize;
            if at + enc.len() > self.buf.len() {
                return Ok(());
            }
            self.buf[at..at + enc.len()].copy_from_slice(enc);
            self.len += enc.len() as u8;
        }
        Ok(())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What a bad operation led to (or is expected to lead to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused by pvops's own checks with this typed error (`IoremapError::ZeroSize`).
    Pvops(&'static str),
    /// Refused by the hypervisor with this errno (`EINVAL`).
    Xen(&'static str),
    /// A backend error reached through pvops (its `Display`), e.g. a Xen refusal of an
    /// update pvops issued.
    Backend(Text),
    /// The operation was carried out.
    Accepted,
    /// Not run: its precondition cannot exist on this machine (why).
    Skipped(&'static str),
    /// A setup, control or cleanup step misbehaved: the case proves nothing and the machine
    /// may not be in a known state.
    Broken {
        /// The step.
        step: &'static str,
        /// What it returned.
        error: Text,
    },
}

impl Verdict {
    /// A [`Verdict::Broken`] for `step`.
    pub fn broken(step: &'static str, error: fmt::Arguments<'_>) -> Verdict {
        Verdict::Broken {
            step,
            error: Text::new(error),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pvops(e) => write!(f, "pvops {e}"),
            Verdict::Xen(e) => write!(f, "xen {e}"),
            Verdict::Backend(t) => write!(f, "backend error ({t})"),
            Verdict::Accepted => f.write_str("accepted (no error)"),
            Verdict::Skipped(why) => write!(f, "skipped ({why})"),
            Verdict::Broken { step, error } => write!(f, "step `{step}` failed: {error}"),
        }
    }
}

/// How a case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Refused with the expected error.
    Rejected,
    /// Carried out, as expected in this mode (e.g. a privileged domain may do it).
    Allowed,
    /// Not run (see [`Verdict::Skipped`]).
    Skipped,
    /// Not refused, refused with another error, or broken: the run fails.
    Failed,
}

/// One case's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// What was expected.
    pub expected: Verdict,
    /// What happened.
    pub got: Verdict,
}

impl CaseResult {
    /// How the case ended.
    pub fn status(&self) -> Status {
        match (self.expected, self.got) {
            (_, Verdict::Skipped(_)) => Status::Skipped,
            (e, g) if e != g => Status::Failed,
            (Verdict::Accepted, _) => Status::Allowed,
            (Verdict::Pvops(_) | Verdict::Xen(_), _) => Status::Rejected,
            _ => Status::Failed,
        }
    }
}

impl fmt::Display for CaseResult {
    /// `rejected <case>: <got>`, `allowed <case>: ...`, `skipped <case>: <why>` or, for a
    /// failed case, `<case>: expected <x>, got <y>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name;
        match (self.status(), self.got) {
            (Status::Rejected, got) => write!(f, "rejected {name}: {got}"),
            (Status::Allowed, _) => write!(f, "allowed {name}: accepted, as expected in this mode"),
            (Status::Skipped, Verdict::Skipped(why)) => write!(f, "skipped {name}: {why}"),
            _ => write!(f, "{name}: expected {}, got {}", self.expected, self.got),
        }
    }
}

/// Counts of a run of cases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Refused as expected.
    pub rejected: u32,
    /// Carried out as expected.
    pub allowed: u32,
    /// Not run.
    pub skipped: u32,
    /// Failed (a run stops at the first).
    pub failed: u32,
    /// Raw hypercalls the backend's cases issued (not in the backend's own counters).
    pub raw_hypercalls: u64,
}

impl Tally {
    /// Counts one result.
    pub fn count(&mut self, r: &CaseResult) {
        match r.status() {
            Status::Rejected => self.rejected += 1,
            Status::Allowed => self.allowed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Failed => self.failed += 1,
        }
    }
    /// Cases that ran (a skipped case is reported, not counted).
    pub fn cases(&self) -> u32 {
        self.rejected + self.allowed + self.failed
    }
    /// Adds another run's counts.
    pub fn merge(&mut self, o: &Tally) {
        self.rejected += o.rejected;
        self.allowed += o.allowed;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.raw_hypercalls += o.raw_hypercalls;
    }
}
