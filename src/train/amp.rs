//! Mixed precision and memory layout (S1.9, S2.0): autocast to bf16 or fp16 with a dynamic
//! loss scaler for fp16 on CUDA, bf16 autocast on CPUs that compute bf16 natively, and
//! channels-last tensors — PyTorch's usual performance recipe (`torch.autocast`,
//! `torch.amp.GradScaler`, `memory_format=torch.channels_last`).
//!
//! **Why the `dlsym`.** tch 0.24 exposes only `tch::autocast(enabled, f)`, which toggles CUDA
//! autocast with libtorch's default dtype. The per-device switches (`at::autocast::
//! set_autocast_enabled(DeviceType, bool)`, `set_autocast_dtype(DeviceType, ScalarType)` and
//! their getters) are C++ functions of the already loaded `libtorch_cpu.so`; they are looked up
//! by their mangled names at run time ([`torch_symbol`]). A mangled name encodes the whole
//! signature, so a libtorch whose function takes other arguments has no such symbol, and the
//! lookup returns an [`Error`](crate::Error) that says so instead of calling through a wrong signature. The
//! names were checked with `nm -DC libtorch_cpu.so` against PyTorch 2.11.0, and the CPU path
//! also checks at run time that the loaded libtorch is the version this crate was built against
//! ([`cpu_autocast_available`]).
//!
//! **CPU bf16.** `Precision::Bf16` on the CPU runs the forward pass under
//! `torch.autocast("cpu", dtype=torch.bfloat16)` when the CPU has bf16 instructions
//! (`avx512_bf16` or `amx_bf16` on x86, `bf16` on Arm, read from `/proc/cpuinfo`) *and* the
//! run's own step measures at least 3 % faster that way: before its first step a run times a
//! forward and backward pass of its first batch both ways and keeps the faster
//! ([`bf16_probe`](super::bf16_probe): the casts make small convolutions slower in bf16 even on
//! CPUs with AMX, while large ones run 2–3× faster). Without those instructions it trains in f32
//! with a printed reason: libtorch would emulate bf16, which is slower than f32.
//! `SELFSUP_CPU_BF16=force` (or [`set_cpu_bf16_mode`]) runs the autocast without measuring (for
//! tests of its numerics on any CPU), `SELFSUP_CPU_BF16=off` never does. The detection lives in
//! [`crate::device`](mod@crate::device) (the device line reports it) and is re-exported here.
pub use crate::device::{cpu_bf16, native_bf16_feature, set_cpu_bf16_mode, CpuBf16, CpuBf16Mode, CPU_BF16_ENV};
use crate::error::{config_err, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// Precision of the forward pass: autocast on CUDA, and on CPUs with native bf16 (see the
/// module doc); everything else computes in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// Full f32.
    Off,
    /// Autocast to bfloat16: the range of f32, no loss scaling needed (A100/H100, and CPUs with
    /// `avx512_bf16`/AMX).
    Bf16,
    /// Autocast to float16 with a dynamic loss scale (older GPUs; f32 on the CPU).
    Fp16,
}

/// Where a training step's forward pass runs under autocast, decided once per run by [`setup`]
/// (on a CPU with native bf16, by timing the run's step both ways: see
/// [`bf16_probe`](super::bf16_probe)). A checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Autocast {
    /// No autocast: f32.
    Off,
    /// CUDA autocast (its dtype set by [`setup`]).
    Cuda,
    /// CPU autocast to bfloat16 (`torch.autocast("cpu", dtype=torch.bfloat16)`).
    CpuBf16,
}

/// Whether autocast runs for `precision` on `device` (CUDA: any mixed precision; the CPU:
/// `Bf16` when [`cpu_bf16`] allows it, and then only in the runs whose step measures faster
/// under it, see [`bf16_probe`](super::bf16_probe)).
pub fn autocast_enabled(precision: Precision, device: Device) -> bool {
    autocast_mode(precision, device, &cpu_bf16()) != Autocast::Off
}

fn autocast_mode(precision: Precision, device: Device, cpu: &CpuBf16) -> Autocast {
    match (precision, device) {
        (Precision::Off, _) => Autocast::Off,
        (_, Device::Cuda(_)) => Autocast::Cuda,
        (Precision::Bf16, Device::Cpu) if cpu.enabled() => Autocast::CpuBf16,
        _ => Autocast::Off,
    }
}

/// A run's mixed-precision plan: the autocast, whether fp16 loss scaling is on, and a note to
/// print when the precision asked for is not the one used.
#[derive(Debug, Clone, PartialEq)]
pub struct AmpSetup {
    /// Where the forward pass runs under autocast.
    pub autocast: Autocast,
    /// fp16: a [`LossScaler`] is needed.
    pub fp16: bool,
    /// Why the precision differs from the one asked for, if it does.
    pub note: Option<String>,
    /// CPU bf16 chosen from the CPU's features alone: the engine times the run's step in bf16
    /// and in f32 before it trains and keeps the faster ([`bf16_probe`](super::bf16_probe)).
    /// `false` when `SELFSUP_CPU_BF16=force` (or [`set_cpu_bf16_mode`]) asks for bf16 outright.
    pub measure_cpu_bf16: bool,
}

/// Decides (and, for CUDA, sets the dtype of) the autocast of a run with `precision` on
/// `device`; the engine and the training-step benchmark both call it.
///
/// # Errors
/// On the CPU with bf16 chosen: an [`Error::Config`](crate::Error::Config) when the loaded
/// libtorch lacks the autocast functions or is another version than the one the crate was built
/// against (see [`cpu_autocast_available`]).
pub fn setup(precision: Precision, device: Device) -> Result<AmpSetup> {
    let cpu = if device == Device::Cpu { cpu_bf16() } else { CpuBf16::Forced };
    let autocast = autocast_mode(precision, device, &cpu);
    let mut fp16 = autocast == Autocast::Cuda && precision == Precision::Fp16;
    let mut note = None;
    let measure_cpu_bf16 =
        autocast == Autocast::CpuBf16 && matches!(cpu, CpuBf16::Native(_)) && crate::device::cpu_bf16_mode().0 == CpuBf16Mode::Auto;
    match autocast {
        Autocast::Cuda => {
            let kind = if fp16 { Kind::Half } else { Kind::BFloat16 };
            if !set_cuda_autocast_dtype(kind) && !fp16 {
                note = Some("note: bf16 autocast is not available in this libtorch; using fp16 with loss scaling".into());
                fp16 = true;
            }
        }
        Autocast::CpuBf16 => cpu_autocast_available()?,
        Autocast::Off => {
            note = match (precision, device, cpu) {
                (Precision::Bf16, Device::Cpu, cpu) => {
                    cpu.reason().map(|why| format!("note: Precision::Bf16 asked for, training in f32: {why}"))
                }
                (Precision::Fp16, Device::Cpu, _) => {
                    Some("note: Precision::Fp16 is a CUDA setting; the CPU trains in f32 (Precision::Bf16 autocasts on \
                          CPUs with native bf16)"
                        .into())
                }
                _ => None,
            }
        }
    }
    Ok(AmpSetup { autocast, fp16, note, measure_cpu_bf16 })
}

/// Runs `f` under `mode`'s autocast, as `with torch.autocast(device, dtype):` does: saves the
/// device's autocast state, enables it with the dtype, counts the nesting, and on the way out
/// (also when `f` panics) clears the cast-weight cache when the outermost scope ends and
/// restores the state.
///
/// # Errors
/// For [`Autocast::CpuBf16`], those of [`cpu_autocast_available`]; `f` is not run then.
pub fn autocast<T>(mode: Autocast, f: impl FnOnce() -> T) -> Result<T> {
    match mode {
        Autocast::Off => Ok(f()),
        Autocast::Cuda => Ok(tch::autocast(true, f)),
        Autocast::CpuBf16 => {
            let api = cpu_api()?;
            let _guard = api.enter();
            Ok(f())
        }
    }
}

// c10::DeviceType and c10::ScalarType values (torch/headeronly/core/DeviceType.h, ScalarType.h).
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

/// The address of `mangled` in the loaded `libtorch_cpu.so` (or anywhere in the process).
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) naming the symbol and the libtorch version when it is
/// not there (another PyTorch version, or a platform without `dlsym`).
pub fn torch_symbol(mangled: &str, what: &str) -> Result<*mut libc::c_void> {
    #[cfg(unix)]
    {
        let name = std::ffi::CString::new(mangled).map_err(|_| config_err!("symbol name {mangled:?} contains a NUL"))?;
        // SAFETY: RTLD_NOLOAD only returns a handle to a library already in the process; dlsym
        // with a valid NUL-terminated name only looks the name up.
        let sym = unsafe {
            let lib = libc::dlopen(c"libtorch_cpu.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let scope = if lib.is_null() { libc::RTLD_DEFAULT } else { lib };
            libc::dlsym(scope, name.as_ptr())
        };
        if sym.is_null() {
            return Err(config_err!(
                "the loaded libtorch ({}) has no `{what}` (symbol {mangled}); this crate was built against PyTorch {}. \
                 Use the PyTorch the kit installs (./kit env), or train with Precision::Off",
                loaded_torch_version().unwrap_or_else(|| "version unknown".into()),
                built_torch_version()
            ));
        }
        Ok(sym)
    }
    #[cfg(not(unix))]
    {
        Err(config_err!("`{what}` ({mangled}) is looked up with dlsym, which this platform lacks; use Precision::Off"))
    }
}

/// The PyTorch version this crate was compiled against (from `torch/version.py`, by build.rs).
pub fn built_torch_version() -> &'static str {
    option_env!("SELFSUP_TORCH_VERSION").unwrap_or("unknown")
}

/// The version of the `libtorch_cpu.so` loaded in this process: found with `dladdr` from one of
/// its functions, read from the `version.py` of the Python package it belongs to
/// (`torch/lib/../version.py`) or from a standalone libtorch's `build-version`. `None` when
/// neither file is there.
pub fn loaded_torch_version() -> Option<String> {
    #[cfg(unix)]
    {
        // SAFETY: dlopen(RTLD_NOLOAD)/dlsym only look names up; dladdr fills `info` for an address
        // inside a loaded object and leaves it untouched otherwise.
        let path = unsafe {
            let lib = libc::dlopen(c"libtorch_cpu.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let scope = if lib.is_null() { libc::RTLD_DEFAULT } else { lib };
            let sym = libc::dlsym(scope, c"_ZN2at8autocast11clear_cacheEv".as_ptr());
            if sym.is_null() {
                return None;
            }
            let mut info: libc::Dl_info = std::mem::zeroed();
            if libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
                return None;
            }
            std::path::PathBuf::from(std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned())
        };
        let dir = path.parent()?.to_path_buf();
        let version_py = std::fs::read_to_string(dir.join("..").join("version.py")).ok();
        if let Some(v) = version_py.as_deref().and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string()))
        }) {
            return Some(v);
        }
        std::fs::read_to_string(dir.join("..").join("build-version")).ok().map(|s| s.trim().to_string())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// "2.11" of "2.11.0+cu130".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The libtorch functions behind CPU autocast, looked up once.
struct CpuAutocastApi {
    is_enabled: extern "C" fn(i8) -> bool,
    set_enabled: extern "C" fn(i8, bool),
    get_dtype: extern "C" fn(i8) -> i8,
    set_dtype: extern "C" fn(i8, i8),
    increment_nesting: extern "C" fn() -> libc::c_int,
    decrement_nesting: extern "C" fn() -> libc::c_int,
    clear_cache: extern "C" fn(),
}

/// Restores the CPU autocast state when dropped (see [`autocast`]).
struct CpuAutocastGuard {
    api: &'static CpuAutocastApi,
    prev_enabled: bool,
    prev_dtype: i8,
}

impl CpuAutocastApi {
    fn lookup() -> Result<Self> {
        let loaded = loaded_torch_version();
        let built = built_torch_version();
        if let Some(loaded) = &loaded {
            let (l, b) = (major_minor(loaded), major_minor(built));
            if l.is_some_and(|v| v < (2, 4)) {
                return Err(config_err!(
                    "CPU bf16 autocast needs PyTorch >= 2.4 (at::autocast::set_autocast_enabled(DeviceType, bool)); \
                     the loaded libtorch is {loaded}. Use Precision::Off"
                ));
            }
            if b.is_some() && l != b {
                return Err(config_err!(
                    "the loaded libtorch is {loaded} but this crate was built against PyTorch {built}: its autocast \
                     functions were checked against {built} only. Rebuild with the loaded PyTorch (./kit env), or \
                     train with Precision::Off"
                ));
            }
        }
        // SAFETY: each symbol is a C++ function whose mangled name encodes exactly the signature
        // given here (checked against ATen/autocast_mode.h of PyTorch 2.11): c10::DeviceType and
        // c10::ScalarType are enums with an int8_t underlying type, passed and returned like
        // `i8`; bool like `bool`; none of them throws for the CPU device.
        unsafe {
            let f = |m: &str, w: &str| torch_symbol(m, w);
            Ok(CpuAutocastApi {
                is_enabled: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8) -> bool>(f(
                    "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE",
                    "at::autocast::is_autocast_enabled(DeviceType)",
                )?),
                set_enabled: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8, bool)>(f(
                    "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb",
                    "at::autocast::set_autocast_enabled(DeviceType, bool)",
                )?),
                get_dtype: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8) -> i8>(f(
                    "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE",
                    "at::autocast::get_autocast_dtype(DeviceType)",
                )?),
                set_dtype: std::mem::transmute::<*mut libc::c_void, extern "C" fn(i8, i8)>(f(
                    "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE",
                    "at::autocast::set_autocast_dtype(DeviceType, ScalarType)",
                )?),
                increment_nesting: std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> libc::c_int>(f(
                    "_ZN2at8autocast17increment_nestingEv",
                    "at::autocast::increment_nesting()",
                )?),
                decrement_nesting: std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> libc::c_int>(f(
                    "_ZN2at8autocast17decrement_nestingEv",
                    "at::autocast::decrement_nesting()",
                )?),
                clear_cache: std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(f(
                    "_ZN2at8autocast11clear_cacheEv",
                    "at::autocast::clear_cache()",
                )?),
            })
        }
    }

    /// `torch.autocast("cpu", dtype=torch.bfloat16).__enter__()` (torch/amp/autocast_mode.py).
    fn enter(&'static self) -> CpuAutocastGuard {
        let guard =
            CpuAutocastGuard { api: self, prev_enabled: (self.is_enabled)(DEVICE_CPU), prev_dtype: (self.get_dtype)(DEVICE_CPU) };
        (self.set_enabled)(DEVICE_CPU, true);
        (self.set_dtype)(DEVICE_CPU, SCALAR_BFLOAT16);
        (self.increment_nesting)();
        guard
    }
}

impl Drop for CpuAutocastGuard {
    /// `__exit__`: the cache of bf16 copies of the weights lives as long as the outermost scope
    /// (the weights change at the optimizer step), then the previous state comes back.
    fn drop(&mut self) {
        if (self.api.decrement_nesting)() == 0 {
            (self.api.clear_cache)();
        }
        (self.api.set_enabled)(DEVICE_CPU, self.prev_enabled);
        (self.api.set_dtype)(DEVICE_CPU, self.prev_dtype);
    }
}

fn cpu_api() -> Result<&'static CpuAutocastApi> {
    static API: OnceLock<std::result::Result<CpuAutocastApi, String>> = OnceLock::new();
    match API.get_or_init(|| CpuAutocastApi::lookup().map_err(|e| e.to_string())) {
        Ok(api) => Ok(api),
        Err(e) => Err(crate::Error::Config(e.trim_start_matches("invalid configuration: ").to_string())),
    }
}

/// Checks that CPU autocast can run here: the loaded libtorch is the version the crate was
/// built against and has the autocast functions (looked up once per process).
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) saying which check failed and what to do.
pub fn cpu_autocast_available() -> Result<()> {
    cpu_api().map(|_| ())
}

/// Sets the dtype CUDA autocast casts to. tch 0.24 exposes only `autocast(enabled, f)`, whose
/// dtype is libtorch's default (fp16), so this calls libtorch's
/// `at::autocast::set_autocast_dtype(DeviceType::CUDA, ScalarType)` found at run time with
/// [`torch_symbol`]. Returns false when the symbol is not found.
pub fn set_cuda_autocast_dtype(kind: Kind) -> bool {
    let scalar = match kind {
        Kind::Half => SCALAR_HALF,
        Kind::BFloat16 => SCALAR_BFLOAT16,
        _ => return false,
    };
    let Ok(sym) = torch_symbol(
        "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE",
        "at::autocast::set_autocast_dtype(DeviceType, ScalarType)",
    ) else {
        return false;
    };
    // SAFETY: `void at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)`, both
    // enums with an int8_t underlying type, passed like `i8` in the C calling convention.
    let f: extern "C" fn(i8, i8) = unsafe { std::mem::transmute(sym) };
    f(DEVICE_CUDA, scalar);
    true
}

/// The same values in channels-last memory order (NHWC strides, NCHW shape), for 4-D tensors.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    if x.dim() == 4 {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        x.shallow_clone()
    }
}

/// Dynamic loss scaling for fp16 (`torch.amp.GradScaler` defaults: init 2^16, growth ×2 after
/// 2000 finite steps, back-off ×0.5 on an overflow, which skips that step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    /// Finite steps since the last change.
    pub growth_tracker: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler { scale: 65536.0, growth_tracker: 0 }
    }
}

impl LossScaler {
    /// Records a step: `finite` grads grow the scale every 2000 steps, an overflow halves it.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker == 2000 {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale *= 0.5;
            self.growth_tracker = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_scaler_follows_grad_scaler_defaults() {
        // torch.amp.GradScaler(): init_scale 2**16, growth_factor 2, backoff_factor 0.5,
        // growth_interval 2000.
        let mut s = LossScaler::default();
        assert_eq!(s.scale, 65536.0);
        for _ in 0..1999 {
            s.update(true);
        }
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 1999));
        s.update(true); // the 2000th finite step doubles the scale
        assert_eq!((s.scale, s.growth_tracker), (131072.0, 0));
        s.update(true);
        s.update(false); // an overflow halves it and restarts the count
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
    }

    #[test]
    fn autocast_runs_on_cuda_and_on_cpus_with_bf16() {
        let native = CpuBf16::Native("avx512_bf16");
        let none = CpuBf16::NoNative;
        assert_eq!(autocast_mode(Precision::Bf16, Device::Cpu, &none), Autocast::Off);
        assert_eq!(autocast_mode(Precision::Bf16, Device::Cpu, &native), Autocast::CpuBf16);
        assert_eq!(autocast_mode(Precision::Bf16, Device::Cpu, &CpuBf16::Forced), Autocast::CpuBf16);
        // fp16 stays a CUDA setting: no loss scaling on the CPU.
        assert_eq!(autocast_mode(Precision::Fp16, Device::Cpu, &native), Autocast::Off);
        assert_eq!(autocast_mode(Precision::Off, Device::Cuda(0), &native), Autocast::Off);
        assert_eq!(autocast_mode(Precision::Fp16, Device::Cuda(0), &none), Autocast::Cuda);
    }

    #[test]
    fn version_numbers_compare_by_major_and_minor() {
        assert_eq!(major_minor("2.11.0+cu130"), Some((2, 11)));
        assert_eq!(major_minor("2.4.1"), Some((2, 4)));
        assert!(major_minor("2.3.1").unwrap() < (2, 4));
        assert_eq!(major_minor("unknown"), None);
    }
}
