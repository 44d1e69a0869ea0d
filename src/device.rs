//! Choosing where tensors live, and seeding.
//!
//! [`pick_device`] returns CUDA when a GPU is usable and the CPU otherwise, and prints which,
//! so a notebook's output always says where it ran. `SELFSUP_DEVICE=cpu` (or `cuda`, `cuda:1`)
//! overrides the choice.
//!
//! Why the `dlopen`: the linker drops `libtorch_cuda.so` from binaries that never call into it
//! directly (`--as-needed`), and then libtorch does not know CUDA exists. This crate's own
//! binaries and tests are linked with `--no-as-needed` (see `build.rs`), but code compiled by the
//! evcxr kernel is not, so the library is loaded at run time, before the first CUDA query.
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
    match std::env::var("SELFSUP_DEVICE").ok().as_deref().map(str::trim) {
        Some("cpu") => return (Device::Cpu, "SELFSUP_DEVICE=cpu".into()),
        Some(s) if s.starts_with("cuda") => {
            let index = s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()).unwrap_or(0);
            if cuda_device_count() > index {
                return (Device::Cuda(index), format!("SELFSUP_DEVICE={s}"));
            }
            return (Device::Cpu, format!("SELFSUP_DEVICE={s} but no such CUDA device; falling back to the CPU"));
        }
        _ => {}
    }
    let n = cuda_device_count();
    if n > 0 {
        (Device::Cuda(0), format!("{n} CUDA device(s) found"))
    } else {
        (Device::Cpu, "no CUDA device found".into())
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

/// A human description: "CPU (2 threads, bf16 autocast: native (avx512_bf16))" or "CUDA device
/// 0 of 1, cuDNN available". On the CPU it says whether `Precision::Bf16` autocasts there
/// ([`crate::train::amp::cpu_bf16`]) and, if not, why.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("CPU ({} threads, {})", tch::get_num_threads(), crate::train::amp::cpu_bf16().describe()),
        Device::Cuda(i) => format!(
            "CUDA device {i} of {}{}",
            tch::Cuda::device_count(),
            if tch::Cuda::cudnn_is_available() { ", cuDNN available" } else { "" }
        ),
        other => format!("{other:?}"),
    }
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

    /// The environment as a displayable table.
    pub fn table(&self) -> crate::viz::Table {
        let rows = self.rows().into_iter().map(|(k, v)| vec![k, v]).collect();
        crate::viz::Table::new(vec!["".into(), "value".into()], rows)
    }

    /// evcxr display hook: shows the environment as an HTML table.
    pub fn evcxr_display(&self) {
        self.table().evcxr_display()
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in self.rows() {
            writeln!(f, "{k:<20} {v}")?;
        }
        Ok(())
    }
}
