//! Writing files so that nothing already written is lost when a run fails, a cell is
//! interrupted, the process is killed or the machine loses power: one durable atomic write
//! ([`write_atomic`]: temporary file beside the target, fsync, rename over the target, fsync of
//! the folder), the sweep of the temporary files a killed process left ([`sweep_temp_files`]),
//! and the lock that keeps two trainers out of one run folder ([`RunLock`]).
//!
//! Every file the kit writes goes through [`write_atomic`] (checkpoints, configs, histories,
//! figures, tables, snapshots), so there is one place where durability is decided.
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The marker in the names of temporary files: `.<name>.tmp<pid>`.
const TMP_MARKER: &str = ".tmp";

/// The temporary name of `path` for this process: `.<name>.tmp<pid>` in the same folder (a
/// rename within one folder is atomic on POSIX file systems).
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}{TMP_MARKER}{}", std::process::id()))
}

/// Flushes a folder's entry list to disk (makes a rename in it durable). Best effort: some file
/// systems (FUSE, network mounts) refuse to sync a folder, and the rename has happened already.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let _ = dir;
}

/// Writes a file through `write(tmp)` to a temporary name beside `path`, fsyncs it, renames it
/// over `path` and fsyncs the folder: a failure, a killed process or a power loss leaves either
/// the previous file or the new one at `path`, never a mix, and the temporary file is removed
/// on error (one a killed process left is removed by [`sweep_temp_files`] at the next start).
///
/// Test hook: when the environment variable `SELFSUP_TEST_WRITE_PAUSE_MS` is set, the write
/// waits that many milliseconds between writing the temporary file and renaming it, so that the
/// fault tests can kill the process in the middle of a write. It is read only here and has no
/// other effect.
///
/// # Errors
/// The error of `write`, or [`Error::Io`] from the sync or the rename (e.g. a full disk: the
/// previous file at `path` is then intact).
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temp_name(path);
    let result = (|| -> Result<()> {
        write(&tmp)?;
        std::fs::OpenOptions::new().write(true).open(&tmp)?.sync_all()?;
        if let Some(ms) = std::env::var("SELFSUP_TEST_WRITE_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    let Err(e) = result else { return Ok(()) };
    // Some writers (safetensors) report a full disk in their own error type: ask the disk,
    // before the temporary file's space is given back.
    let full = matches!(&e, Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)) || nearly_full(dir);
    let _ = std::fs::remove_file(&tmp);
    Err(match e {
        Error::Io(io) if !full => write_error(path, io),
        other if full => write_error(path, std::io::Error::from_raw_os_error(libc::ENOSPC)).with_cause(&other),
        other => other,
    })
}

/// Whether the file system of `dir` has less than 1 MiB left for this user.
fn nearly_full(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
        // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 {
            return (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 1 << 20;
        }
    }
    let _ = dir;
    false
}

impl Error {
    /// This error with `cause`'s message appended (an i/o error's kind is kept).
    fn with_cause(self, cause: &Error) -> Error {
        match self {
            Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), format!("{io} (the writer said: {cause})"))),
            other => other,
        }
    }
}

/// An i/o error while writing `path`, naming the file and, for a full disk, what to do.
pub(crate) fn write_error(path: &Path, e: std::io::Error) -> Error {
    let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
        " — the disk is full: free some space (or write the run elsewhere), then run again; the previous \
         checkpoint is intact"
    } else {
        ""
    };
    Error::Io(std::io::Error::new(e.kind(), format!("writing {}: {e}{hint}", path.display())))
}

/// Writes `bytes` to `path` atomically and durably ([`write_atomic`]), creating parent folders.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        Ok(())
    })
}

/// A result computed once and kept: `path` holds `{"key": …, "value": …}` as JSON. When the
/// file's key equals `key`, its value is returned and `compute` is not called; otherwise (no
/// file, another key, a file this version cannot read) `compute` runs and its result is written
/// ([`write_atomic`]) for the next call. Returns the value and whether it was loaded.
///
/// Why: after `./kit prepare` a notebook's Run All should not redo an analysis whose inputs have
/// not changed (the flatness of seven trained models takes a third of notebook 03's minute). The
/// key must hold everything the result depends on (fingerprints of the weights and of the images,
/// the settings, a version of the code), so a kept value is the one `compute` would return now.
/// A value that does not survive the round trip through JSON (a NaN becomes `null`) is returned
/// but not kept, so a later call computes it again instead of failing.
///
/// # Errors
/// The error of `compute`, or [`Error::Io`] when the file cannot be written.
///
pub(crate) fn remembered<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: impl AsRef<Path>,
    key: &serde_json::Value,
    compute: impl FnOnce() -> Result<T>,
) -> Result<(T, bool)> {
    let path = path.as_ref();
    #[derive(serde::Deserialize)]
    struct Kept<T> {
        key: serde_json::Value,
        value: T,
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(kept) = serde_json::from_str::<Kept<T>>(&text) {
            if &kept.key == key {
                return Ok((kept.value, true));
            }
        }
    }
    let value = compute()?;
    let text = serde_json::to_string(&serde_json::json!({ "key": key, "value": serde_json::to_value(&value)? }))?;
    if serde_json::from_str::<Kept<T>>(&text).is_ok_and(|kept| &kept.key == key) {
        write_file(path, text.as_bytes())?;
    }
    Ok((value, false))
}

/// Removes the temporary files (`.<name>.tmp<pid>`) that processes other than this one left in
/// `dir` — a process killed during [`write_atomic`] leaves one. Call it while holding the
/// folder's [`RunLock`], so no other process is writing there. Returns the removed paths.
///
/// # Errors
/// [`Error::Io`] when the folder cannot be listed.
pub fn sweep_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = vec![];
    if !dir.is_dir() {
        return Ok(removed);
    }
    let own = format!("{TMP_MARKER}{}", std::process::id());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pos) = name.rfind(TMP_MARKER) else { continue };
        let pid = &name[pos + TMP_MARKER.len()..];
        let is_temp = name.starts_with('.') && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if is_temp && !name.ends_with(&own) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// File name of the lock inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run folder, held while a trainer works in it (and released when
/// dropped, or by the operating system when the process dies, even by `kill -9`). The lock
/// file holds the holder's PID, which the error of a second trainer names.
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `dir` (created if missing) without waiting. The trainer adds to the
    /// error how to watch the run that holds it (files know nothing of runs).
    ///
    /// # Errors
    /// [`Error::Locked`] naming the PID of the process that holds it; [`Error::Io`] when the
    /// folder or the lock file cannot be created.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                    return Err(Error::Locked(format!(
                        "{} is in use by {who} (a selfsup-train or another notebook training into it); two trainers \
                         in one folder would overwrite each other's checkpoints. Wait for it to finish (or stop it: \
                         kill {holder}), or use another out_dir.",
                        dir.display()
                    )));
                }
                return Err(err.into());
            }
        }
        use std::io::Seek;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        file.flush()?;
        Ok(RunLock { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty the PID before the lock goes (the OS releases the flock when the file closes).
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_computes_once_per_key_and_never_keeps_what_json_cannot_hold() {
        let dir = std::env::temp_dir().join(format!("selfsup-remembered-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sum.json");
        let calls = std::cell::Cell::new(0);
        let sum = |n: u32| {
            calls.set(calls.get() + 1);
            Ok::<u32, Error>((1..=n).sum())
        };
        let key3 = serde_json::json!({"n": 3, "version": 1});
        assert_eq!(remembered(&path, &key3, || sum(3)).unwrap(), (6, false));
        assert_eq!(remembered(&path, &key3, || sum(3)).unwrap(), (6, true));
        assert_eq!(calls.get(), 1, "the second call loads the kept value");
        // Another key (another input) computes again and replaces the kept value.
        let key4 = serde_json::json!({"n": 4, "version": 1});
        assert_eq!(remembered(&path, &key4, || sum(4)).unwrap(), (10, false));
        assert_eq!(remembered(&path, &key4, || sum(4)).unwrap(), (10, true));
        assert_eq!(calls.get(), 2);
        // A damaged file is a miss, not an error.
        std::fs::write(&path, b"{\"key\": {\"n\": 4, \"version\": 1}, \"value\": ").unwrap();
        assert_eq!(remembered(&path, &key4, || sum(4)).unwrap(), (10, false));
        // An error of `compute` is returned and leaves the kept file alone.
        let err = remembered(&path, &key3, || Err::<u32, Error>(Error::Data("no".into()))).unwrap_err();
        assert!(err.to_string().contains("no"), "{err}");
        assert_eq!(remembered(&path, &key4, || sum(4)).unwrap(), (10, true));
        // NaN does not survive JSON (it is written as null): returned, not kept.
        let nan_path = dir.join("nan.json");
        let (v, loaded) = remembered(&nan_path, &key3, || Ok(f64::NAN)).unwrap();
        assert!(v.is_nan() && !loaded);
        assert!(!nan_path.exists(), "a value JSON cannot hold must not be kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_sweep_removes_only_foreign_temp_files() {
        let dir = std::env::temp_dir().join(format!("selfsup-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let target = dir.join("a.json");
        write_file(&target, b"one").unwrap();
        write_file(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        // A failing writer leaves the previous content and no temporary file.
        let err = write_atomic(&target, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(Error::Data("boom".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        std::fs::write(dir.join(".checkpoint.safetensors.tmp999999"), b"stale").unwrap();
        std::fs::write(dir.join("notes.tmp1"), b"not ours: no leading dot").unwrap();
        let removed = sweep_temp_files(&dir).unwrap();
        assert_eq!(removed, vec![dir.join(".checkpoint.safetensors.tmp999999")]);
        assert!(dir.join("notes.tmp1").exists());
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("selfsup-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = RunLock::acquire(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts too.
        match RunLock::acquire(&dir) {
            Err(Error::Locked(msg)) => assert!(msg.contains(&std::process::id().to_string()), "{msg}"),
            other => panic!("expected Error::Locked, got {other:?}"),
        }
        drop(first);
        let again = RunLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
