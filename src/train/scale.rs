//! How big a notebook's experiments are: `smoke` (what the tests run: minutes on a 2-core CPU),
//! `demo` (a GPU or a patient CPU: enough epochs for the effects to show) or `full` (the seeds'
//! own hyperparameters on the real data), read from the `SELFSUP_SCALE` environment variable.
//!
//! ```
//! use selfsup::train::Scale;
//! let scale = Scale::Smoke;
//! let epochs = scale.pick(2, 30, 100); // one number per scale, side by side
//! assert_eq!(epochs, 2);
//! ```
use crate::error::{config_err, Result};
use serde::{Deserialize, Serialize};

/// The size of a notebook's experiments. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Tiny models and few steps on the embedded data: the whole notebook in minutes on a CPU.
    Smoke,
    /// Enough epochs for the effects to show: a GPU, or a patient CPU.
    Demo,
    /// The source documents' own hyperparameters, meant for real data on a GPU.
    Full,
}

impl Scale {
    /// The environment variable read by [`Scale::from_env`].
    pub const ENV: &'static str = "SELFSUP_SCALE";

    /// `SELFSUP_SCALE` (`smoke`, `demo` or `full`, any case); `smoke` when unset or empty.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for any other value.
    pub fn from_env() -> Result<Scale> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Scale::Smoke),
        }
    }

    /// `"smoke"`, `"demo"` or `"full"` (for run folders: `runs/<notebook>-<scale>`).
    pub fn name(self) -> &'static str {
        match self {
            Scale::Smoke => "smoke",
            Scale::Demo => "demo",
            Scale::Full => "full",
        }
    }

    /// The value for this scale among the three given in the order smoke, demo, full.
    pub fn pick<T>(self, smoke: T, demo: T, full: T) -> T {
        match self {
            Scale::Smoke => smoke,
            Scale::Demo => demo,
            Scale::Full => full,
        }
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scale {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Scale> {
        match s.trim().to_ascii_lowercase().as_str() {
            "smoke" => Ok(Scale::Smoke),
            "demo" => Ok(Scale::Demo),
            "full" => Ok(Scale::Full),
            other => Err(config_err!("{} must be smoke, demo or full, got '{other}'", Scale::ENV)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_names_and_rejects_others() {
        assert_eq!("smoke".parse::<Scale>().unwrap(), Scale::Smoke);
        assert_eq!(" Demo ".parse::<Scale>().unwrap(), Scale::Demo);
        assert_eq!("FULL".parse::<Scale>().unwrap(), Scale::Full);
        assert!("large".parse::<Scale>().is_err());
        assert_eq!(Scale::Demo.pick(1, 2, 3), 2);
        assert_eq!(Scale::Full.to_string(), "full");
    }
}
