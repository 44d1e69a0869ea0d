//! Seeded random tensors from the kit's own generator.
//!
//! Why not `tch::manual_seed` then `randn_like`: libtorch's default generator is one per process
//! and shared by every thread, so any draw another thread makes between the seeding and the draw
//! (a second notebook computation, another test of the same binary) changes the result. A
//! [`Draws`] owns a ChaCha8 stream, so the same seed gives the same numbers whatever else runs.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// A seeded stream of random numbers, turned into tensors shaped like existing ones.
pub(crate) struct Draws(ChaCha8Rng);

impl Draws {
    /// The stream for `seed`.
    pub(crate) fn new(seed: u64) -> Draws {
        Draws(ChaCha8Rng::seed_from_u64(seed))
    }

    /// `n` draws of N(0, std²) (Box–Muller, one normal per pair of uniforms).
    pub(crate) fn normal(&mut self, n: usize, std: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u1: f64 = self.0.random::<f64>().max(f64::MIN_POSITIVE); // (0, 1): ln is finite
                let u2: f64 = self.0.random();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    }

    /// Standard normal draws with the shape, dtype and device of `like`.
    pub(crate) fn normal_like(&mut self, like: &Tensor) -> Tensor {
        let values = self.normal(like.numel(), 1.0);
        Self::shaped_like(&values, like)
    }

    /// Draws uniform on `[low, high)` with the shape, dtype and device of `like`.
    pub(crate) fn uniform_like(&mut self, like: &Tensor, low: f64, high: f64) -> Tensor {
        let values: Vec<f64> = (0..like.numel()).map(|_| low + (high - low) * self.0.random::<f64>()).collect();
        Self::shaped_like(&values, like)
    }

    fn shaped_like(values: &[f64], like: &Tensor) -> Tensor {
        Tensor::from_slice(values).view(like.size().as_slice()).to_kind(like.kind()).to_device(like.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_seed_gives_the_same_draws_and_the_shape_of_the_model() {
        let like = Tensor::zeros([3, 2, 5], (Kind::Float, Device::Cpu));
        let a = Draws::new(7).normal_like(&like);
        let b = Draws::new(7).normal_like(&like);
        assert_eq!(a.size(), vec![3, 2, 5]);
        assert_eq!(a.kind(), Kind::Float);
        assert!(a.equal(&b));
        assert!(!a.equal(&Draws::new(8).normal_like(&like)));
        // Libtorch's global generator does not enter: reseeding it changes nothing.
        tch::manual_seed(1);
        let c = Draws::new(7).normal_like(&like);
        assert!(a.equal(&c));
        let u = Draws::new(3).uniform_like(&like.to_kind(Kind::Double), -1.0, 1.0);
        assert_eq!(u.kind(), Kind::Double);
        assert!(u.min().double_value(&[]) >= -1.0 && u.max().double_value(&[]) < 1.0);
    }

    #[test]
    fn normal_draws_have_the_asked_mean_and_spread() {
        let v = Draws::new(0).normal(20_000, 2.0);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // Standard errors: 2/√20000 ≈ 0.014 for the mean, about 0.04 for the variance 4.
        assert!(mean.abs() < 0.06, "mean {mean}");
        assert!((var - 4.0).abs() < 0.2, "variance {var}");
    }
}
