//! The verdict rules: a claim "a > b" between two accuracies ([`Comparison`], by
//! [`compare_accuracies`]'s two-standard-error rule), the one verdict of several such claims
//! ([`overall`]), a notebook's table of them ([`Verdicts`]), BYOL's collapse check ([`ZStd`]) and
//! the report's conclusions ([`Conclusion`]).
use crate::eval::{compare_accuracies, Verdict};
use crate::viz::Table;
use serde::{Serialize, Serializer};

/// The claim "accuracy `a` > accuracy `b`" on `n` test images, judged by
/// [`compare_accuracies`]: it holds when `a − b` exceeds two standard errors of the difference,
/// does not hold when `b − a` does, and is not distinguishable otherwise (a missing accuracy,
/// NaN, is not distinguishable either).
///
/// ```
/// use selfsup::experiments::Comparison;
/// use selfsup::eval::Verdict;
/// let c = Comparison::new("BYOL vs random", 0.60, 0.50, 800);
/// assert_eq!(c.verdict, Verdict::Higher);
/// assert_eq!(c.to_string(), "BYOL vs random 0.600 vs 0.500 (Δ +0.100, 2·se 0.049): holds");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// What is compared, "<subject> vs <baseline>" ("BYOL vs random"); [`overall`] names the
    /// subject, the part before " vs ".
    pub label: String,
    /// The accuracy claimed to be higher, in [0, 1].
    pub a: f64,
    /// The baseline accuracy, in [0, 1].
    pub b: f64,
    /// Test images behind each accuracy.
    pub n: usize,
    /// Two standard errors of `a − b`: 2·√((a(1−a) + b(1−b))/n).
    pub two_se: f64,
    /// The verdict of "a > b" (written as "holds", "does not hold" or "not distinguishable").
    #[serde(serialize_with = "claim")]
    pub verdict: Verdict,
}

fn claim<S: Serializer>(v: &Verdict, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(v.claim())
}

impl Comparison {
    /// "a > b" on `n` test images, judged by [`compare_accuracies`].
    pub fn new(label: impl Into<String>, a: f64, b: f64, n: usize) -> Comparison {
        let c = compare_accuracies(a, b, n);
        Comparison { label: label.into(), a, b, n, two_se: c.two_se, verdict: c.verdict }
    }

    /// The label's part before " vs " ("BYOL" of "BYOL vs random"), or the whole label.
    pub fn subject(&self) -> &str {
        self.label.split(" vs ").next().unwrap_or(&self.label)
    }
}

impl std::fmt::Display for Comparison {
    /// "BYOL vs random 0.600 vs 0.500 (Δ +0.100, 2·se 0.049): holds".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:.3} vs {:.3} (Δ {:+.3}, 2·se {:.3}): {}",
            self.label,
            self.a,
            self.b,
            self.a - self.b,
            self.two_se,
            self.verdict.claim()
        )
    }
}

/// One verdict for several comparisons: the common one ("holds", "does not hold", "not
/// distinguishable") when they all agree, else who holds and who does not, by subject:
/// "holds for BYOL, MoCo v2; not distinguishable for SimCLR". "nothing compared" for none.
///
/// ```
/// use selfsup::experiments::{overall, Comparison};
/// let cs = [Comparison::new("BYOL vs random", 0.6, 0.3, 500), Comparison::new("SimCLR vs random", 0.32, 0.3, 500)];
/// assert_eq!(overall(&cs), "holds for BYOL; not distinguishable for SimCLR");
/// ```
pub fn overall(comparisons: &[Comparison]) -> String {
    if comparisons.is_empty() {
        return "nothing compared".into();
    }
    let groups = [Verdict::Higher, Verdict::Lower, Verdict::NotDistinguishable].map(|v| {
        let who: Vec<&str> = comparisons.iter().filter(|c| c.verdict == v).map(Comparison::subject).collect();
        (v, who)
    });
    if let Some((v, _)) = groups.iter().find(|(_, who)| who.len() == comparisons.len()) {
        return v.claim().into();
    }
    groups
        .iter()
        .filter(|(_, who)| !who.is_empty())
        .map(|(v, who)| format!("{} for {}", v.claim(), who.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The comparisons one after the other, as the report's verdict lines give them.
pub fn comparisons_text(comparisons: &[Comparison]) -> String {
    comparisons.iter().map(Comparison::to_string).collect::<Vec<_>>().join("; ")
}

/// A notebook's verdict table: rows of (claim, accuracy a, accuracy b, n test images), each judged
/// "a > b" by the two-standard-error rule, and the [`overall`] verdict in the caption. The last
/// expression of a cell renders it inline; `{}` prints it as aligned text.
///
/// ```
/// use selfsup::experiments::Verdicts;
/// let v = Verdicts::new("probe accuracy on 800 test images")
///     .compare("BYOL vs random weights", 0.62, 0.41, 800)
///     .compare("SimCLR vs random weights", 0.43, 0.41, 800);
/// assert_eq!(v.overall(), "holds for BYOL; not distinguishable for SimCLR");
/// assert_eq!(v.holding(), 1);
/// assert!(v.to_string().contains("62.0%"));
/// // In a notebook, `v` as the last expression of a cell shows the table.
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdicts {
    /// What the table compares ("probe accuracy on 800 test images").
    pub caption: String,
    /// One row per claim.
    pub comparisons: Vec<Comparison>,
}

impl Verdicts {
    /// An empty table with this caption.
    pub fn new(caption: impl Into<String>) -> Verdicts {
        Verdicts { caption: caption.into(), comparisons: Vec::new() }
    }

    /// A table of (label, a, b, n) rows, each the claim "a > b" on `n` test images.
    ///
    /// ```
    /// use selfsup::experiments::Verdicts;
    /// let v = Verdicts::from_rows("fine-tuning vs scratch", [("BYOL", 0.71, 0.64, 1000), ("MoCo v2", 0.70, 0.64, 1000)]);
    /// assert_eq!(v.overall(), "holds");
    /// ```
    pub fn from_rows<L: Into<String>>(caption: impl Into<String>, rows: impl IntoIterator<Item = (L, f64, f64, usize)>) -> Verdicts {
        rows.into_iter().fold(Verdicts::new(caption), |v, (label, a, b, n)| v.compare(label, a, b, n))
    }

    /// The same table with one more row: the claim "a > b" on `n` test images.
    pub fn compare(mut self, label: impl Into<String>, a: f64, b: f64, n: usize) -> Verdicts {
        self.comparisons.push(Comparison::new(label, a, b, n));
        self
    }

    /// The one verdict of all rows (see [`overall`]).
    pub fn overall(&self) -> String {
        overall(&self.comparisons)
    }

    /// How many rows hold (a above b beyond two standard errors).
    pub fn holding(&self) -> usize {
        self.comparisons.iter().filter(|c| c.verdict == Verdict::Higher).count()
    }

    /// The table: claim, a, b, Δ (points), 2·se (points), n, verdict; the caption ends with the
    /// overall verdict.
    pub fn table(&self) -> Table {
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let points = |x: f64| format!("{:+.1}", 100.0 * x);
        let header = ["claim (a > b)", "a", "b", "Δ (points)", "2·se (points)", "n", "verdict"];
        let rows = self
            .comparisons
            .iter()
            .map(|c| {
                vec![
                    c.label.clone(),
                    pct(c.a),
                    pct(c.b),
                    points(c.a - c.b),
                    format!("{:.1}", 100.0 * c.two_se),
                    c.n.to_string(),
                    c.verdict.claim().to_string(),
                ]
            })
            .collect();
        let caption = match self.caption.as_str() {
            "" => format!("overall: {}", self.overall()),
            c => format!("{c}: {}", self.overall()),
        };
        Table::new(header.map(String::from).to_vec(), rows).caption(caption)
    }

    /// evcxr display hook: the table.
    pub fn evcxr_display(&self) {
        self.table().evcxr_display()
    }
}

impl std::fmt::Display for Verdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.table())
    }
}

/// BYOL's collapse check: the std of the ℓ2-normalised projections z over pre-training (healthy
/// ≈ 1/√d, collapsed ≈ 0), "away from 0" when the last one exceeds 0.25/√d.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZStd {
    /// The first recorded std(z).
    pub first: f64,
    /// The smallest.
    pub min: f64,
    /// The last.
    pub last: f64,
    /// Projection width d.
    pub dim: i64,
    /// 1/√d, the std of uniformly spread unit vectors.
    pub healthy: f64,
    /// 0.25/√d: above it, std(z) is "away from 0".
    pub threshold: f64,
}

impl ZStd {
    /// From the std(z) values a history recorded, in order; `None` when there are none.
    ///
    /// ```
    /// use selfsup::experiments::ZStd;
    /// let z = ZStd::from_stds(&[0.06, 0.02, 0.05], 256).unwrap();
    /// assert_eq!((z.first, z.min, z.last), (0.06, 0.02, 0.05));
    /// assert!(z.away_from_zero()); // 0.05 > 0.25/16
    /// assert!(ZStd::from_stds(&[], 256).is_none());
    /// ```
    pub fn from_stds(stds: &[f64], dim: i64) -> Option<ZStd> {
        let (&first, &last) = (stds.first()?, stds.last()?);
        Some(ZStd {
            first,
            min: stds.iter().copied().fold(f64::INFINITY, f64::min),
            last,
            dim,
            healthy: crate::train::healthy_std(dim),
            threshold: 0.25 / (dim as f64).sqrt(),
        })
    }

    /// The last std(z) is above 0.25/√d.
    pub fn away_from_zero(&self) -> bool {
        self.last > self.threshold
    }
}

/// One conclusion of the seeds and its verdict, as the report states it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conclusion {
    /// Short id ("ssl_probe_beats_random").
    pub id: String,
    /// The claim ("SSL probe > random weights").
    pub statement: String,
    /// holds / does not hold / not distinguishable, or a summary of mixed outcomes ([`overall`]).
    pub verdict: String,
    /// The accuracy comparisons behind it (none for the std(z) check).
    pub comparisons: Vec<Comparison>,
    /// The report's Markdown line.
    pub line: String,
}

impl Conclusion {
    /// A conclusion judged by accuracy comparisons: `- **Statement** (where): **verdict** — the
    /// comparisons` and `note`.
    pub fn from_comparisons(id: &str, statement: &str, source: &str, comparisons: Vec<Comparison>, note: &str) -> Conclusion {
        let verdict = overall(&comparisons);
        let line = format!(
            "- **{}** ({source}): **{verdict}** — {}{note}",
            capitalized(statement),
            comparisons_text(&comparisons)
        );
        Conclusion { id: id.into(), statement: statement.into(), verdict, comparisons, line }
    }

    /// "BYOL std(z) away from 0" (S2.T2) from the collapse check, "not distinguishable" without one.
    pub fn byol_std_z(z: Option<&ZStd>) -> Conclusion {
        let head = "- **BYOL std(z) away from 0** (S2.T2)";
        let (verdict, line) = match z {
            Some(z) => {
                let (v, cmp) = if z.away_from_zero() { ("holds", ">") } else { ("does not hold", "≤") };
                let line = format!(
                    "{head}: **{v}** — last std(z) {:.4} {cmp} threshold 0.25/√d = {:.4} (d = {}; healthy 1/√d = {:.4}; first {:.4}, min {:.4})",
                    z.last, z.threshold, z.dim, z.healthy, z.first, z.min
                );
                (v, line)
            }
            None => ("not distinguishable", format!("{head}: **not distinguishable** — the history recorded no std(z)")),
        };
        Conclusion {
            id: "byol_std_z_away_from_zero".into(),
            statement: "BYOL std(z) away from 0".into(),
            verdict: verdict.into(),
            comparisons: vec![],
            line,
        }
    }
}

/// "fine-tuning" → "Fine-tuning".
fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
