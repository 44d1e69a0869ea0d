//! Tests that need something outside the crate (headless Chromium, the venv's torch and
//! torchvision, `mount`, a CUDA GPU) say so instead of failing or passing silently.
//!
//! Under a plain `cargo test` a missing tool skips the test with a line on the terminal (written
//! to the stderr handle, which the test harness does not capture). `./kit test` sets
//! `SELFSUP_REQUIRE_TOOLS=1`: there a missing tool fails the test, so the README's test command
//! runs every one of them.
#![allow(dead_code)]
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

/// Runs the tests that hold it one at a time. The harness runs a binary's tests on several
/// threads, and two things in libtorch are shared by the whole process:
/// - its random generator: a test that seeds it and then depends on what is drawn (an init, a
///   permutation, two runs compared) would see another test's draws land in between;
/// - its CPU kernels (BLAS, oneDNN) split their reductions by the threads they get, so other
///   tests' work at the same time changes the last bits of a training run's results.
///
/// In a binary where one test depends on the draws, every test that draws holds it.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `true` when the test can run; otherwise prints why it is skipped (or panics under `./kit test`).
pub fn tool_present(test: &str, present: bool, missing: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("SELFSUP_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{test}: {missing}; ./kit test requires it (SELFSUP_REQUIRE_TOOLS=1)");
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: {missing} (./kit test installs and runs it)");
    false
}

/// Says on the terminal that `test` is skipped and why, for a condition that even `./kit test`
/// may lack (root for `mount`); the caller returns right after.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}

/// Whether `python3` on PATH imports every module in `modules` (the kit's venv has torch and torchvision).
pub fn python_imports(modules: &[&str]) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .is_ok_and(|o| o.status.success())
}
