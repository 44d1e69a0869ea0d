//! What the command-line programs (`selfsup-train`, `selfsup-results`) share: reading
//! `--flag value` and `--flag=value` with errors that say what was expected, and a `main` that
//! prints the help, runs, and turns an error into a message and an exit code — never a panic.
use crate::error::{Error, Result};
use std::process::ExitCode;

/// `--flag=value` → `("--flag", Some("value"))`; anything else → `(arg, None)`.
///
/// ```
/// use selfsup::cli::split_flag;
/// assert_eq!(split_flag("--lr=0.03"), ("--lr".to_string(), Some("0.03".to_string())));
/// assert_eq!(split_flag("-b"), ("-b".to_string(), None));
/// ```
pub fn split_flag(arg: &str) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
        _ => (arg.to_string(), None),
    }
}

/// The value given to `flag`, read as `T`; `what` says what is expected ("a number > 0"), or
/// is empty.
///
/// # Errors
/// [`Error::Config`] for a missing value or one that does not parse, naming the flag.
pub fn value<T: std::str::FromStr>(flag: &str, value: Option<String>, what: &str) -> Result<T> {
    let expected = if what.is_empty() { String::new() } else { format!(": expected {what}") };
    let v = value.ok_or_else(|| Error::Config(format!("{flag} needs a value{expected} (see --help)")))?;
    v.parse().map_err(|_| Error::Config(format!("{flag}: cannot read '{v}'{expected} (see --help)")))
}

/// Runs a command-line program: `parse` reads the arguments (without the program name;
/// `Ok(None)` when help was asked for), `run` does the work. Exits 0 on success, 1 with the
/// error when `run` fails, 2 with the error and the help text for bad arguments.
pub fn main<A>(
    help: &str,
    parse: impl FnOnce(Vec<String>) -> Result<Option<A>>,
    run: impl FnOnce(A) -> Result<()>,
) -> ExitCode {
    match parse(std::env::args().skip(1).collect()) {
        Ok(None) => {
            println!("{help}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Error::Interrupted(msg)) => {
                eprintln!("selfsup: {msg}");
                ExitCode::from(130)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}\n\n{help}");
            ExitCode::from(2)
        }
    }
}

/// CPU seconds used by this process so far, all threads (`CLOCK_PROCESS_CPUTIME_ID`); NaN when
/// the clock is unavailable. The benchmarks report it next to wall time: on a shared machine the
/// wall time includes waiting for a core, the CPU time does not.
///
/// ```
/// let before = selfsup::cli::process_cpu_seconds();
/// let mut x = 0u64;
/// for i in 0..20_000_000u64 { x = x.wrapping_add(i * i); }
/// std::hint::black_box(x);
/// assert!(selfsup::cli::process_cpu_seconds() > before);
/// ```
pub fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc == 0 {
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

/// Ctrl-C and SIGTERM (a cluster scheduler's notice) in a training program: the first one asks
/// the running training to stop after its current step, write a checkpoint and return
/// [`Error::Interrupted`] (which [`main`] prints with how to continue, exit status 130); a
/// second one exits at once (status 128 + the signal). Call it at the start of a program that
/// trains through [`crate::train`]; a program that does not would ignore the first Ctrl-C.
pub fn install_stop_handlers() {
    extern "C" fn on_signal(sig: libc::c_int) {
        // Only async-signal-safe calls here: an atomic load/store, write(2) and _exit(2).
        if crate::train::stop_requested() {
            // SAFETY: _exit is async-signal-safe and ends the process without unwinding.
            unsafe { libc::_exit(128 + sig) };
        }
        crate::train::request_stop();
        let msg = b"\nselfsup: stopping after this step and writing a checkpoint (press Ctrl-C again to quit at once)\n";
        // SAFETY: write(2) on stderr with a valid buffer is async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: installs a handler that only performs async-signal-safe operations.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}
