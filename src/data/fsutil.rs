//! Small helpers shared by the dataset readers: reading files with messages that name the file
//! and say how to fix the problem, text lists, and seed mixing.
use crate::device::{splitmix64, GOLDEN_GAMMA};
use crate::error::{Error, Result};
use std::path::Path;

/// Reads a whole file. A missing file becomes "`what` not found: `path` is missing; `hint`".
pub(crate) fn read_all(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_error(path, what, hint, e))
}

/// The size of a file in bytes, with the same messages as [`read_all`].
pub(crate) fn file_len(path: &Path, what: &str, hint: &str) -> Result<u64> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| io_error(path, what, hint, e))
}

/// Turns an i/o error on `path` into a [`Error::Data`] that names the file.
pub(crate) fn io_error(path: &Path, what: &str, hint: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Data(format!("{what} not found: {} is missing; {hint}", path.display()))
    } else {
        Error::Data(format!("could not read {what} from {}: {e}", path.display()))
    }
}

/// Non-empty, trimmed lines of a text file (class-name lists).
pub(crate) fn read_lines(path: &Path, what: &str, hint: &str) -> Result<Vec<String>> {
    let bytes = read_all(path, what, hint)?;
    Ok(String::from_utf8_lossy(&bytes).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// `path` as UTF-8 (libtorch's `from_file` takes a string).
pub(crate) fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::Data(format!(
            "the path {} is not valid UTF-8; move the data to a folder with a plain name",
            path.display()
        ))
    })
}

/// Mixes two numbers into one well-spread seed (SplitMix64), so that seed `s` for epoch 1 and
/// seed `s + 1` for epoch 0 do not give related streams.
pub(crate) fn mix_seed(seed: u64, salt: u64) -> u64 {
    let z = seed ^ salt.wrapping_mul(GOLDEN_GAMMA).rotate_left(17);
    splitmix64(z.wrapping_add(GOLDEN_GAMMA))
}

/// Thousands separators for byte counts in messages: 2764800000 → "2,764,800,000".
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(27648), "27,648");
        assert_eq!(super::thousands(2_764_800_000), "2,764,800,000");
    }

    #[test]
    fn mixed_seeds_differ() {
        assert_ne!(super::mix_seed(0, 1), super::mix_seed(1, 0));
        assert_eq!(super::mix_seed(7, 3), super::mix_seed(7, 3));
    }
}
