//! Choosing where tensors live, what the hardware can do, and seeding.
//!
//! [`pick_device`] returns CUDA when a GPU is usable and the CPU otherwise, and prints which,
//! so a notebook's output always says where it ran. `SELFSUP_DEVICE=cpu` (or `cuda`, `cuda:1`)
//! overrides the choice.
//!
//! Whether this CPU computes bf16 natively ([`cpu_bf16`]) is decided here too, because the device
//! line says it; `train::amp` asks the same function when it plans a run's autocast.
//!
//! Why the `dlopen`: the linker drops `libtorch_cuda.so` from binaries that never call into it
//! directly (`--as-needed`), and then libtorch does not know CUDA exists. This crate's own
//! binaries and tests are linked with `--no-as-needed` (see `build.rs`), but code compiled by the
//! evcxr kernel is not, so the library is loaded at run time, before the first CUDA query.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use tch::Device;

/// Where the kit should put tensors: CUDA device 0 when usable, else the CPU. Prints one line
/// saying which and why.
///
/// # Example
/// ```no_run
/// let device = selfsup::pick_device();
/// let x = selfsup::tch::Tensor::zeros([2, 3], (selfsup::tch::Kind::Float, device));
/// ```
pub fn pick_device() -> Device {
    let (device, why) = choose_device();
    println!("selfsup: using {} ({why})", describe(device));
    device
}

/// Like [`pick_device`], without printing.
pub fn choose_device() -> (Device, String) {
    tune_allocator();
    if let Some(s) = std::env::var("SELFSUP_DEVICE").ok().as_deref().map(str::trim) {
        if let Some(device) = device_named(s) {
            if is_usable(device) {
                return (device, format!("SELFSUP_DEVICE={s}"));
            }
            return (Device::Cpu, format!("SELFSUP_DEVICE={s} but no such CUDA device; falling back to the CPU"));
        }
    }
    let n = cuda_device_count();
    if n > 0 {
        (Device::Cuda(0), format!("{n} CUDA device(s) found"))
    } else {
        (Device::Cpu, "no CUDA device found".into())
    }
}

/// The device a name asks for: `cpu`, `cuda` (device 0) or `cuda:N`; `None` for any other word
/// ("auto": let [`choose_device`] decide). Whether this machine has it is [`is_usable`].
///
/// ```
/// use selfsup::device::device_named;
/// use selfsup::tch::Device;
/// assert_eq!(device_named("cuda:1"), Some(Device::Cuda(1)));
/// assert_eq!(device_named("auto"), None);
/// ```
pub fn device_named(name: &str) -> Option<Device> {
    match name {
        "cpu" => Some(Device::Cpu),
        s if s.starts_with("cuda") => Some(Device::Cuda(s.strip_prefix("cuda:").and_then(|i| i.parse().ok()).unwrap_or(0))),
        _ => None,
    }
}

/// Whether tensors can live on `device` here: always for the CPU, for CUDA device i when
/// libtorch sees more than i devices.
pub fn is_usable(device: Device) -> bool {
    match device {
        Device::Cuda(i) => cuda_device_count() > i,
        _ => true,
    }
}

/// Number of CUDA devices libtorch can use (0 on a machine without an NVIDIA driver).
pub fn cuda_device_count() -> usize {
    if !load_cuda_runtime() {
        return 0;
    }
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// A human description: "CPU (2 threads, bf16 autocast: native (avx512_bf16), where a run
/// measures it faster than f32)" or "CUDA device 0 of 1, cuDNN available". On the CPU it says whether `Precision::Bf16` autocasts there
/// ([`cpu_bf16`]) and, if not, why.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("CPU ({} threads, {})", tch::get_num_threads(), cpu_bf16().describe()),
        Device::Cuda(i) => format!(
            "CUDA device {i} of {}{}",
            tch::Cuda::device_count(),
            if tch::Cuda::cudnn_is_available() { ", cuDNN available" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

/// glibc's mmap threshold, fixed: the highest value its adaptive threshold reaches
/// (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit Linux, 32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// glibc's trim threshold, fixed: twice [`MMAP_THRESHOLD`], as glibc sets it when it adapts.
pub const TRIM_THRESHOLD: usize = 64 << 20;

/// Sets glibc's malloc thresholds where its own adaptive ones end up at most ([`MMAP_THRESHOLD`],
/// [`TRIM_THRESHOLD`]) from the start, once per process; `true` when set. [`choose_device`] (so
/// [`pick_device`]) and the training engine call it.
///
/// Why: libtorch allocates every tensor with `malloc`. glibc starts by serving blocks over 128 KiB
/// with `mmap` and returns them to the kernel when freed; each time such a block is freed it raises
/// that threshold to the block's size, and trims the top of its heap above twice the threshold. So
/// how much memory a training step gets back fresh from the kernel (a page fault and 4 KiB zeroed
/// per page) depends on which blocks happened to be freed first: on 2 cores the same SimCLR step
/// took 1,800 page faults in one run and 16,000 in the next. Fixed at glibc's ceiling, blocks up
/// to 32 MiB come from the heap and at most 64 MiB of freed memory stays there: the step ran 5–8 %
/// faster with the same peak memory (BENCHMARKS.md, issue 17).
///
/// Left alone when `GLIBC_TUNABLES` sets a `glibc.malloc.` parameter (yours wins) or when
/// `SELFSUP_MALLOC=glibc`; a no-op where the C library is not glibc.
pub fn tune_allocator() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| {
        let wanted = allocator_tuning_wanted(
            std::env::var("SELFSUP_MALLOC").ok().as_deref(),
            std::env::var("GLIBC_TUNABLES").ok().as_deref(),
        );
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if wanted {
            // SAFETY: mallopt only changes two of the allocator's parameters; it returns 1 on success.
            return unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
                    && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
            };
        }
        let _ = wanted;
        false
    })
}

/// Whether [`tune_allocator`] should set the thresholds, given `SELFSUP_MALLOC` and
/// `GLIBC_TUNABLES`.
fn allocator_tuning_wanted(selfsup_malloc: Option<&str>, glibc_tunables: Option<&str>) -> bool {
    selfsup_malloc.map(str::trim) != Some("glibc") && !glibc_tunables.is_some_and(|t| t.contains("glibc.malloc."))
}

/// Seeds libtorch's generators (CPU and every CUDA device). The kit's own random choices
/// (datasets, augmentations, shuffling) take explicit seeds in their configs, because Rust
/// statics do not survive from one evcxr cell to the next.
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
    if cuda_device_count() > 0 {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014, "Fast splittable pseudorandom number
/// generators"; Vigna's `splitmix64.c`): a bijection of `u64` that spreads every input bit over
/// the whole output. Every seed the kit derives — the batch order of an epoch, a synthetic image,
/// a training step's draws — is its input mixed one way and then passed through this.
pub(crate) fn splitmix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64's increment γ = 2⁶⁴/φ (odd), added to the state before [`splitmix64`] mixes it.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Loads `libtorch_cuda.so` into the process (once) when an NVIDIA driver is present.
/// Returns whether CUDA support is loaded. Cheap when there is no driver.
fn load_cuda_runtime() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: dlopen with valid NUL-terminated names; the handles are deliberately kept open
        // for the life of the process, as libtorch expects of its backends.
        unsafe {
            let driver = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_GLOBAL);
            if driver.is_null() {
                return false;
            }
            let flags = libc::RTLD_NOW | libc::RTLD_GLOBAL;
            if !libc::dlopen(c"libtorch_cuda.so".as_ptr(), flags).is_null() {
                return true;
            }
            if let Some(dir) = option_env!("SELFSUP_LIBTORCH_LIB") {
                if let Ok(path) = std::ffi::CString::new(format!("{dir}/libtorch_cuda.so")) {
                    return !libc::dlopen(path.as_ptr(), flags).is_null();
                }
            }
            false
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        tch::Cuda::is_available()
    }
}

/// The name of the environment variable that overrides CPU bf16 detection: `force`, `off` or
/// `auto` (the default).
pub const CPU_BF16_ENV: &str = "SELFSUP_CPU_BF16";

/// How the CPU decides on bf16 autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBf16Mode {
    /// Autocast when the CPU has native bf16 instructions (the default).
    Auto,
    /// Autocast even without native support (libtorch emulates bf16: correct, slow); for tests
    /// of the numerics on any CPU.
    Force,
    /// Never autocast on the CPU.
    Off,
}

/// 0: not set (read [`CPU_BF16_ENV`]), else 1 + the mode's index.
static CPU_BF16_MODE: AtomicU8 = AtomicU8::new(0);

/// Overrides [`CPU_BF16_ENV`] for this process (`None`: back to the environment variable).
pub fn set_cpu_bf16_mode(mode: Option<CpuBf16Mode>) {
    let v = match mode {
        None => 0,
        Some(CpuBf16Mode::Auto) => 1,
        Some(CpuBf16Mode::Force) => 2,
        Some(CpuBf16Mode::Off) => 3,
    };
    CPU_BF16_MODE.store(v, Ordering::Relaxed);
}

/// The mode in force and where it came from.
pub(crate) fn cpu_bf16_mode() -> (CpuBf16Mode, &'static str) {
    match CPU_BF16_MODE.load(Ordering::Relaxed) {
        1 => (CpuBf16Mode::Auto, "set_cpu_bf16_mode"),
        2 => (CpuBf16Mode::Force, "set_cpu_bf16_mode"),
        3 => (CpuBf16Mode::Off, "set_cpu_bf16_mode"),
        _ => match std::env::var(CPU_BF16_ENV).ok().as_deref().map(str::trim) {
            Some("force") | Some("1") => (CpuBf16Mode::Force, "SELFSUP_CPU_BF16"),
            Some("off") | Some("0") => (CpuBf16Mode::Off, "SELFSUP_CPU_BF16"),
            _ => (CpuBf16Mode::Auto, "auto"),
        },
    }
}

/// The first CPU feature in `cpuinfo` (the text of `/proc/cpuinfo`) that computes bf16 natively:
/// `amx_bf16` or `avx512_bf16` in an x86 `flags` line, `bf16` in an Arm `Features` line.
/// `None` when there is none (AVX2-only x86, older Arm): libtorch then emulates bf16.
pub fn native_bf16_feature(cpuinfo: &str) -> Option<&'static str> {
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.trim();
        if key != "flags" && key != "Features" {
            continue;
        }
        let words: Vec<&str> = value.split_whitespace().collect();
        for feature in ["amx_bf16", "avx512_bf16"] {
            if key == "flags" && words.contains(&feature) {
                return Some(feature);
            }
        }
        if key == "Features" && words.contains(&"bf16") {
            return Some("bf16");
        }
    }
    None
}

/// Whether this CPU runs `Precision::Bf16` under autocast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuBf16 {
    /// Native bf16 instructions: the named CPU feature.
    Native(&'static str),
    /// No native support, but forced (`SELFSUP_CPU_BF16=force` or [`set_cpu_bf16_mode`]).
    Forced,
    /// No native support: `Precision::Bf16` trains in f32.
    NoNative,
    /// Turned off by the named override (`SELFSUP_CPU_BF16` or `set_cpu_bf16_mode`).
    TurnedOff(&'static str),
}

impl CpuBf16 {
    /// Whether bf16 autocast runs on the CPU.
    pub fn enabled(&self) -> bool {
        matches!(self, CpuBf16::Native(_) | CpuBf16::Forced)
    }
    /// A few words for the device line.
    pub fn describe(&self) -> String {
        match self {
            CpuBf16::Native(f) => format!("bf16 autocast: native ({f}), where a run measures it faster than f32"),
            CpuBf16::Forced => format!("bf16 autocast: forced by {CPU_BF16_ENV}, emulated"),
            CpuBf16::NoNative => "no native bf16: Precision::Bf16 trains in f32".into(),
            CpuBf16::TurnedOff(from) => format!("bf16 autocast turned off by {from}"),
        }
    }
    /// Why bf16 autocast does not run, in a sentence (`None` when it runs).
    pub fn reason(&self) -> Option<String> {
        match self {
            CpuBf16::Native(_) | CpuBf16::Forced => None,
            CpuBf16::NoNative => Some(format!(
                "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 in /proc/cpuinfo) and emulated bf16 is slower \
                 than f32; {CPU_BF16_ENV}=force runs it anyway"
            )),
            CpuBf16::TurnedOff(from) => Some(format!("CPU bf16 autocast is turned off by {from}")),
        }
    }
}

/// Decides CPU bf16 from the mode and the CPU's features (`/proc/cpuinfo`, read once).
pub fn cpu_bf16() -> CpuBf16 {
    static FEATURE: OnceLock<Option<&'static str>> = OnceLock::new();
    let feature = *FEATURE.get_or_init(|| native_bf16_feature(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()));
    let (mode, from) = cpu_bf16_mode();
    decide_cpu_bf16(mode, from, feature)
}

fn decide_cpu_bf16(mode: CpuBf16Mode, from: &'static str, feature: Option<&'static str>) -> CpuBf16 {
    match (mode, feature) {
        (CpuBf16Mode::Off, _) => CpuBf16::TurnedOff(from),
        (_, Some(f)) => CpuBf16::Native(f),
        (CpuBf16Mode::Force, None) => CpuBf16::Forced,
        (CpuBf16Mode::Auto, None) => CpuBf16::NoNative,
    }
}

/// The versions and settings a bug report needs; renders as a table in a notebook.
#[derive(Debug, Clone)]
pub struct Environment {
    /// This crate's version.
    pub selfsup: &'static str,
    /// The PyTorch (libtorch) version tch was built against, e.g. "2.11.0+cu130".
    pub torch: &'static str,
    /// The device [`pick_device`] would choose, described.
    pub device: String,
    /// Intra-op threads libtorch uses on the CPU.
    pub threads: i32,
    /// Number of CUDA devices.
    pub cuda_devices: usize,
}

/// Reads the [`Environment`] of this process.
pub fn environment() -> Environment {
    let (device, why) = choose_device();
    Environment {
        selfsup: env!("CARGO_PKG_VERSION"),
        torch: option_env!("SELFSUP_TORCH_VERSION").unwrap_or("unknown"),
        device: format!("{} ({why})", describe(device)),
        threads: tch::get_num_threads(),
        cuda_devices: cuda_device_count(),
    }
}

impl Environment {
    /// Rows of (name, value), as shown in the table.
    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            ("selfsup".into(), self.selfsup.into()),
            ("PyTorch (libtorch)".into(), self.torch.into()),
            ("device".into(), self.device.clone()),
            ("CPU threads".into(), self.threads.to_string()),
            ("CUDA devices".into(), self.cuda_devices.to_string()),
        ]
    }

    // `table` and `evcxr_display` (the inline HTML table) are in `viz`, which renders.
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in self.rows() {
            writeln!(f, "{k:<20} {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_features_are_read_from_cpuinfo() {
        // This machine's kind of line (AMD EPYC, AVX2 only) and a Sapphire Rapids one.
        let epyc = "processor\t: 0\nflags\t\t: fpu vme sse2 avx fma avx2 bmi2 sha_ni\nbugs\t\t: sysret_ss_attrs\n";
        let spr = "flags\t\t: avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8\n";
        let zen4 = "flags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n";
        let graviton3 = "Features\t: fp asimd evtstrm aes sve bf16 i8mm\n";
        let graviton2 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n";
        assert_eq!(native_bf16_feature(epyc), None);
        assert_eq!(native_bf16_feature(spr), Some("amx_bf16"));
        assert_eq!(native_bf16_feature(zen4), Some("avx512_bf16"));
        assert_eq!(native_bf16_feature(graviton3), Some("bf16"));
        assert_eq!(native_bf16_feature(graviton2), None);
        // A word that only contains the name is not the feature; nor is a bf16 outside flags.
        assert_eq!(native_bf16_feature("flags\t: avx512_bf16x\nmodel name\t: bf16 amx_bf16\n"), None);
        assert_eq!(native_bf16_feature(""), None);
    }

    #[test]
    fn the_mode_overrides_detection() {
        assert_eq!(decide_cpu_bf16(CpuBf16Mode::Auto, "auto", Some("avx512_bf16")), CpuBf16::Native("avx512_bf16"));
        assert_eq!(decide_cpu_bf16(CpuBf16Mode::Force, "x", None), CpuBf16::Forced);
        assert_eq!(decide_cpu_bf16(CpuBf16Mode::Force, "x", Some("bf16")), CpuBf16::Native("bf16"));
        let no = decide_cpu_bf16(CpuBf16Mode::Auto, "auto", None);
        assert_eq!(no, CpuBf16::NoNative);
        let why = no.reason().unwrap();
        assert!(why.contains("no native bf16") && why.contains("SELFSUP_CPU_BF16=force"), "{why}");
        let off = decide_cpu_bf16(CpuBf16Mode::Off, "SELFSUP_CPU_BF16", Some("amx_bf16"));
        assert_eq!(off, CpuBf16::TurnedOff("SELFSUP_CPU_BF16"), "off wins over native support");
        assert!(!off.enabled() && off.reason().unwrap().contains("SELFSUP_CPU_BF16"));
        assert!(CpuBf16::Forced.enabled() && CpuBf16::Forced.reason().is_none());
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // splitmix64.c's first outputs from state 0: next() adds γ, then mixes.
        assert_eq!(splitmix64(GOLDEN_GAMMA), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GOLDEN_GAMMA.wrapping_mul(2)), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn the_allocator_is_tuned_unless_the_user_chose() {
        assert!(allocator_tuning_wanted(None, None));
        assert!(allocator_tuning_wanted(Some("tuned"), Some("glibc.rtld.nns=2")));
        assert!(!allocator_tuning_wanted(Some(" glibc "), None));
        assert!(!allocator_tuning_wanted(None, Some("glibc.malloc.trim_threshold=0")));
        // Once per process; on glibc it is set (nothing in the test environment opts out).
        let first = tune_allocator();
        assert_eq!(first, tune_allocator());
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if std::env::var_os("SELFSUP_MALLOC").is_none() && std::env::var_os("GLIBC_TUNABLES").is_none() {
            assert!(first);
        }
    }
}
