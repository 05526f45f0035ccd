//! A scratch directory for one run, removed when dropped unless kept.
//!
//! Not the `tempfile` crate on purpose: it is the only dependency the benchmark would add to
//! the gateway's graph, and its `rustix` turns on `bitflags/std`, which changes the features
//! of ten crates the gateway shares, so `cargo build --release -p kuper-bridge -p
//! kuper-bridge-bench` and then `cargo run --release -p kuper-bridge` would build them twice
//! (`crates/cli/tests/features.rs` guards this).

use std::path::{Path, PathBuf};

pub struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    /// `parent/PREFIX<pid>-<n>`, created new (never an existing directory).
    pub fn new_in(parent: &Path, prefix: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        for attempt in 0..1000u32 {
            let path = parent.join(format!("{prefix}{}-{}", std::process::id(), nanos.wrapping_add(attempt)));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path: Some(path) }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free scratch directory name"))
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Leaves the directory in place and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop_unless_kept() {
        let parent = std::env::temp_dir();
        let a = ScratchDir::new_in(&parent, "kb-scratch-test-").unwrap();
        let b = ScratchDir::new_in(&parent, "kb-scratch-test-").unwrap();
        assert_ne!(a.path(), b.path());
        let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
        assert!(pa.is_dir() && pb.is_dir());
        drop(a);
        assert!(!pa.exists());
        let kept = b.keep();
        assert_eq!(kept, pb);
        assert!(kept.is_dir());
        std::fs::remove_dir_all(kept).unwrap();
    }
}
