//! Device choice: CPU here, CUDA where libtorch sees a GPU; the override variable is honoured.
use selfsup::prelude::*;

#[test]
fn device_matches_what_libtorch_sees_and_the_override_works() {
    let (device, why) = selfsup::device::choose_device();
    if tch::Cuda::is_available() {
        assert_eq!(device, Device::Cuda(0), "{why}");
    } else {
        assert_eq!(device, Device::Cpu, "{why}");
        assert!(why.contains("no CUDA"));
    }
    std::env::set_var("SELFSUP_DEVICE", "cpu");
    assert_eq!(selfsup::device::choose_device().0, Device::Cpu);
    std::env::remove_var("SELFSUP_DEVICE");
    assert!(selfsup::device::describe(Device::Cpu).contains("threads"));
    // Seeding makes libtorch's draws repeat.
    seed_everything(7);
    let a = Tensor::randn([4], (Kind::Float, Device::Cpu));
    seed_everything(7);
    let b = Tensor::randn([4], (Kind::Float, Device::Cpu));
    assert!(a.equal(&b));
}

/// The GPU side, reported as ignored where there is none; on a GPU machine:
/// `cargo test --test device -- --ignored`.
#[test]
#[ignore = "needs a CUDA GPU: on a GPU machine run `cargo test --test device -- --ignored`"]
fn cuda_is_seen_and_chosen_on_a_gpu_machine() {
    assert!(
        tch::Cuda::is_available(),
        "libtorch sees no CUDA device: is libtorch_cuda.so linked with -Wl,--no-as-needed (build.rs)?"
    );
    assert_eq!(selfsup::device::choose_device().0, Device::Cuda(0));
    let t = Tensor::ones([3], (Kind::Float, Device::Cuda(0)));
    assert_eq!(t.sum(Kind::Float).double_value(&[]), 3.0);
}
