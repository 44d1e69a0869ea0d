//! Self-checks for notebooks and homework: each taught idea is written once by hand, then checked
//! equal to the library call (`check::assert_close(&mine, &losses::info_nce(..)?, 1e-5)?`).
//!
//! A failed check is an `Err` with both values in the message, never a panic (a panic can take
//! the notebook's variables with it).
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Checks that `got` and `want` have the same shape and differ by at most `tol` anywhere
/// (absolute difference, compared in f64 on the CPU).
///
/// # Errors
/// [`Error::Shape`] when the shapes differ; [`Error::Data`] naming the largest difference, where
/// it is, and both values there, when it exceeds `tol` (or a value is NaN).
///
/// # Example
/// ```
/// use selfsup::{check, tch::Tensor};
/// let mine = Tensor::from_slice(&[1.0f32, 2.0]);
/// check::assert_close(&mine, &(&mine + 1e-7), 1e-5)?;
/// assert!(check::assert_close(&mine, &(&mine + 1.0), 1e-5).is_err());
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    let (sg, sw) = (got.size(), want.size());
    if sg != sw {
        return Err(Error::shape(
            "check::assert_close: the first tensor (must match the second)",
            format!("{sw:?}"),
            &sg,
        ));
    }
    if got.numel() == 0 {
        return Ok(());
    }
    let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1);
    let (g, w) = (cpu(got), cpu(want));
    let diff = (&g - &w).abs(); // [numel]
    let worst = diff.nan_to_num(f64::INFINITY, None, None).argmax(0, false).int64_value(&[]);
    let d = diff.double_value(&[worst]);
    if d.is_nan() || d > tol {
        return Err(Error::Data(format!(
            "check failed: the tensors differ by {d:.3e} > {tol:.1e} at flat index {worst} (got {:.8}, want {:.8})",
            g.double_value(&[worst]),
            w.double_value(&[worst])
        )));
    }
    Ok(())
}

/// Checks the shape of `t`.
///
/// # Errors
/// [`Error::Shape`] with both shapes.
///
/// # Example
/// ```
/// use selfsup::{check, tch::{Kind, Tensor}};
/// check::assert_shape(&Tensor::zeros([4, 17], (Kind::Float, tch::Device::Cpu)), &[4, 17])?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn assert_shape(t: &Tensor, shape: &[i64]) -> Result<()> {
    let s = t.size();
    if s != shape {
        return Err(Error::shape("check::assert_shape", format!("{shape:?}"), &s));
    }
    Ok(())
}

/// Checks that two numbers differ by at most `tol` (accuracies, losses read from a history).
///
/// # Errors
/// [`Error::Data`] with both numbers.
pub fn assert_close_f64(got: f64, want: f64, tol: f64) -> Result<()> {
    if (got - want).abs() <= tol {
        Ok(())
    } else {
        Err(Error::Data(format!("check failed: got {got}, want {want} (tolerance {tol:.1e})")))
    }
}
