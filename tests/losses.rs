//! The losses against values computed by hand and by PyTorch 2.11 on tiny tensors, and their
//! properties (ln(2N−1), ln(K+1), symmetry, degenerate values).
use selfsup::losses::{
    barlow_twins, barlow_twins_terms, byol_loss, cross_correlation, info_nce, info_nce_logits, l2_normalize,
    negative_cosine, normalized_mse, nt_xent, off_diagonal, BarlowTwinsLossConfig, InfoNceConfig, NtXentConfig,
};
use selfsup::tch::{Device, Kind, Tensor};
use selfsup::Error;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn t(rows: &[&[f32]]) -> Tensor {
    let cols = rows[0].len() as i64;
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, cols])
}

fn scalar(x: &Tensor) -> f64 {
    x.double_value(&[])
}

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, expected {want} (tolerance {tol})");
}

// q, k: [2, 3]; queue: [3, 4] with unit columns; T = 0.5. PyTorch:
//   qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
//   l_pos = torch.einsum('nc,nc->n', [qn, kn]).unsqueeze(-1)
//   l_neg = torch.einsum('nc,ck->nk', [qn, queue])
//   logits = torch.cat([l_pos, l_neg], dim=1) / T
//   F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))   # 1.108028531074524
fn moco_example() -> (Tensor, Tensor, Tensor) {
    let q = t(&[&[1., 2., 2.], &[0., 3., 4.]]);
    let k = t(&[&[2., 1., 2.], &[0., 4., 3.]]);
    let queue = t(&[&[1., 0., 0., 0.6], &[0., 1., 0., 0.8], &[0., 0., 1., 0.]]);
    (q, k, queue)
}

#[test]
fn info_nce_logits_put_the_positive_first() -> TestResult {
    let (q, k, queue) = moco_example();
    let logits = info_nce_logits(&l2_normalize(&q)?, &l2_normalize(&k)?, &queue, 0.5)?;
    assert_eq!(logits.size(), [2, 5]);
    // Row 0: q = (1,2,2)/3, k = (2,1,2)/3 → q·k = 8/9, / 0.5 = 16/9; q·queue = (1/3, 2/3, 2/3, (0.6+1.6)/3) / 0.5.
    let want = [16.0 / 9.0, 2.0 / 3.0, 4.0 / 3.0, 4.0 / 3.0, 2.2 / 1.5];
    // Row 1: q = (0,.6,.8), k = (0,.8,.6) → 0.96 / 0.5 = 1.92; q·queue = (0, .6, .8, .48) / 0.5.
    let want1 = [1.92, 0.0, 1.2, 1.6, 0.96];
    let got = Vec::<f64>::try_from(logits.to_kind(Kind::Double).flatten(0, -1))?;
    for (i, (g, w)) in got.iter().zip(want.iter().chain(want1.iter())).enumerate() {
        assert_close(*g, *w, 1e-6, &format!("logit {i}"));
    }
    Ok(())
}

#[test]
fn info_nce_matches_pytorch() -> TestResult {
    let (q, k, queue) = moco_example();
    let loss = info_nce(&q, &k, &queue, &InfoNceConfig { temperature: 0.5 })?;
    assert_close(scalar(&loss), 1.108028531074524, 1e-6, "info_nce");
    Ok(())
}

#[test]
fn info_nce_is_ln_k_plus_one_when_all_logits_are_equal() -> TestResult {
    // q = k = e1 and every queued key e1: all 1+K logits equal → −log(1/(K+1)).
    let big_k = 7;
    let e1 = t(&[&[1., 0., 0.], &[1., 0., 0.]]);
    let queue = Tensor::zeros([3, big_k], (Kind::Float, Device::Cpu));
    let _ = queue.narrow(0, 0, 1).fill_(1.0);
    for temperature in [0.07, 0.2, 1.0] {
        let loss = info_nce(&e1, &e1, &queue, &InfoNceConfig { temperature })?;
        assert_close(scalar(&loss), ((big_k + 1) as f64).ln(), 1e-5, "info_nce with equal logits");
    }
    Ok(())
}

#[test]
fn info_nce_checks_its_inputs() {
    let (q, k, queue) = moco_example();
    let cfg = InfoNceConfig::default();
    assert!(matches!(info_nce(&q, &k.narrow(0, 0, 1), &queue, &cfg), Err(Error::Shape { .. })));
    assert!(matches!(info_nce(&q, &k, &queue.tr(), &cfg), Err(Error::Shape { .. })));
    assert!(matches!(info_nce(&q, &k, &queue, &InfoNceConfig { temperature: 0.0 }), Err(Error::Config(_))));
}

// z1, z2: [2, 3], T = 0.5. PyTorch:
//   z = F.normalize(torch.cat([z1, z2]), dim=1); sim = z @ z.T / T
//   sim.fill_diagonal_(float('-inf'))
//   F.cross_entropy(sim, torch.tensor([2, 3, 0, 1]))   # 1.0036723613739014
#[test]
fn nt_xent_matches_pytorch() -> TestResult {
    let z1 = t(&[&[1., 0., 1.], &[0., 2., 1.]]);
    let z2 = t(&[&[1., 1., 0.], &[1., 2., 2.]]);
    let loss = nt_xent(&z1, &z2, &NtXentConfig { temperature: 0.5 })?;
    assert_close(scalar(&loss), 1.0036723613739014, 1e-6, "nt_xent");
    // Swapping the views only reorders the 2N anchors.
    let swapped = nt_xent(&z2, &z1, &NtXentConfig { temperature: 0.5 })?;
    assert_close(scalar(&swapped), scalar(&loss), 1e-6, "nt_xent symmetry");
    Ok(())
}

#[test]
fn nt_xent_is_ln_2n_minus_one_when_all_similarities_are_equal() -> TestResult {
    // Every projection the same direction: each anchor sees 2N−1 equal logits, one of them positive.
    for n in [1i64, 2, 5] {
        let z = Tensor::ones([n, 4], (Kind::Float, Device::Cpu));
        let loss = nt_xent(&z, &(&z * 3.0), &NtXentConfig { temperature: 0.1 })?;
        assert_close(scalar(&loss), ((2 * n - 1) as f64).ln(), 1e-5, &format!("nt_xent, N = {n}"));
    }
    Ok(())
}

#[test]
fn nt_xent_checks_its_inputs() {
    let z = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
    let cfg = NtXentConfig::default();
    assert!(matches!(nt_xent(&z, &z.narrow(1, 0, 3), &cfg), Err(Error::Shape { .. })));
    assert!(matches!(nt_xent(&z.flatten(0, -1), &z.flatten(0, -1), &cfg), Err(Error::Shape { .. })));
    assert!(matches!(nt_xent(&z, &z, &NtXentConfig { temperature: -1.0 }), Err(Error::Config(_))));
}

#[test]
fn normalized_mse_by_hand() -> TestResult {
    // Row 0: cos((1,2,2), (2,2,1)) = 8/9 → 2 − 16/9 = 2/9. Row 1: cos((3,0,4), (0,0,1)) = 4/5 → 0.4.
    // Mean: (2/9 + 0.4)/2 = 0.3111… (PyTorch: (2 - 2*(F.normalize(p,dim=1)*F.normalize(z,dim=1)).sum(1)).mean()
    // = 0.3111110329627991).
    let p = t(&[&[1., 2., 2.], &[3., 0., 4.]]);
    let z = t(&[&[2., 2., 1.], &[0., 0., 1.]]);
    assert_close(scalar(&normalized_mse(&p, &z)?), (2.0 / 9.0 + 0.4) / 2.0, 1e-6, "normalized_mse");
    assert_close(scalar(&negative_cosine(&p, &z)?), -(8.0 / 9.0 + 0.8) / 2.0, 1e-6, "negative_cosine");
    Ok(())
}

#[test]
fn byol_loss_is_zero_for_identical_directions_and_four_for_opposite() -> TestResult {
    let z = t(&[&[1., 2., 2.], &[3., 0., 4.], &[-1., 0.5, 0.]]);
    let same = byol_loss(&(&z * 2.0), &(&z * 0.5), &z, &z)?;
    assert_close(scalar(&same), 0.0, 1e-6, "identical directions");
    let opposite = normalized_mse(&(-&z), &z)?;
    assert_close(scalar(&opposite), 4.0, 1e-6, "opposite directions, one way");
    let both = byol_loss(&(-&z), &(-&z), &z, &z)?;
    assert_close(scalar(&both), 8.0, 1e-6, "opposite directions, both ways");
    Ok(())
}

#[test]
fn byol_loss_is_the_sum_of_both_directions_and_stops_the_target_gradient() -> TestResult {
    let p1 = t(&[&[1., 2., 2.], &[3., 0., 4.]]).set_requires_grad(true);
    let p2 = t(&[&[0., 1., 2.], &[1., 1., 1.]]).set_requires_grad(true);
    let z1 = t(&[&[2., 2., 1.], &[0., 0., 1.]]).set_requires_grad(true);
    let z2 = t(&[&[1., 0., 0.], &[0., 1., 1.]]).set_requires_grad(true);
    let loss = byol_loss(&p1, &p2, &z1, &z2)?;
    let sum = normalized_mse(&p1, &z2)? + normalized_mse(&p2, &z1)?;
    assert_close(scalar(&loss), scalar(&sum), 1e-6, "symmetric = sum of both directions");
    loss.backward();
    assert!(p1.grad().defined() && p2.grad().defined(), "the predictions get gradients");
    assert!(!z1.grad().defined() && !z2.grad().defined(), "the targets are behind a stop-gradient");
    Ok(())
}

#[test]
fn off_diagonal_keeps_the_other_entries_in_order() -> TestResult {
    let c = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([4, 4]);
    let off = Vec::<f32>::try_from(off_diagonal(&c)?)?;
    assert_eq!(off, vec![1., 2., 3., 4., 6., 7., 8., 9., 11., 12., 13., 14.]);
    assert!(matches!(off_diagonal(&c.narrow(0, 0, 3)), Err(Error::Shape { .. })));
    Ok(())
}

// a, b: [4, 3]. PyTorch (the official code's normalisation):
//   bn = torch.nn.BatchNorm1d(3, affine=False); bn.train()
//   c = bn(a).T @ bn(b) / 4
//   on = torch.diagonal(c).add(-1).pow(2).sum()      # 1.6142486333847046
//   off = off_diagonal(c).pow(2).sum()               # 2.13204288482666
//   on + 5e-3 * off                                  # 1.6249088048934937
#[test]
fn barlow_twins_matches_pytorch() -> TestResult {
    let a = t(&[&[1., 2., 0.], &[2., 0., 1.], &[0., 1., 3.], &[3., 1., 1.]]);
    let b = t(&[&[1., 1., 1.], &[2., 1., 0.], &[0., 2., 2.], &[1., 0., 3.]]);
    let cfg = BarlowTwinsLossConfig::default();
    let c = cross_correlation(&a, &b, cfg.eps)?;
    assert_close(c.double_value(&[0, 0]), 0.63244671, 1e-6, "C[0, 0]");
    assert_close(c.double_value(&[2, 1]), 0.64887643, 1e-6, "C[2, 1]");
    let (on, off) = barlow_twins_terms(&c)?;
    assert_close(scalar(&on), 1.6142486333847046, 1e-5, "on-diagonal term");
    assert_close(scalar(&off), 2.13204288482666, 1e-5, "off-diagonal term");
    assert_close(scalar(&barlow_twins(&a, &b, &cfg)?), 1.6249088048934937, 1e-5, "barlow_twins");
    Ok(())
}

#[test]
fn barlow_twins_is_zero_for_decorrelated_identical_views() -> TestResult {
    // Columns with mean 0, variance 1, orthogonal: C = I·(1/(1+ε)) ≈ I, so the loss ≈ D·ε².
    let z = t(&[&[1., 1.], &[1., -1.], &[-1., 1.], &[-1., -1.]]);
    let loss = barlow_twins(&z, &z, &BarlowTwinsLossConfig::default())?;
    assert_close(scalar(&loss), 0.0, 1e-8, "decorrelated identical views");
    Ok(())
}

#[test]
fn barlow_twins_is_d_for_a_collapsed_representation() -> TestResult {
    // Every sample the same vector: the normalised projections are 0, C = 0, loss = Σ_i (1 − 0)² = D.
    let d = 6;
    let z = Tensor::ones([5, d], (Kind::Float, Device::Cpu)) * 0.3;
    let loss = barlow_twins(&z, &z, &BarlowTwinsLossConfig::default())?;
    assert_close(scalar(&loss), d as f64, 1e-6, "collapsed representation");
    Ok(())
}

#[test]
fn barlow_twins_checks_its_inputs() {
    let z = Tensor::ones([1, 4], (Kind::Float, Device::Cpu));
    let cfg = BarlowTwinsLossConfig::default();
    assert!(matches!(barlow_twins(&z, &z, &cfg), Err(Error::Shape { .. })), "one sample has no batch statistics");
    let z2 = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
    assert!(matches!(barlow_twins(&z2, &z2.narrow(0, 0, 2), &cfg), Err(Error::Shape { .. })));
    let bad = BarlowTwinsLossConfig { off_diagonal_weight: -1.0, ..cfg };
    assert!(matches!(barlow_twins(&z2, &z2, &bad), Err(Error::Config(_))));
}
