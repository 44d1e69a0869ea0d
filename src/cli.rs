//! What the command-line programs (`selfsup-train`, `selfsup-results`, the examples) share:
//! the kit's choices as clap values ([`Scale`], [`Precision`], [`MethodKind`]), value parsers
//! that say what a number must be, and a [`main`] that parses the arguments with clap, runs,
//! and turns an error into a message and an exit code — never a panic.
//!
//! ```
//! use clap::Parser;
//! use selfsup::train::Precision;
//! #[derive(Debug, Parser)]
//! struct Args {
//!     /// Precision of the forward pass
//!     #[arg(long, value_enum, default_value_t = Precision::Bf16)]
//!     precision: Precision,
//!     /// Learning rate
//!     #[arg(long, default_value_t = 0.03, value_parser = selfsup::cli::positive_number)]
//!     lr: f64,
//! }
//! let a = Args::try_parse_from(["prog", "--precision", "off"]).unwrap();
//! assert_eq!((a.precision, a.lr), (Precision::Off, 0.03));
//! let e = Args::try_parse_from(["prog", "--lr", "0"]).unwrap_err().to_string();
//! assert!(e.contains("invalid value '0' for '--lr <LR>'"), "{e}");
//! ```
use crate::error::{Error, Result};
use crate::methods::registry::MethodKind;
use crate::train::{Precision, Scale};
use clap::builder::{PossibleValue, PossibleValuesParser, StringValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{ArgMatches, Parser, ValueEnum};
use std::process::ExitCode;

impl ValueEnum for Scale {
    fn value_variants<'a>() -> &'a [Self] {
        &Scale::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for Precision {
    fn value_variants<'a>() -> &'a [Self] {
        &[Precision::Off, Precision::Bf16, Precision::Fp16]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Precision::Off => PossibleValue::new("off").alias("fp32").help("full f32"),
            Precision::Bf16 => PossibleValue::new("bf16").help("bf16 autocast on CUDA and on CPUs with native bf16"),
            Precision::Fp16 => PossibleValue::new("fp16").help("fp16 autocast with loss scaling (CUDA only)"),
        })
    }
}

impl ValueEnum for MethodKind {
    fn value_variants<'a>() -> &'a [Self] {
        &MethodKind::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// A clap value parser for the methods in `kinds` only (a benchmark's methods), by name.
///
/// ```
/// use clap::Parser;
/// use selfsup::methods::registry::MethodKind;
/// const BENCHED: [MethodKind; 2] = [MethodKind::SimClr, MethodKind::Byol];
/// #[derive(Parser)]
/// struct Args {
///     #[arg(long, value_delimiter = ',', value_parser = selfsup::cli::methods_among(&BENCHED), default_values_t = BENCHED)]
///     methods: Vec<MethodKind>,
/// }
/// assert_eq!(Args::try_parse_from(["b"]).unwrap().methods, BENCHED);
/// assert_eq!(Args::try_parse_from(["b", "--methods", "byol"]).unwrap().methods, [MethodKind::Byol]);
/// assert!(Args::try_parse_from(["b", "--methods", "moco_v1"]).is_err());
/// ```
pub fn methods_among(kinds: &'static [MethodKind]) -> impl TypedValueParser<Value = MethodKind> {
    PossibleValuesParser::new(kinds.iter().map(|k| PossibleValue::new(k.name()))).try_map(|name| name.parse::<MethodKind>())
}

/// A clap value parser: a finite number > 0.
///
/// # Errors
/// What the number must be, for clap to show after the flag and the value.
pub fn positive_number(s: &str) -> std::result::Result<f64, String> {
    number(s).and_then(|x| if x > 0.0 { Ok(x) } else { Err("must be a positive number".into()) })
}

/// A clap value parser: a number in [0, 1].
///
/// # Errors
/// What the number must be.
pub fn unit_interval(s: &str) -> std::result::Result<f64, String> {
    number(s).and_then(|x| if (0.0..=1.0).contains(&x) { Ok(x) } else { Err("must be in [0, 1]".into()) })
}

/// A clap value parser: a number in [0, 1) (a momentum).
///
/// # Errors
/// What the number must be.
pub fn below_one(s: &str) -> std::result::Result<f64, String> {
    number(s).and_then(|x| if (0.0..1.0).contains(&x) { Ok(x) } else { Err("must be in [0, 1)".into()) })
}

/// A clap value parser: a whole number ≥ `min` (a count, a size).
///
/// ```
/// use clap::Parser;
/// #[derive(Debug, Parser)]
/// struct Args {
///     #[arg(long, default_value_t = 256, value_parser = selfsup::cli::at_least(2usize))]
///     batch: usize,
/// }
/// assert_eq!(Args::try_parse_from(["b", "--batch", "8"]).unwrap().batch, 8);
/// let e = Args::try_parse_from(["b", "--batch", "1"]).unwrap_err().to_string();
/// assert!(e.contains("invalid value '1' for '--batch <BATCH>': must be a whole number ≥ 2"), "{e}");
/// ```
pub fn at_least<T>(min: T) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Clone + Send + Sync + 'static,
{
    StringValueParser::new().try_map(move |s| match s.trim().parse::<T>() {
        Ok(x) if x >= min => Ok(x),
        _ => Err(format!("must be a whole number ≥ {min}")),
    })
}

fn number(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err("expected a finite number, e.g. 0.05".into()),
    }
}

/// The command-line name of a clap value (`"stl10"` of a `Dataset::Stl10` deriving `ValueEnum`).
pub fn value_name<T: ValueEnum>(value: &T) -> String {
    value.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// Whether the argument `id` (the field's name) was given on the command line, not defaulted.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// Runs a command-line program: clap parses the arguments into `A` (help and version exit 0,
/// bad arguments exit 2 naming the flag and the value); `check` turns them into what `run`
/// takes, its errors reported as bad arguments too (exit 2); `run` does the work: exit 0 on
/// success, 1 with the error, 130 when interrupted (Ctrl-C, with how to continue).
pub fn main<A: Parser, B>(
    check: impl FnOnce(A, &ArgMatches) -> Result<B>,
    run: impl FnOnce(B) -> Result<()>,
) -> ExitCode {
    let mut command = A::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| A::from_arg_matches(&m).map(|a| (a, m)));
    let (args, matches) = match parsed {
        Ok(p) => p,
        Err(e) => return clap_exit(e.format(&mut command)),
    };
    let args = match check(args, &matches) {
        Ok(a) => a,
        Err(e) => return clap_exit(command.error(ErrorKind::ValueValidation, e)),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted(msg)) => {
            eprintln!("selfsup: {msg}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints clap's message (help to stdout, errors to stderr) and returns its exit code.
fn clap_exit(e: clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
