//! Mixed precision and memory layout on CUDA (S1.9, S2.0): autocast to bf16 or fp16 with a
//! dynamic loss scaler for fp16, and channels-last tensors — PyTorch's usual performance recipe
//! (`torch.autocast`, `torch.cuda.amp.GradScaler`, `memory_format=torch.channels_last`).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Precision of the forward pass on CUDA (ignored on the CPU, which always computes in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// Full f32.
    Off,
    /// Autocast to bfloat16: the range of f32, no loss scaling needed (A100/H100).
    Bf16,
    /// Autocast to float16 with a dynamic loss scale (older GPUs).
    Fp16,
}

/// Whether autocast runs for `precision` on `device`.
pub fn autocast_enabled(precision: Precision, device: Device) -> bool {
    precision != Precision::Off && matches!(device, Device::Cuda(_))
}

/// Sets the dtype CUDA autocast casts to. tch 0.24 exposes only `autocast(enabled, f)`, whose
/// dtype is libtorch's default (fp16), so this calls libtorch's
/// `at::autocast::set_autocast_dtype(DeviceType::CUDA, ScalarType)` found at run time in the
/// already loaded `libtorch_cpu.so`. Returns false when the symbol is not found.
pub fn set_cuda_autocast_dtype(kind: Kind) -> bool {
    #[cfg(target_os = "linux")]
    {
        // c10::ScalarType and c10::DeviceType values (c10/core/ScalarType.h, DeviceType.h).
        let scalar: i8 = match kind {
            Kind::Half => 5,
            Kind::BFloat16 => 15,
            _ => return false,
        };
        const CUDA: i8 = 1;
        // SAFETY: RTLD_NOLOAD only returns a handle to a library already in the process; the symbol
        // is `void at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)`, both enums
        // with an int8_t underlying type, passed like `i8` in the C calling convention.
        unsafe {
            let lib = libc::dlopen(c"libtorch_cpu.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let scope = if lib.is_null() { libc::RTLD_DEFAULT } else { lib };
            let sym =
                libc::dlsym(scope, c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE".as_ptr());
            if sym.is_null() {
                return false;
            }
            let f: extern "C" fn(i8, i8) = std::mem::transmute(sym);
            f(CUDA, scalar);
            true
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        kind == Kind::Half
    }
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
    fn autocast_is_a_cuda_setting() {
        assert!(!autocast_enabled(Precision::Bf16, Device::Cpu));
        assert!(!autocast_enabled(Precision::Off, Device::Cuda(0)));
        assert!(autocast_enabled(Precision::Fp16, Device::Cuda(0)));
    }
}
