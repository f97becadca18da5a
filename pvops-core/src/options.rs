//! The `pvops.*` switches of the guest command line.

use core::fmt;

/// Which table early_ioremap walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoremapWalk {
    /// The live table found through `read_cr3` (correct; default).
    Cr3,
    /// The kernel's static table (`pvops.early_ioremap=swapper`: the 2.6.25-rc1 bug).
    Swapper,
}

/// Options parsed from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// `pvops.early_ioremap=cr3|swapper`.
    pub early_ioremap: IoremapWalk,
    /// `pvops.skip_unpin`: keep Xen's bootstrap table pinned after the switch (the bug fixed
    /// by Linux 2b5407811db7). Ignored by backends without pinning.
    pub skip_unpin: bool,
    /// `pvops.batch=N`: most page-table updates per lazy-mode flush (1 = every update its own
    /// hypercall). 0 means the backend's default.
    pub batch: u32,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            early_ioremap: IoremapWalk::Cr3,
            skip_unpin: false,
            batch: 0,
        }
    }
}

/// A `pvops.*` word that could not be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionError<'a> {
    /// The offending word.
    pub word: &'a str,
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad command-line option `{}`", self.word)
    }
}

impl BootOptions {
    /// Parses the `pvops.*` words of `cmdline`; other words are left to the kernel.
    pub fn parse(cmdline: &str) -> Result<BootOptions, OptionError<'_>> {
        let mut o = BootOptions::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some(opt) = word.strip_prefix("pvops.") else {
                continue;
            };
            let (key, value) = opt
                .split_once('=')
                .map_or((opt, None), |(k, v)| (k, Some(v)));
            match (key, value) {
                ("early_ioremap", Some("cr3")) => o.early_ioremap = IoremapWalk::Cr3,
                ("early_ioremap", Some("swapper")) => o.early_ioremap = IoremapWalk::Swapper,
                ("skip_unpin", None | Some("1")) => o.skip_unpin = true,
                ("skip_unpin", Some("0")) => o.skip_unpin = false,
                ("batch", Some(v)) => o.batch = v.parse().map_err(|_| OptionError { word })?,
                _ => return Err(OptionError { word }),
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse() {
        let o = BootOptions::parse(
            "/guest.elf console=x pvops.early_ioremap=swapper pvops.skip_unpin pvops.batch=1",
        )
        .unwrap();
        assert_eq!(
            o,
            BootOptions {
                early_ioremap: IoremapWalk::Swapper,
                skip_unpin: true,
                batch: 1
            }
        );
        assert_eq!(
            BootOptions::parse("pvops.bogus").unwrap_err().word,
            "pvops.bogus"
        );
        assert!(BootOptions::parse("pvops.batch=x").is_err());
        assert_eq!(BootOptions::parse("").unwrap(), BootOptions::default());
    }
}
