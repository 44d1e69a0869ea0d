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
    #[cfg(feature = "distributed")]
    distributed::compile(&lib);
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

/// The c10d shim: `csrc/distributed.cpp` compiled the way torch-sys compiles its own wrapper
/// (`libtch/torch_api.cpp`: the torch headers, `-std=c++17`, the wheel's
/// `_GLIBCXX_USE_CXX11_ABI`, `-DGLOG_USE_GLOG_EXPORT`), plus the Gloo headers the wheel lacks
/// (`csrc/third_party/`). NCCL is compiled in only when the CUDA and NCCL headers are found.
#[cfg(feature = "distributed")]
mod distributed {
    use std::env;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub fn compile(lib: &Path) {
        for path in ["csrc/distributed.cpp", "csrc/third_party"] {
            println!("cargo:rerun-if-changed={path}");
        }
        for var in ["LIBTORCH_CXX11_ABI", "LIBTORCH_USE_PYTORCH", "SELFSUP_NCCL", "SELFSUP_CUDA_INCLUDE", "CUDA_HOME"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let torch = lib.parent().unwrap_or(lib).to_path_buf(); // site-packages/torch
        let include = torch.join("include");
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include("csrc/third_party")
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
            .flag("-DGLOG_USE_GLOG_EXPORT")
            .define("USE_C10D_GLOO", None)
            .file("csrc/distributed.cpp");
        let nccl = nccl_includes(&torch, lib);
        match &nccl {
            Ok(dirs) => {
                build.includes(dirs).define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("SELFSUP_NCCL", None);
                // c10/cuda/CUDAEvent.h aligns by std::hardware_destructive_interference_size.
                build.flag_if_supported("-Wno-interference-size");
                println!("cargo:rustc-env=SELFSUP_NCCL_BUILD=compiled");
            }
            Err(why) => println!("cargo:rustc-env=SELFSUP_NCCL_BUILD=not compiled: {why}"),
        }
        build.compile("selfsup_dist");
        println!("cargo:rustc-link-search=native={}", lib.display());
        if nccl.is_ok() {
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
        }
        println!("cargo:rustc-link-lib=dylib=torch_cpu");
        println!("cargo:rustc-link-lib=dylib=c10");
    }

    /// torch-sys's rule: `LIBTORCH_CXX11_ABI` if set, else what the venv's torch was built with
    /// when `LIBTORCH_USE_PYTORCH` is set, else 1.
    fn cxx11_abi() -> String {
        if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
            return abi;
        }
        if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
            let python = if env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
            let out = Command::new(python)
                .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
                .output()
                .unwrap_or_else(|e| panic!("distributed feature: running {python} to ask torch its C++ ABI: {e}"));
            let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if abi == "0" || abi == "1" {
                return abi;
            }
            panic!("distributed feature: {python} did not report torch's C++ ABI: {}", String::from_utf8_lossy(&out.stderr));
        }
        "1".to_string()
    }

    /// The include folders ProcessGroupNCCL.hpp needs: the CUDA runtime (with `crt/` and CCCL's
    /// `nv/target`, which the cu13 runtime wheel does not ship: `pip install nvidia-cuda-crt
    /// nvidia-cuda-cccl` of the runtime's version) and `nccl.h`. Searched in
    /// `SELFSUP_CUDA_INCLUDE` (folders separated by `:`), the venv's `nvidia/*/include`,
    /// `$CUDA_HOME/include` and `/usr/local/cuda/include`. `SELFSUP_NCCL=0` leaves NCCL out.
    fn nccl_includes(torch: &Path, lib: &Path) -> Result<Vec<PathBuf>, String> {
        if env::var("SELFSUP_NCCL").as_deref() == Ok("0") {
            return Err("SELFSUP_NCCL=0".into());
        }
        if !lib.join("libtorch_cuda.so").exists() {
            return Err(format!("no libtorch_cuda.so in {} (a CPU-only torch)", lib.display()));
        }
        let mut candidates: Vec<PathBuf> = env::var("SELFSUP_CUDA_INCLUDE")
            .map(|dirs| env::split_paths(&dirs).collect())
            .unwrap_or_default();
        if let Some(site) = torch.parent() {
            if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
                let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).filter(|p| p.is_dir()).collect();
                dirs.sort();
                candidates.extend(dirs);
            }
        }
        if let Some(cuda) = env::var_os("CUDA_HOME") {
            candidates.push(PathBuf::from(cuda).join("include"));
        }
        candidates.push(PathBuf::from("/usr/local/cuda/include"));
        let mut found = Vec::new();
        for header in ["cuda_runtime.h", "crt/host_config.h", "nv/target", "nccl.h"] {
            match candidates.iter().find(|dir| dir.join(header).exists()) {
                Some(dir) if !found.contains(dir) => found.push(dir.clone()),
                Some(_) => {}
                None => return Err(format!("{header} not found (looked in SELFSUP_CUDA_INCLUDE, the venv's nvidia/*/include, CUDA_HOME, /usr/local/cuda)")),
            }
        }
        Ok(found)
    }
}
