//! A one-machine launcher: this program started again as `N` ranks, what
//! `torchrun --standalone --nproc-per-node N` does, for a one-command start (`selfsup-train
//! --nproc N`).
//!
//! Each child gets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR=127.0.0.1` and a free
//! `MASTER_PORT`, and joins through [`super::Dist::from_env`] (rank 0 hosts the store). The
//! launcher waits for all of them; when one fails, the others are stopped as torchrun stops them
//! (SIGTERM, then SIGKILL after a grace period), and the launcher fails naming the rank.
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{config_err, Error, Result};

/// How long the other ranks get to stop (a checkpoint, on SIGTERM) after one failed.
const GRACE: Duration = Duration::from_secs(30);

/// Runs `program args…` as `nproc` ranks on this machine and waits for them.
///
/// # Errors
/// [`Error::Config`] for `nproc == 0`; [`Error::Io`] when a rank cannot be started;
/// [`Error::Distributed`] naming the first rank that failed (and its exit status).
pub fn launch_local(nproc: usize, program: &Path, args: &[OsString]) -> Result<()> {
    if nproc == 0 {
        return Err(config_err!("--nproc must be at least 1, got 0"));
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut children: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let spawned = Command::new(program)
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .spawn();
        match spawned {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                stop_all(&mut children);
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("starting rank {rank} of {nproc} ({}): {e}", program.display()),
                )));
            }
        }
    }
    // The first failure, preferring a real one to a stop (exit status 130: Ctrl-C or SIGTERM,
    // which every rank received; the others are finishing their step, rank 0 its checkpoint,
    // and must not be cut short).
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut real_failure = false;
    while children.iter().any(Option::is_some) {
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            let Some(status) = child.try_wait()? else { continue };
            *slot = None;
            if status.success() {
                continue;
            }
            let real = status.code() != Some(130);
            if failed.is_none() || (real && !real_failure) {
                failed = Some((rank, status));
            }
            real_failure |= real;
        }
        if real_failure {
            stop_all(&mut children);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failed {
        None => Ok(()),
        Some((rank, status)) if status.code() == Some(130) => Err(Error::Interrupted(format!(
            "rank {rank} of {nproc} stopped ({status}); run the same command again to continue from the checkpoint"
        ))),
        Some((rank, status)) => Err(Error::Distributed(format!(
            "rank {rank} of {nproc} failed ({status}); the other ranks were stopped. Its error is printed above"
        ))),
    }
}

/// SIGTERM to every rank still running, SIGKILL to those still running after [`GRACE`].
fn stop_all(children: &mut [Option<Child>]) {
    for child in children.iter().flatten() {
        // SAFETY: kill(2) of a child this launcher started and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let start = Instant::now();
    while start.elapsed() < GRACE {
        for slot in children.iter_mut() {
            if slot.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                *slot = None;
            }
        }
        if children.iter().all(Option::is_none) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
