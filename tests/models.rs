//! ResNet in torchvision's layout: parameter names equal torchvision's state_dict keys,
//! parameter counts equal torchvision's, and stage shapes follow the paper.
use selfsup::prelude::*;

mod common;

fn build(cfg: &ResNetConfig) -> (nn::VarStore, ResNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ResNet::new(&vs.root(), cfg).unwrap();
    (vs, net)
}

fn trainable(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[test]
fn parameter_counts_match_torchvision() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    // torchvision.models.resnet18() / resnet34() / resnet50(): sum(p.numel() for p in m.parameters()).
    for (depth, count) in [(Depth::R18, 11_689_512), (Depth::R34, 21_797_672), (Depth::R50, 25_557_032)] {
        let (vs, _) = build(&ResNetConfig { depth, num_classes: Some(1000), ..Default::default() });
        assert_eq!(trainable(&vs), count, "{depth:?}");
    }
}

#[test]
fn variable_names_are_torchvision_state_dict_keys() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    let (vs, _) = build(&ResNetConfig { depth: Depth::R18, num_classes: Some(10), ..Default::default() });
    let vars = vs.variables();
    // torchvision resnet18 has 102 state_dict entries besides the 20 num_batches_tracked buffers.
    assert_eq!(vars.len(), 102);
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.bias",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(vars.contains_key(key), "missing {key}");
    }
    assert!(!vars.contains_key("layer1.0.downsample.0.weight"), "layer1 keeps the resolution");
    let (vs50, _) = build(&ResNetConfig { depth: Depth::R50, ..Default::default() });
    let v50 = vs50.variables();
    assert!(v50.contains_key("layer1.0.conv3.weight") && v50.contains_key("layer1.0.downsample.0.weight"));
    assert_eq!(v50["layer3.0.conv2.weight"].size(), [256, 256, 3, 3]);
}

#[test]
fn stage_shapes_for_224_and_small_images() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    let (_vs, net) = build(&ResNetConfig { num_classes: Some(7), ..Default::default() });
    let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let expect = [
        (Stage::Stem, vec![2, 64, 112, 112]),
        (Stage::MaxPool, vec![2, 64, 56, 56]),
        (Stage::Layer1, vec![2, 64, 56, 56]),
        (Stage::Layer2, vec![2, 128, 28, 28]),
        (Stage::Layer3, vec![2, 256, 14, 14]),
        (Stage::Layer4, vec![2, 512, 7, 7]),
        (Stage::AvgPool, vec![2, 512]),
        (Stage::Fc, vec![2, 7]),
    ];
    for (stage, shape) in expect {
        assert_eq!(net.forward_until(&x, stage, false).unwrap().size(), shape, "{stage:?}");
    }
    let (_vs, small) = build(&ResNetConfig::default().small_images(true));
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(small.forward_until(&x, Stage::Layer1, false).unwrap().size(), [2, 64, 32, 32]);
    assert_eq!(small.forward_until(&x, Stage::Layer4, false).unwrap().size(), [2, 512, 4, 4]);
    assert_eq!(small.features(&x, false).unwrap().size(), [2, 512]);
    assert_eq!("max_pool".parse::<Stage>().unwrap(), Stage::MaxPool);
    assert!("layer5".parse::<Stage>().is_err());
}

#[test]
fn bad_inputs_give_clear_errors() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    let (_vs, net) = build(&ResNetConfig::default());
    let err = net.forward(&Tensor::zeros([2, 3, 32], (Kind::Float, Device::Cpu)), false).unwrap_err();
    assert!(err.to_string().contains("[N, 3, H, W]"), "{err}");
    let err = net.forward(&Tensor::zeros([1, 3, 64, 64], (Kind::Uint8, Device::Cpu)), false).unwrap_err();
    assert!(err.to_string().contains("float_batch"), "{err}");
    let err = net.forward_until(&Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu)), Stage::Fc, false).unwrap_err();
    assert!(err.to_string().contains("no fc"), "{err}");
}

#[test]
fn one_training_step_lowers_the_loss_on_a_fixed_batch() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    tch::manual_seed(0);
    let set = data::synthetic::load(Split::Train, &SyntheticConfig::tiny()).unwrap();
    let (vs, net) = build(&ResNetConfig::default().small_images(true).num_classes(10));
    let x = set.float_batch(0, 32, Some(&Normalization::imagenet()), Device::Cpu).unwrap();
    let y = set.label_batch(0, 32, Device::Cpu).unwrap();
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.05).unwrap();
    let before = net.forward(&x, true).unwrap().cross_entropy_for_logits(&y);
    // Over seeds 0..40 this first loss ranged from 2.50 to 3.56 (ln 10 = 2.30): the bound holds for
    // seed 0's init, which the lock above keeps other tests' draws from changing.
    assert!((before.double_value(&[]) - 10f64.ln()).abs() < 1.0, "random init is near ln 10");
    opt.backward_step(&before);
    let after = net.forward(&x, true).unwrap().cross_entropy_for_logits(&y);
    assert!(after.double_value(&[]) < before.double_value(&[]));
}

/// `forward_from` continues where `forward_until` stopped: from every stage, for both block types.
#[test]
fn forward_from_completes_forward_until() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    for depth in [Depth::R18, Depth::R50] {
        tch::manual_seed(0);
        let (_vs, net) = build(&ResNetConfig { depth, small_images: true, num_classes: Some(5), zero_init_residual: false, width: 64 });
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let want = net.forward_until(&x, Stage::Fc, false).unwrap();
        for stage in [Stage::MaxPool, Stage::Layer1, Stage::Layer2, Stage::Layer3, Stage::Layer4] {
            let h = net.forward_until(&x, stage, false).unwrap();
            let got = net.forward_from(&h, stage, Stage::Fc, false).unwrap();
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{depth:?} from {stage:?}: max difference {diff}");
        }
        let h2 = net.forward_until(&x, Stage::Layer2, false).unwrap();
        let h4 = net.forward_from(&h2, Stage::Layer2, Stage::Layer4, false).unwrap();
        assert!(h4.allclose(&net.forward_until(&x, Stage::Layer4, false).unwrap(), 1e-5, 1e-5, false));
        assert!(net.forward_from(&h2, Stage::Layer2, Stage::Layer1, false).is_err());
        assert!(net.forward_from(&h2, Stage::Stem, Stage::Fc, false).is_err());
    }
}

/// Channels-last (the engine's CUDA speed setting: NHWC strides for 4-D weights and inputs, as
/// `model.to(memory_format=torch.channels_last)`) changes memory order only: on the CPU, the same
/// network with its conv weights and input converted gives the same logits and the same
/// gradients, and the gradients keep the weights' shapes.
#[test]
fn channels_last_changes_memory_order_not_results() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    use selfsup::train::amp::to_channels_last;
    tch::manual_seed(0);
    let (vs, net) = build(&ResNetConfig { depth: Depth::R18, num_classes: Some(10), ..Default::default() });
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 3, 7, 9]);
    let run = |x: &Tensor| -> (Tensor, Vec<(String, Tensor)>) {
        for (_, mut v) in vs.variables() {
            if v.requires_grad() {
                v.zero_grad();
            }
        }
        let logits = net.forward(x, true).unwrap();
        logits.cross_entropy_for_logits(&y).backward();
        let mut grads: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).map(|(k, v)| (k, v.grad().copy())).collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        (logits.detach(), grads)
    };
    let (logits, grads) = run(&x);
    // Convert every 4-D weight in place, as the engine does.
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let cl = to_channels_last(&v);
                v.set_data(&cl);
            }
        }
    });
    let xc = to_channels_last(&x);
    assert_eq!(xc.size(), x.size());
    assert!(xc.stride()[1] == 1 && !xc.is_contiguous(), "NHWC strides: {:?}", xc.stride());
    assert!(vs.variables()["conv1.weight"].stride()[1] == 1, "the conv weights are channels-last now");
    let (logits_cl, grads_cl) = run(&xc);
    let logit_diff = (&logits - &logits_cl).abs().max().double_value(&[]);
    // Not bit-identical: NHWC convolutions are other kernels, summing in another order; the
    // differences are float32 round-off (measured: 7e-5 on logits of magnitude 5).
    let logit_scale = logits.abs().max().double_value(&[]);
    assert!(logit_diff <= 1e-4 * logit_scale, "logits differ by {logit_diff:e} (max |logit| {logit_scale:e})");
    for ((name, g), (_, g_cl)) in grads.iter().zip(&grads_cl) {
        assert_eq!(g.size(), g_cl.size(), "{name}");
        let scale = g.abs().max().double_value(&[]).max(1e-12);
        let diff = (g - g_cl).abs().max().double_value(&[]);
        assert!(diff <= 1e-3 * scale, "{name}: gradient differs by {diff:e} (max |g| {scale:e})");
    }
}

#[test]
fn a_narrow_resnet_keeps_names_and_scales_channels() {
    let _serial = common::serial(); // tests here draw from libtorch's generator; one depends on the draws
    // width 16: every stage has a quarter of the channels. Parameter count by hand (3x3 stem,
    // 10 classes): stem 3·16·9 + 2·16, the blocks' convs and BNs, 1x1 downsamples in layers 2–4,
    // fc 128·10 + 10 = 701,466 (the same formula gives torchvision's 11,689,512 at width 64).
    let cfg = ResNetConfig { small_images: true, num_classes: Some(10), ..Default::default() }.width(16);
    let (vs, net) = build(&cfg);
    assert_eq!(trainable(&vs), 701_466);
    assert_eq!(net.feature_dim(), 128);
    assert!(vs.variables().contains_key("layer2.0.downsample.0.weight"));
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(net.forward_until(&x, Stage::Layer4, false).unwrap().size(), [2, 128, 4, 4]);
    assert_eq!(net.forward_until(&x, Stage::AvgPool, false).unwrap().size(), [2, 128]);
    let err = ResNet::new(&nn::VarStore::new(Device::Cpu).root(), &cfg.clone().width(0)).unwrap_err().to_string();
    assert!(err.contains("width must be in 4..=1024"), "{err}");
}
