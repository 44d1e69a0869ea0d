//! Where and when a report was made: the machine (CPU model, cores, memory, CPU bf16, GPU), the
//! git commit of the working tree, and the UTC date.
use crate::train::amp;
use serde::Serialize;
use time::OffsetDateTime;

/// The machine a run ran on, as the report names it.
///
/// ```
/// let m = selfsup::experiments::Machine::detect();
/// assert!(m.cpus >= 1);
/// println!("{m}"); // "AMD EPYC 7B13, 2 CPUs, 8 GiB RAM; GPU: none"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or "unknown CPU".
    pub cpu: String,
    /// Logical CPUs this process may use (0 when unknown).
    pub cpus: usize,
    /// Total memory in GiB (`/proc/meminfo`), when known.
    pub ram_gib: Option<f64>,
    /// Whether and how the CPU runs bf16 autocast ([`amp::cpu_bf16`]); the report's device line
    /// states it, the machine line does not.
    pub cpu_bf16: String,
    /// Each GPU's name and memory (`nvidia-smi`), when there is one.
    pub gpus: Vec<String>,
}

impl Machine {
    /// Reads this machine's description (never fails: what cannot be read is "unknown" or left
    /// out).
    pub fn detect() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = field(&read("/proc/cpuinfo"), "model name")
            .and_then(|v| v.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let ram_gib = field(&read("/proc/meminfo"), "MemTotal:")
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0 / 1024.0);
        let gpus = command_output("nvidia-smi", &["--query-gpu=name,memory.total", "--format=csv,noheader"])
            .map(|g| g.lines().map(String::from).collect())
            .unwrap_or_default();
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            ram_gib,
            cpu_bf16: amp::cpu_bf16().describe(),
            gpus,
        }
    }
}

impl std::fmt::Display for Machine {
    /// "AMD EPYC 7B13, 2 CPUs, 8 GiB RAM; GPU: none" (GPUs separated by "; ").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} CPUs", self.cpu, self.cpus)?;
        if let Some(gib) = self.ram_gib {
            write!(f, ", {gib:.0} GiB RAM")?;
        }
        let gpu = if self.gpus.is_empty() { "none".to_string() } else { self.gpus.join("; ") };
        write!(f, "; GPU: {gpu}")
    }
}

/// The first line of `text` that starts with `key`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(key))
}

/// The trimmed standard output of a command that succeeded and printed something.
fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The working tree's commit, `git rev-parse --short=12 HEAD`, with " (with uncommitted
/// changes)" when tracked files differ from it; "unknown (not run inside a git checkout)"
/// outside one.
pub fn git_commit() -> String {
    match command_output("git", &["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_some() => {
            format!("{c} (with uncommitted changes)")
        }
        Some(c) => c,
        None => "unknown (not run inside a git checkout)".into(),
    }
}

/// The system clock's time as "2026-11-25 17:25 UTC".
pub fn date_utc() -> String {
    format_utc(OffsetDateTime::now_utc())
}

/// "YYYY-MM-DD HH:MM UTC" of a Unix time in seconds (the epoch for one out of range).
///
/// ```
/// use selfsup::experiments::date_utc_at;
/// assert_eq!(date_utc_at(1_709_210_096), "2024-02-29 12:34 UTC");
/// ```
pub fn date_utc_at(unix_seconds: i64) -> String {
    format_utc(OffsetDateTime::from_unix_timestamp(unix_seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}
