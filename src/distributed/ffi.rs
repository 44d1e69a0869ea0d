//! The C ABI of `csrc/distributed.cpp`, and owning wrappers that turn its error strings into
//! `Result<_, String>`. Everything `unsafe` about the shim lives in this file.
//!
//! Tensors cross as tch does it: `Tensor::as_ptr` is an `at::Tensor*` the shim borrows, and a
//! tensor the shim returns is a new heap `at::Tensor` that `Tensor::from_ptr` takes over.
use std::ffi::{c_char, c_int, c_void, CStr, CString};

use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn selfsup_dist_free_message(text: *mut c_char);
    fn selfsup_dist_nccl_compiled() -> c_int;
    fn selfsup_dist_store_new(
        host: *const c_char,
        port: u16,
        world_size: c_int,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn selfsup_dist_store_free(store: *mut c_void);
    fn selfsup_dist_gloo_new(
        store: *mut c_void,
        prefix: *const c_char,
        master_host: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn selfsup_dist_nccl_new(
        store: *mut c_void,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn selfsup_dist_group_free(group: *mut c_void);
    fn selfsup_dist_all_reduce_sum(group: *mut c_void, tensor: *mut C_tensor) -> *mut c_char;
    fn selfsup_dist_broadcast(group: *mut c_void, tensor: *mut C_tensor, root: c_int) -> *mut c_char;
    fn selfsup_dist_all_gather(group: *mut c_void, input: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn selfsup_dist_gather_with_grad(group: *mut c_void, input: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    fn selfsup_dist_barrier(group: *mut c_void) -> *mut c_char;
}

/// Ok for a null message, else the message (freed here).
fn check(message: *mut c_char) -> Result<(), String> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string malloc'ed by the shim, freed once here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    unsafe { selfsup_dist_free_message(message) };
    Err(text)
}

fn c_string(what: &str, value: &str) -> Result<CString, String> {
    CString::new(value).map_err(|_| format!("{what} {value:?} contains a NUL byte"))
}

/// Whether the shim was compiled with NCCL.
pub fn nccl_compiled() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { selfsup_dist_nccl_compiled() != 0 }
}

/// A `c10d::TCPStore` (client, and server on the rank that hosts it).
pub struct Store(*mut c_void);

// SAFETY: c10d's TCPStore is used from any thread by PyTorch itself; the handle is only freed in Drop.
unsafe impl Send for Store {}

impl Store {
    pub fn new(host: &str, port: u16, world_size: usize, is_server: bool, timeout_ms: i64) -> Result<Store, String> {
        let host = c_string("MASTER_ADDR", host)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: valid C string, plain values, and an out-pointer the shim fills on success.
        check(unsafe { selfsup_dist_store_new(host.as_ptr(), port, world_size as c_int, is_server as c_int, timeout_ms, &mut out) })?;
        Ok(Store(out))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by selfsup_dist_store_new, freed once.
        unsafe { selfsup_dist_store_free(self.0) }
    }
}

/// A c10d process group (Gloo or NCCL) with its rank, size and timeout.
pub struct Group(*mut c_void);

// SAFETY: c10d backends take collectives from any thread; the handle is reference-counted in C++.
unsafe impl Send for Group {}

impl Group {
    pub fn gloo(store: &Store, prefix: &str, master_host: &str, rank: usize, size: usize, timeout_ms: i64) -> Result<Group, String> {
        let prefix = c_string("store prefix", prefix)?;
        let host = c_string("MASTER_ADDR", master_host)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: a live store handle, valid C strings, an out-pointer filled on success.
        check(unsafe {
            selfsup_dist_gloo_new(store.0, prefix.as_ptr(), host.as_ptr(), rank as c_int, size as c_int, timeout_ms, &mut out)
        })?;
        Ok(Group(out))
    }

    pub fn nccl(store: &Store, prefix: &str, rank: usize, size: usize, timeout_ms: i64) -> Result<Group, String> {
        let prefix = c_string("store prefix", prefix)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: as in `gloo`.
        check(unsafe { selfsup_dist_nccl_new(store.0, prefix.as_ptr(), rank as c_int, size as c_int, timeout_ms, &mut out) })?;
        Ok(Group(out))
    }

    /// Sums `tensor` over ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), String> {
        // SAFETY: a live group and tch's at::Tensor*, borrowed for the call.
        check(unsafe { selfsup_dist_all_reduce_sum(self.0, tensor.as_mut_ptr()) })
    }

    /// Overwrites `tensor` with rank `root`'s.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), String> {
        // SAFETY: as in `all_reduce_sum`.
        check(unsafe { selfsup_dist_broadcast(self.0, tensor.as_mut_ptr(), root as c_int) })
    }

    /// `[B, ...]` on every rank to `[world * B, ...]` in rank order, without gradient.
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor, String> {
        let mut out = std::ptr::null_mut();
        // SAFETY: the input is only read; on success `out` is a new at::Tensor we now own.
        check(unsafe { selfsup_dist_all_gather(self.0, input.as_ptr() as *mut C_tensor, &mut out) })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// As `all_gather`, differentiable: see `Dist::gather_with_grad`.
    pub fn gather_with_grad(&self, input: &Tensor) -> Result<Tensor, String> {
        let mut out = std::ptr::null_mut();
        // SAFETY: as in `all_gather`.
        check(unsafe { selfsup_dist_gather_with_grad(self.0, input.as_ptr() as *mut C_tensor, &mut out) })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    pub fn barrier(&self) -> Result<(), String> {
        // SAFETY: a live group.
        check(unsafe { selfsup_dist_barrier(self.0) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by selfsup_dist_*_new; drops this handle's reference once.
        unsafe { selfsup_dist_group_free(self.0) }
    }
}
