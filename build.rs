//! Build script: make the crate's own binaries, tests and examples see CUDA and find libtorch.
//!
//! torch-sys already asks the linker for `libtorch_cuda.so`, but with the default `--as-needed`
//! the linker drops it (no symbol of it is referenced directly), so `tch::Cuda::is_available()`
//! is false on a GPU machine. Linking it with `--no-as-needed` keeps it. These arguments reach
//! only this package's own targets; code compiled elsewhere (an evcxr notebook cell) loads the
//! library at run time instead, see `src/device.rs`.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Set by torch-sys (`links = "tch"`), from the python that LIBTORCH_USE_PYTORCH pointed at.
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-env=SELFSUP_LIBTORCH_LIB={}", lib.display());
    // torch/version.py holds e.g. `__version__ = '2.11.0+cu130'`.
    let version = std::fs::read_to_string(lib.join("..").join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string()))
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SELFSUP_TORCH_VERSION={version}");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // Binaries find libtorch without LD_LIBRARY_PATH on the machine that built them;
    // LD_LIBRARY_PATH still wins elsewhere (RUNPATH), as on the GPU machine.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
