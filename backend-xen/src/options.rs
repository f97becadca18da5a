//! The Xen backend's own options: `pvops.batch=N` and, with the `bug-skip-unpin` feature,
//! `pvops.skip_unpin`. A kernel passes them typed to [`crate::XenMmu::new`] or as
//! command-line switches through [`pvops_core::MmuOps::set_option`] (which
//! `pvops_core::options::BootOptions::parse` calls); the backend never reads the command
//! line itself.

use pvops_core::options::OptionErrorKind;

/// How the Xen backend batches page-table updates and (to re-create a 2008 bug) whether it
/// leaves Xen's bootstrap table pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenOptions {
    /// Most page-table updates per `mmu_update` in lazy mode; 1 also writes tables that
    /// are not live yet through hypercalls (the naive baseline); 0 means the default
    /// ([`crate::mmu::QUEUE_CAPACITY`]).
    pub batch: u32,
    /// Keep `start_info.pt_base` pinned after the switch: the bug Linux 2b5407811db7
    /// fixed. Exists only with the `bug-skip-unpin` feature.
    #[cfg(feature = "bug-skip-unpin")]
    pub skip_unpin: bool,
}

impl XenOptions {
    /// The defaults (`XenOptions::default()`), as a constant.
    pub const DEFAULT: XenOptions = XenOptions {
        batch: 0,
        #[cfg(feature = "bug-skip-unpin")]
        skip_unpin: false,
    };

    /// Whether the bootstrap table stays pinned (always false without `bug-skip-unpin`).
    pub fn skip_unpin(&self) -> bool {
        #[cfg(feature = "bug-skip-unpin")]
        return self.skip_unpin;
        #[cfg(not(feature = "bug-skip-unpin"))]
        return false;
    }

    /// Applies the switch `pvops.<key>[=<value>]`.
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), OptionErrorKind> {
        match (key, value) {
            ("batch", Some(v)) => {
                self.batch = v.parse().map_err(|_| OptionErrorKind::BadValue)?;
            }
            ("batch", None) => return Err(OptionErrorKind::BadValue),
            #[cfg(feature = "bug-skip-unpin")]
            ("skip_unpin", None | Some("1")) => self.skip_unpin = true,
            #[cfg(feature = "bug-skip-unpin")]
            ("skip_unpin", Some("0")) => self.skip_unpin = false,
            #[cfg(feature = "bug-skip-unpin")]
            ("skip_unpin", Some(_)) => return Err(OptionErrorKind::BadValue),
            #[cfg(not(feature = "bug-skip-unpin"))]
            ("skip_unpin", _) => return Err(OptionErrorKind::NotBuiltIn),
            _ => return Err(OptionErrorKind::Unknown),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch() {
        let mut o = XenOptions::default();
        o.apply("batch", Some("32")).unwrap();
        assert_eq!(o.batch, 32);
        assert_eq!(o.apply("batch", Some("x")), Err(OptionErrorKind::BadValue));
        assert_eq!(o.apply("batch", None), Err(OptionErrorKind::BadValue));
        assert_eq!(o.apply("bogus", None), Err(OptionErrorKind::Unknown));
    }

    #[cfg(feature = "bug-skip-unpin")]
    #[test]
    fn skip_unpin_with_its_feature() {
        let mut o = XenOptions::default();
        o.apply("skip_unpin", None).unwrap();
        assert!(o.skip_unpin());
        o.apply("skip_unpin", Some("0")).unwrap();
        assert!(!o.skip_unpin());
    }

    #[cfg(not(feature = "bug-skip-unpin"))]
    #[test]
    fn skip_unpin_is_refused_without_its_feature() {
        let mut o = XenOptions::default();
        assert_eq!(
            o.apply("skip_unpin", None),
            Err(OptionErrorKind::NotBuiltIn)
        );
        assert!(!o.skip_unpin());
    }
}
