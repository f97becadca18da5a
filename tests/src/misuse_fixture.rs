//! The misuse fixture: what real boots of guest-demo printed for each misuse case
//! (`tests/fixtures/misuse-real.txt`, recorded by `cargo xtask test` and refreshed by
//! `cargo xtask misuse-fixture`). The host tests compare the Xen model and the simulated
//! machine with it instead of with a table written by hand.

/// One recorded line: the run (`native`, `xen-dom0`, `xen-domU`, `xen-pvh`) and the text
/// after `PVOPS-MISUSE: ` (`rejected pin_pinned: xen EINVAL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The run.
    pub run: String,
    /// The guest's line.
    pub text: String,
}

impl Recorded {
    /// The case's name: the word after the status (`rejected <case>: ...`).
    pub fn case(&self) -> &str {
        case_of(&self.text)
    }
}

/// The case name of a misuse line (`rejected pin_pinned: xen EINVAL` -> `pin_pinned`; a
/// failed case's line starts with its name).
pub fn case_of(text: &str) -> &str {
    let rest = match text.split_once(' ') {
        Some(("rejected" | "allowed" | "skipped", rest)) => rest,
        _ => text,
    };
    rest.split(':').next().unwrap_or(rest)
}

/// The fixture's path.
pub fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/misuse-real.txt")
}

/// The fixture's lines, in order.
pub fn load() -> Vec<Recorded> {
    let p = path();
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask misuse-fixture`)", p.display()));
    parse(&text)
}

/// Parses the fixture's text (`#` comments, `<run>: <line>`).
pub fn parse(text: &str) -> Vec<Recorded> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (run, text) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("malformed fixture line `{l}`"));
            Recorded {
                run: run.to_string(),
                text: text.to_string(),
            }
        })
        .collect()
}

/// The lines of one run, in order.
pub fn run<'a>(all: &'a [Recorded], name: &str) -> Vec<&'a Recorded> {
    all.iter().filter(|r| r.run == name).collect()
}
