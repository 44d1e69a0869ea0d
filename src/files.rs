//! Writing files so that nothing already written is lost when a run fails or a cell is
//! interrupted: write a temporary file beside the target, then rename it over the target
//! (a rename within one folder is atomic on POSIX file systems).
use crate::error::Result;
use std::path::Path;

/// Writes `bytes` to `path` atomically, creating parent folders.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
