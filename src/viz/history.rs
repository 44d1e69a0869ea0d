//! Figures of a training run: [`History::plot`] (the learning curve, with the accuracies a run
//! recorded) and [`History::plot_z_std`] (the collapse check). Inherent methods of `train`'s
//! [`History`], kept here because `train` must not import `viz`; `history.plot("…")?` reads the
//! same in a notebook.
use super::curves::{line_plot, line_plot_two_axes, LinePlotConfig, Series};
use super::figure::Figure;
use crate::error::{Error, Result};
use crate::train::History;

impl History {
    /// The learning curve as a figure that renders inline: the loss of every step, the mean
    /// loss of each epoch and, for supervised runs, the test loss of each epoch (left axis,
    /// against the step), and, when the run recorded them, the train accuracy, the test accuracy
    /// and the online kNN accuracy of each epoch in % (right axis, dashed, at the epoch's last
    /// step). Train accuracy next to test accuracy, and test loss next to the training loss, is
    /// what shows memorisation: the train curve climbs while the test curve stays flat.
    ///
    /// # Errors
    /// [`Error::Data`] when the history has no step, or a recorded value is NaN or infinite.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(history: &selfsup::train::History) -> selfsup::Result<()> {
    /// let fig = history.plot("MoCo v2 pre-training")?; // the last expression of a cell shows it
    /// # Ok(()) }
    /// ```
    pub fn plot(&self, title: &str) -> Result<Figure> {
        if self.steps.is_empty() {
            return Err(Error::Data("History::plot: the history has no step to plot; train first".into()));
        }
        let points = |name: &str, v: Vec<(f64, f64)>| {
            Series::new(name, v.iter().map(|p| p.0).collect(), v.iter().map(|p| p.1).collect())
        };
        // x of an epoch record: one past the last step of that epoch.
        let epoch_end =
            |epoch: usize| self.steps.iter().filter(|s| s.epoch == epoch).map(|s| s.step + 1).max().unwrap_or(0) as f64;
        let mut left =
            vec![points("loss per step", self.steps.iter().map(|s| ((s.step + 1) as f64, s.loss)).collect())];
        if !self.epochs.is_empty() {
            left.push(points(
                "mean loss per epoch",
                self.epochs.iter().map(|e| (epoch_end(e.epoch), e.mean_loss)).collect(),
            ));
        }
        let test_losses = self.test_losses();
        if !test_losses.is_empty() {
            left.push(points("test loss per epoch", test_losses.into_iter().map(|(e, l)| (epoch_end(e), l)).collect()));
        }
        let percent = |v: Vec<(usize, f64)>| v.into_iter().map(|(e, a)| (epoch_end(e), 100.0 * a)).collect::<Vec<_>>();
        let mut right = vec![];
        for (name, v) in [
            ("train accuracy %", self.train_accuracies()),
            ("test accuracy %", self.test_accuracies()),
            ("kNN accuracy %", self.knn_accuracies()),
        ] {
            if !v.is_empty() {
                right.push(points(name, percent(v)));
            }
        }
        let cfg = LinePlotConfig::new(title, "step", "loss");
        if right.is_empty() {
            line_plot(&left, &cfg)
        } else {
            line_plot_two_axes(&left, &right, &cfg.y2_label("accuracy (%)"))
        }
    }

    /// The loss (left axis) next to the standard deviation of the ℓ2-normalised projections z
    /// (right axis) with the healthy level 1/√`z_dim` as a dashed line (B7, the homework's
    /// collapse check for BYOL): a collapsed representation maps every image to the same z, and
    /// its std falls to 0 while the loss may still look fine.
    ///
    /// # Errors
    /// [`Error::Data`] when the history has no step or no recorded std(z) (the method returned
    /// no projections), or `z_dim` is 0.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(history: &selfsup::train::History) -> selfsup::Result<()> {
    /// let fig = history.plot_z_std("BYOL pre-training", 256)?; // projection dimension 256
    /// # Ok(()) }
    /// ```
    pub fn plot_z_std(&self, title: &str, z_dim: usize) -> Result<Figure> {
        let stds = self.z_stds();
        if self.steps.is_empty() || stds.is_empty() {
            return Err(Error::Data(
                "History::plot_z_std: no std(z) recorded; train a method that returns its projections first".into(),
            ));
        }
        if z_dim == 0 {
            return Err(Error::Data("History::plot_z_std: z_dim must be at least 1".into()));
        }
        let xs = |v: &[(usize, f64)]| v.iter().map(|p| (p.0 + 1) as f64).collect::<Vec<_>>();
        let ys = |v: &[(usize, f64)]| v.iter().map(|p| p.1).collect::<Vec<_>>();
        let losses = self.losses();
        let healthy = 1.0 / (z_dim as f64).sqrt();
        let (first, last) = (xs(&stds)[0], *xs(&stds).last().unwrap_or(&1.0));
        let left = vec![Series::new("loss per step", xs(&losses), ys(&losses))];
        let right = vec![
            Series::new("std of normalised z", xs(&stds), ys(&stds)),
            Series::new(format!("healthy 1/√d = {healthy:.3}"), vec![first, last], vec![healthy, healthy]),
        ];
        line_plot_two_axes(&left, &right, &LinePlotConfig::new(title, "step", "loss").y2_label("std of z / ‖z‖"))
    }
}

#[cfg(test)]
mod tests {
    use crate::train::{EpochRecord, History, Record, StepRecord};
    use std::collections::BTreeMap;

    fn step(step: usize, epoch: usize, loss: f64) -> StepRecord {
        StepRecord { step, epoch, loss, lr: 0.1, z_std: None, images_per_sec: 1.0, metrics: BTreeMap::new() }
    }

    #[test]
    fn plot_draws_a_run_and_refuses_an_empty_history() {
        assert!(History::new().plot("empty").is_err());
        let mut h = History::new();
        for (s, l) in [(0, 2.0), (1, 1.5), (2, 1.2), (3, 1.0)] {
            h.push(Record::Step(step(s, s / 2, l)));
        }
        let epoch = |epoch, test_accuracy| EpochRecord {
            epoch,
            mean_loss: 1.0,
            knn_accuracy: None,
            train_accuracy: None,
            test_loss: None,
            test_accuracy,
            seconds: 1.0,
        };
        h.push(Record::Epoch(epoch(0, None)));
        assert_eq!(h.plot("loss only").unwrap().width(), 800);
        h.push(Record::Epoch(epoch(1, Some(0.5))));
        assert_eq!(h.plot("with accuracy").unwrap().width(), 800);
    }
}
