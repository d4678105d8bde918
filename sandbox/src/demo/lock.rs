//! One demo per working directory: a lock file holding the demo's process
//! id. A second demo started on the same directory is refused with a message
//! saying which process holds it and what to do. A lock left by a demo that
//! died without cleaning up (SIGKILL, a power cut) is noticed, because its
//! process is gone, and taken over.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The lock file's name in the working directory.
pub const LOCK_FILE: &str = "demo.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another demo runs on this directory.
    #[error(
        "another sandbox demo is running (process {pid}, lock file {path}). Wait for it to \
         finish, or stop it with Ctrl-C in its terminal (or `kill {pid}`; it stops everything it \
         started), or run this one in another directory with --work-dir DIR"
    )]
    Held {
        /// The process holding it.
        pid: u32,
        /// The lock file.
        path: PathBuf,
    },
    /// The file could not be created or read.
    #[error("cannot take the demo's lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The lock, held until dropped (the file is removed then).
#[derive(Debug)]
pub struct DemoLock {
    path: PathBuf,
    pid: u32,
}

/// Whether process `pid` exists and is not a zombie: `/proc` where there is
/// one, else `kill -0`.
pub fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z"),
            Err(_) => false,
        };
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl DemoLock {
    /// Takes the lock of `dir` for this process.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        Self::acquire_as(dir, std::process::id())
    }

    fn acquire_as(dir: &Path, pid: u32) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Two rounds: the second after removing a stale lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    writeln!(file, "{pid}").map_err(io)?;
                    return Ok(Self { path, pid });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(text) => text,
                        // Removed between our two calls: try again.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io(e)),
                    };
                    match text.trim().parse::<u32>() {
                        Ok(holder) if holder != pid && process_alive(holder) => {
                            return Err(LockError::Held {
                                pid: holder,
                                path: path.clone(),
                            });
                        }
                        // Stale (its process is gone), unreadable, or ours.
                        _ => {
                            tracing::info!(path = %path.display(), content = %text.trim(),
                                "Removing a stale demo lock.");
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(io(e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other(
            "the lock file keeps reappearing; is another demo starting right now?",
        )))
    }
}

impl Drop for DemoLock {
    fn drop(&mut self) {
        // Only our own lock: never remove one another demo took over.
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_second_demo_is_refused_while_the_first_runs() {
        let dir = dir();
        let first = DemoLock::acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        // This test process is alive: a lock naming it is held.
        match DemoLock::acquire_as(dir.path(), std::process::id() + 1) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let again = DemoLock::acquire(dir.path());
        assert!(again.is_ok());
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let dir = dir();
        // No process has id u32::MAX - 1 (Linux caps ids far lower).
        let stale = u32::MAX - 1;
        std::fs::write(dir.path().join(LOCK_FILE), format!("{stale}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let lock = DemoLock::acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap_or_default();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
    }

    #[test]
    fn the_message_says_what_to_do() {
        let e = LockError::Held {
            pid: 42,
            path: PathBuf::from("/tmp/x/demo.lock"),
        };
        let text = e.to_string();
        for part in ["process 42", "Ctrl-C", "kill 42", "--work-dir"] {
            assert!(text.contains(part), "{text}");
        }
    }
}
