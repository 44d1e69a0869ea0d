//! PyTorch's fused SGD kernel on the CPU (`torch.optim.SGD(..., fused=True)`, the ATen operator
//! `_fused_sgd_`), for [`Optimizer::step`](super::Optimizer::step).
//!
//! **Why.** An SGD step with momentum and weight decay written as tensor operations
//! (`d = g + wd·p; buf = μ·buf + d; p −= lr·buf`, as `torch.optim.SGD`'s default loop on the CPU)
//! reads and writes every weight-sized array about thirteen times and allocates a temporary per
//! variable; on a CPU the step is memory-bound, so for ResNet-18 (11 M weights) that is about
//! 21 ms of a 230 ms SimCLR step on 2 cores, against 8 ms fused (BENCHMARKS.md). The fused kernel reads the weight,
//! its gradient and its momentum once and writes the weight and the momentum once, with the same
//! formula in the same order of operations.
//!
//! **Why the `dlsym`.** tch 0.24 has no binding for `_fused_sgd_` (it takes lists of tensors), so
//! the dispatcher's entry point `at::_ops::_fused_sgd_::call` is looked up in the loaded
//! `libtorch_cpu.so` by its mangled name, as [`amp`](super::amp) does for CPU autocast: the name
//! encodes the whole signature, and the loaded libtorch must be the version the crate was built
//! against. When either check fails, [`api`] returns `None` and the optimizer keeps its loop
//! (the same numbers, more slowly).
//!
//! **The call.** On x86-64 and AArch64, `c10::ArrayRef<at::Tensor>` (a pointer and a length,
//! trivially copyable) is passed like the `#[repr(C)]` struct [`TensorList`]; an `at::Tensor` is
//! one pointer to its `TensorImpl`, which is what a tch tensor handle (`at::Tensor*`) points to;
//! `std::optional<at::Tensor>` is that pointer followed by an "engaged" flag. The kernel throws (a
//! C++ exception, which must not cross into Rust) on mismatched lists, dtypes or devices, so
//! [`fits`] admits only what it accepts: CPU, the same floating dtype, and one dense layout
//! (contiguous or channels-last, the same strides) for the weight, its gradient and its momentum
//! buffer.
use super::amp::{built_torch_version, loaded_torch_version, torch_symbol};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// `c10::ArrayRef<at::Tensor>`: the tensors' `TensorImpl` pointers, borrowed for the call.
#[repr(C)]
struct TensorList {
    data: *const *mut libc::c_void,
    len: usize,
}

/// `std::optional<at::Tensor>`, only ever empty here (no gradient scale, no found-inf flag).
#[repr(C, align(8))]
struct NoTensor {
    storage: *mut libc::c_void,
    engaged: bool,
}

/// `at::_ops::_fused_sgd_::call(TensorList self, TensorList grads, TensorList
/// momentum_buffer_list, double weight_decay, double momentum, double lr, double dampening, bool
/// nesterov, bool maximize, bool is_first_step, const optional<Tensor>& grad_scale, const
/// optional<Tensor>& found_inf)`.
type FusedSgdCall = unsafe extern "C" fn(
    TensorList,
    TensorList,
    TensorList,
    f64,
    f64,
    f64,
    f64,
    bool,
    bool,
    bool,
    *const NoTensor,
    *const NoTensor,
);

const SYMBOL: &str = "_ZN2at4_ops11_fused_sgd_4callEN3c108ArrayRefINS_6TensorEEES5_S5_ddddbbbRKSt8optionalIS4_ES9_";

/// The fused kernel, looked up once per process; `None` where it cannot be called safely (another
/// libtorch version, a platform without `dlsym`, not x86-64 or AArch64).
pub(crate) fn api() -> Option<FusedSgd> {
    static API: OnceLock<Option<FusedSgd>> = OnceLock::new();
    *API.get_or_init(|| {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return None;
        }
        // Checked against PyTorch 2.11's ATen/ops/_fused_sgd_ops.h: the same version only.
        if loaded_torch_version().as_deref().is_none_or(|v| v != built_torch_version()) {
            return None;
        }
        let sym = torch_symbol(SYMBOL, "at::_ops::_fused_sgd_::call").ok()?;
        // SAFETY: the mangled name encodes exactly the signature of `FusedSgdCall` (see the
        // module doc for how each argument is passed).
        Some(FusedSgd { call: unsafe { std::mem::transmute::<*mut libc::c_void, FusedSgdCall>(sym) } })
    })
}

/// A handle to libtorch's fused SGD kernel (see the module doc).
#[derive(Clone, Copy)]
pub(crate) struct FusedSgd {
    call: FusedSgdCall,
}

impl std::fmt::Debug for FusedSgd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FusedSgd")
    }
}

/// Whether the kernel takes this weight and gradient: both on the CPU, of one floating dtype it
/// computes in (f32, f64, bf16, f16), with the same shape and strides, dense (the kernel walks
/// the three arrays in memory order with the weight's offsets, so contiguous and channels-last
/// weights both qualify when their gradients are laid out alike).
pub(crate) fn fits(param: &Tensor, grad: &Tensor) -> bool {
    let kind = param.kind();
    if param.device() != Device::Cpu
        || grad.device() != Device::Cpu
        || !matches!(kind, Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half)
        || grad.kind() != kind
    {
        return false;
    }
    let (size, stride) = (param.size(), param.stride());
    size == grad.size() && stride == grad.stride() && dense(&size, &stride)
}

/// Whether `size` and `stride` cover a block of memory with no gap and no overlap (some
/// permutation of a contiguous layout, as channels-last is).
pub(crate) fn dense(size: &[i64], stride: &[i64]) -> bool {
    let mut dims: Vec<(i64, i64)> = size.iter().copied().zip(stride.iter().copied()).filter(|&(n, _)| n != 1).collect();
    dims.sort_by_key(|&(_, s)| s);
    let mut expected = 1;
    for (n, s) in dims {
        if s != expected {
            return false;
        }
        expected *= n;
    }
    true
}

/// One SGD step's hyper-parameters for a list of weights.
pub(crate) struct Update {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// The momentum buffers hold nothing yet: the kernel sets `buf = d` (PyTorch's first step).
    pub first: bool,
}

/// The weights of one [`Update`]: weight, gradient and momentum buffer (the buffer only when
/// momentum is not 0; each checked with [`fits`], the buffer laid out as its weight).
#[derive(Default)]
pub(crate) struct Batch {
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    pub bufs: Vec<Tensor>,
}

/// The `TensorImpl` pointers of `tensors`, as `at::Tensor` values borrowed for one call.
fn impls(tensors: &[Tensor]) -> Vec<*mut libc::c_void> {
    // SAFETY: a tch handle points to a live `at::Tensor`, whose only field is its TensorImpl pointer.
    tensors.iter().map(|t| unsafe { *(t.as_ptr() as *const *mut libc::c_void) }).collect()
}

impl FusedSgd {
    /// `p ← p − lr·v` with `v = μ·buf + (g + wd·p)` kept in `buf` (Nesterov: `v = d + μ·buf`),
    /// for every weight of `batch` at once, in place, as `torch.optim.SGD(fused=True)`.
    pub(crate) fn step(&self, batch: &Batch, u: &Update) {
        let n = batch.params.len();
        assert!(
            batch.grads.len() == n && batch.bufs.len() == if u.momentum != 0.0 { n } else { 0 },
            "fused SGD: {n} weights, {} gradients, {} momentum buffers",
            batch.grads.len(),
            batch.bufs.len()
        );
        if n == 0 {
            return;
        }
        let (p, g, b) = (impls(&batch.params), impls(&batch.grads), impls(&batch.bufs));
        let list = |v: &Vec<*mut libc::c_void>| TensorList { data: v.as_ptr(), len: v.len() };
        let none = NoTensor { storage: std::ptr::null_mut(), engaged: false };
        // SAFETY: the lists borrow tensors that `batch` keeps alive for the call; `fits` and the
        // assertion above rule out every input the kernel rejects by throwing.
        unsafe {
            (self.call)(
                list(&p),
                list(&g),
                list(&b),
                u.weight_decay,
                u.momentum,
                u.lr,
                0.0,
                u.nesterov,
                false,
                u.first,
                &none,
                &none,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_layouts_are_contiguous_or_permuted_blocks() {
        assert!(dense(&[4, 3, 2, 2], &[12, 4, 2, 1])); // contiguous
        assert!(dense(&[4, 3, 2, 2], &[12, 1, 6, 3])); // channels-last
        assert!(dense(&[5, 1], &[1, 7])); // a size-1 dimension's stride does not matter
        assert!(!dense(&[4, 3], &[6, 1])); // every other row: a gap
        assert!(!dense(&[4, 3], &[1, 1])); // overlapping
        assert!(!dense(&[4, 3], &[0, 1])); // expanded
        let cl = crate::train::amp::to_channels_last(&Tensor::zeros([4, 3, 2, 2], (Kind::Float, Device::Cpu)));
        assert!(fits(&cl, &cl.empty_like()) && !fits(&cl, &Tensor::zeros([4, 3, 2, 2], (Kind::Float, Device::Cpu))));
    }
}
