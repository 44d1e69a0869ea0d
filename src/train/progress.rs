//! A one-line progress bar rewritten with `\r` (works in a terminal and in a notebook's stdout),
//! printed at most every `log_every` steps and at most about once a second, plus one summary
//! line per epoch (EVCXR.md: print sparingly). The line itself is written by
//! [`crate::progress::StatusLine`], the printer the downloader uses too.
pub(crate) use crate::progress::duration;
use crate::progress::StatusLine;
use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    every: usize,
    started: Instant,
    first_step: usize,
    last_print: Option<Instant>,
    last_step: usize,
    line: StatusLine,
}

/// What the bar shows.
pub(crate) struct Line {
    pub epoch: usize,
    pub epochs: usize,
    pub step_in_epoch: usize,
    pub steps_per_epoch: usize,
    pub step: usize,
    pub stop_at: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_sec: f64,
}

impl Progress {
    pub(crate) fn new(enabled: bool, every: usize, first_step: usize) -> Self {
        Progress {
            enabled,
            every: every.max(1),
            started: Instant::now(),
            first_step,
            last_print: None,
            last_step: first_step,
            line: StatusLine::default(),
        }
    }

    /// Redraws the bar if `every` steps and ~1 s passed since the last draw (or `force`).
    pub(crate) fn step(&mut self, l: &Line, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let due = l.step + 1 >= self.last_step + self.every
            && self.last_print.is_none_or(|t| now.duration_since(t).as_secs_f64() >= 1.0);
        if !(due || force) {
            return;
        }
        self.last_print = Some(now);
        self.last_step = l.step + 1;
        let done = (l.step + 1).saturating_sub(self.first_step).max(1) as f64;
        let eta = self.started.elapsed().as_secs_f64() / done * l.stop_at.saturating_sub(l.step + 1) as f64;
        let frac = (l.step_in_epoch + 1) as f64 / l.steps_per_epoch.max(1) as f64;
        let filled = (frac * 20.0).round() as usize;
        let bar: String = "█".repeat(filled.min(20)) + &"·".repeat(20 - filled.min(20));
        let text = format!(
            "epoch {}/{} {bar} {}/{} | step {}/{} | loss {:.4} | lr {:.3e} | {:.0} img/s | ETA {}",
            l.epoch + 1,
            l.epochs,
            l.step_in_epoch + 1,
            l.steps_per_epoch,
            l.step + 1,
            l.stop_at,
            l.loss,
            l.lr,
            l.images_per_sec,
            duration(eta)
        );
        self.line.redraw(&text);
    }

    /// A line that stays (epoch summary, resume notice, warning).
    pub(crate) fn message(&mut self, text: &str) {
        if self.enabled {
            self.line.finish(text);
        }
    }
}

impl Progress {
    /// A warning: printed on its own line even when the bar is off.
    pub(crate) fn warn(&mut self, text: &str) {
        if self.enabled {
            self.line.finish(text);
        } else {
            println!("{text}");
        }
    }
}
