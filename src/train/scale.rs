//! How big a notebook's experiments are, one word for all its sizes:
//!
//! - `smoke`: what the tests run; minutes on a 2-core CPU, numbers near chance.
//! - `lesson`: the default a person meets; sized per notebook so that Run All on a laptop CPU shows
//!   the notebook's effect within a class period (each notebook's table gives the measured times).
//! - `demo`: enough epochs for the effects to show at the seeds' image sizes; a GPU.
//! - `full`: the seeds' own hyperparameters, meant for real data on a GPU.
//!
//! A notebook writes its scale in its configuration cell and [`Scale::choose`] lets the
//! `SELFSUP_SCALE` environment variable override it (the tests set `smoke`), saying so.
//!
//! ```
//! use selfsup::train::Scale;
//! let scale = Scale::Lesson;
//! let epochs = scale.pick(2, 12, 30, 100); // one number per scale, side by side
//! assert_eq!(epochs, 12);
//! ```
use crate::error::{config_err, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The size of a notebook's experiments. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Tiny models and few steps on the embedded data: the whole notebook in minutes on a CPU.
    Smoke,
    /// Sized per notebook so that a laptop CPU shows the notebook's effect within a class period.
    Lesson,
    /// Enough epochs for the effects to show at the seeds' image sizes: a GPU.
    Demo,
    /// The source documents' own hyperparameters, meant for real data on a GPU.
    Full,
}

impl Scale {
    /// The environment variable read by [`Scale::from_env`] and [`Scale::choose`].
    pub const ENV: &'static str = "SELFSUP_SCALE";
    /// The environment variable read by [`Scale::runs_folder`]: where every notebook's runs go.
    pub const RUNS_ENV: &'static str = "SELFSUP_RUNS";
    /// Where `./kit prepare` trained runs (read by [`Scale::runs_folder`] when the folder exists).
    pub const PREPARED_ENV: &'static str = "SELFSUP_PREPARED_RUNS";
    /// Every scale, smallest first.
    pub const ALL: [Scale; 4] = [Scale::Smoke, Scale::Lesson, Scale::Demo, Scale::Full];

    /// `SELFSUP_SCALE` (`smoke`, `lesson`, `demo` or `full`, any case); `smoke` when unset or
    /// empty. The command-line tools use it; notebooks use [`Scale::choose`].
    ///
    /// # Errors
    /// [`crate::Error::Config`] for any other value.
    pub fn from_env() -> Result<Scale> {
        Ok(Self::env_override()?.unwrap_or(Scale::Smoke))
    }

    /// The scale written in a notebook's configuration cell, unless `SELFSUP_SCALE` is set: then
    /// that one, with a printed line saying so (a student who edited the cell and sees another
    /// scale learns why). Switching scale is an edit of one line, no restart.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when `SELFSUP_SCALE` holds an unknown name.
    pub fn choose(written: Scale) -> Result<Scale> {
        let (scale, why) = Self::resolve(written, Self::env_override()?);
        println!("{why}");
        Ok(scale)
    }

    /// [`Scale::choose`] without the environment: the scale and the line that explains it.
    pub fn resolve(written: Scale, from_env: Option<Scale>) -> (Scale, String) {
        match from_env {
            Some(s) if s != written => {
                (s, format!("scale: {s} (SELFSUP_SCALE={s} overrides the `{written}` written in this cell)"))
            }
            Some(s) => (s, format!("scale: {s} (written in this cell and in SELFSUP_SCALE)")),
            None => (written, format!("scale: {written} (written in this cell; SELFSUP_SCALE is not set)")),
        }
    }

    fn env_override() -> Result<Option<Scale>> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// `"smoke"`, `"lesson"`, `"demo"` or `"full"` (for run folders: `<notebook>-<scale>`).
    pub fn name(self) -> &'static str {
        match self {
            Scale::Smoke => "smoke",
            Scale::Lesson => "lesson",
            Scale::Demo => "demo",
            Scale::Full => "full",
        }
    }

    /// The value for this scale among the four given in the order smoke, lesson, demo, full.
    pub fn pick<T>(self, smoke: T, lesson: T, demo: T, full: T) -> T {
        match self {
            Scale::Smoke => smoke,
            Scale::Lesson => lesson,
            Scale::Demo => demo,
            Scale::Full => full,
        }
    }

    /// Where a notebook keeps its runs at this scale:
    ///
    /// 1. `$SELFSUP_RUNS/<notebook>-<scale>` when `SELFSUP_RUNS` is set (the test runner and
    ///    `./kit prepare` set it);
    /// 2. else `$SELFSUP_PREPARED_RUNS/<notebook>-<scale>` when that folder exists: the runs
    ///    `./kit prepare` trained into the kit's cache, which the kit's Jupyter kernel points
    ///    `SELFSUP_PREPARED_RUNS` at, so the training cells load them (FAST mode);
    /// 3. else `runs/<notebook>-<scale>` next to the notebook.
    pub fn runs_folder(self, notebook: &str) -> PathBuf {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        self.runs_folder_in(notebook, var(Self::RUNS_ENV), var(Self::PREPARED_ENV))
    }

    /// [`Scale::runs_folder`] with the two variables given.
    pub fn runs_folder_in(self, notebook: &str, runs: Option<PathBuf>, prepared: Option<PathBuf>) -> PathBuf {
        let leaf = format!("{notebook}-{}", self.name());
        if let Some(base) = runs {
            return base.join(leaf);
        }
        if let Some(base) = prepared {
            if base.join(&leaf).is_dir() {
                return base.join(leaf);
            }
        }
        PathBuf::from("runs").join(leaf)
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
            "lesson" => Ok(Scale::Lesson),
            "demo" => Ok(Scale::Demo),
            "full" => Ok(Scale::Full),
            other => Err(config_err!("{} must be smoke, lesson, demo or full, got '{other}'", Scale::ENV)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_names_and_rejects_others() {
        assert_eq!("smoke".parse::<Scale>().unwrap(), Scale::Smoke);
        assert_eq!(" Lesson".parse::<Scale>().unwrap(), Scale::Lesson);
        assert_eq!(" Demo ".parse::<Scale>().unwrap(), Scale::Demo);
        assert_eq!("FULL".parse::<Scale>().unwrap(), Scale::Full);
        let err = "large".parse::<Scale>().unwrap_err().to_string();
        assert!(err.contains("smoke, lesson, demo or full") && err.contains("'large'"), "{err}");
        assert_eq!(Scale::Lesson.pick(1, 2, 3, 4), 2);
        assert_eq!(Scale::Demo.pick(1, 2, 3, 4), 3);
        assert_eq!(Scale::Full.to_string(), "full");
        assert_eq!(Scale::ALL.map(|s| s.pick(1, 2, 3, 4)), [1, 2, 3, 4]);
    }

    #[test]
    fn the_environment_overrides_the_written_scale_and_says_so() {
        let (s, why) = Scale::resolve(Scale::Lesson, Some(Scale::Smoke));
        assert_eq!(s, Scale::Smoke);
        assert!(why.contains("SELFSUP_SCALE=smoke overrides the `lesson`"), "{why}");
        let (s, why) = Scale::resolve(Scale::Lesson, None);
        assert_eq!(s, Scale::Lesson);
        assert!(why.contains("written in this cell"), "{why}");
        assert_eq!(Scale::resolve(Scale::Demo, Some(Scale::Demo)).0, Scale::Demo);
    }

    #[test]
    fn runs_go_to_selfsup_runs_then_to_prepared_runs_that_exist_then_next_to_the_notebook() {
        let prepared = std::env::temp_dir().join(format!("selfsup-prepared-{}", std::process::id()));
        std::fs::create_dir_all(prepared.join("01_moco-lesson")).unwrap();
        let s = Scale::Lesson;
        assert_eq!(s.runs_folder_in("01_moco", Some("/r".into()), Some(prepared.clone())), PathBuf::from("/r/01_moco-lesson"));
        assert_eq!(s.runs_folder_in("01_moco", None, Some(prepared.clone())), prepared.join("01_moco-lesson"));
        // Not prepared at this scale (or this notebook): next to the notebook.
        assert_eq!(Scale::Smoke.runs_folder_in("01_moco", None, Some(prepared.clone())), PathBuf::from("runs/01_moco-smoke"));
        assert_eq!(s.runs_folder_in("04_bt", None, Some(prepared.clone())), PathBuf::from("runs/04_bt-lesson"));
        assert_eq!(s.runs_folder_in("01_moco", None, None), PathBuf::from("runs/01_moco-lesson"));
        std::fs::remove_dir_all(prepared).unwrap();
    }
}
