//! A newc cpio writer: an in-memory file tree written as one archive (the dom0 initramfs and the
//! per-run job archive).

use std::collections::BTreeMap;

pub(super) const S_IFDIR: u32 = 0o040_000;
pub(super) const S_IFREG: u32 = 0o100_000;
pub(super) const S_IFLNK: u32 = 0o120_000;
pub(super) const S_IFCHR: u32 = 0o020_000;

pub(super) struct CpioEntry {
    pub(super) mode: u32,
    pub(super) data: Vec<u8>,
    pub(super) rdev: (u32, u32),
}

/// An in-memory file tree written as one newc archive; parents are added automatically and,
/// as paths are kept sorted, always come before their children.
#[derive(Default)]
pub(super) struct CpioTree {
    pub(super) entries: BTreeMap<String, CpioEntry>,
}

impl CpioTree {
    pub(super) fn add(&mut self, path: &str, mode: u32, data: Vec<u8>, rdev: (u32, u32)) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !self.entries.contains_key(parent) {
                self.dir(parent);
            }
        }
        self.entries
            .insert(path.to_string(), CpioEntry { mode, data, rdev });
    }
    pub(super) fn dir(&mut self, path: &str) {
        self.add(path, S_IFDIR | 0o755, Vec::new(), (0, 0));
    }
    pub(super) fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) {
        self.add(path, S_IFREG | perm, data, (0, 0));
    }
    pub(super) fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, S_IFLNK | 0o777, target.as_bytes().to_vec(), (0, 0));
    }
    pub(super) fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.add(path, S_IFCHR | perm, Vec::new(), (major, minor));
    }

    pub(super) fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in self.entries.iter().enumerate() {
            newc_entry(&mut out, ino as u32 + 1, name, e);
        }
        let trailer = CpioEntry {
            mode: 0,
            data: Vec::new(),
            rdev: (0, 0),
        };
        newc_entry(&mut out, 0, "TRAILER!!!", &trailer);
        out
    }
}

pub(super) fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, e: &CpioEntry) {
    let nlink = if e.mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let fields = [
        ino,
        e.mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        e.data.len() as u32,
        0, // dev major
        0, // dev minor
        e.rdev.0,
        e.rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(&e.data);
    pad4(out);
}

pub(super) fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_parents_first_and_aligned() {
        let mut t = CpioTree::default();
        t.file("a/b/c", b"xyz".to_vec(), 0o644);
        let data = t.to_newc();
        assert_eq!(data.len() % 4, 0);
        let text = String::from_utf8_lossy(&data);
        let (a, ab, abc) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("a/b/c\0").unwrap(),
        );
        assert!(a < ab && ab < abc);
        assert!(text.contains("TRAILER!!!"));
    }
}
