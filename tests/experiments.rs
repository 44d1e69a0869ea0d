//! `selfsup::experiments` without training: the verdict rules (mixed, all holding, all failing,
//! all not distinguishable), the notebooks' verdict table, the seeds' conclusions from given
//! accuracies, the report's Markdown, the date and the machine.
use selfsup::eval::Verdict;
use selfsup::experiments::{
    conclusions, date_utc, date_utc_at, overall, Comparison, Conclusion, Experiment, Machine, Report, Verdicts, ZStd,
};

/// 800 test images: 2·se ≈ 0.048 around 0.5, so 0.60 vs 0.50 holds and 0.52 vs 0.50 does not tell.
const N: usize = 800;

fn cmp(label: &str, a: f64, b: f64) -> Comparison {
    Comparison::new(label, a, b, N)
}

#[test]
fn each_comparison_follows_the_two_standard_error_rule() {
    let c = cmp("BYOL vs random", 0.60, 0.50);
    assert_eq!(c.verdict, Verdict::Higher);
    assert!((c.two_se - 2.0 * ((0.6 * 0.4 + 0.5 * 0.5) / 800.0f64).sqrt()).abs() < 1e-12);
    assert_eq!(cmp("x vs y", 0.50, 0.60).verdict, Verdict::Lower);
    assert_eq!(cmp("x vs y", 0.52, 0.50).verdict, Verdict::NotDistinguishable);
    // A missing accuracy (NaN) cannot be told apart.
    assert_eq!(cmp("x vs y", f64::NAN, 0.50).verdict, Verdict::NotDistinguishable);
    assert_eq!(c.subject(), "BYOL");
    assert_eq!(cmp("supervised > BYOL", 0.6, 0.5).subject(), "supervised > BYOL");
    // results.json keeps the words.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["verdict"], "holds");
    assert_eq!(json["label"], "BYOL vs random");
}

#[test]
fn overall_verdict_of_mixed_comparisons_names_who_holds_and_who_does_not() {
    let cs = [
        cmp("BYOL vs random", 0.60, 0.50),
        cmp("SimCLR vs random", 0.45, 0.55),
        cmp("MoCo v2 vs random", 0.51, 0.50),
        cmp("Barlow Twins vs random", 0.70, 0.50),
    ];
    assert_eq!(overall(&cs), "holds for BYOL, Barlow Twins; does not hold for SimCLR; not distinguishable for MoCo v2");
    assert_eq!(overall(&cs[1..3]), "does not hold for SimCLR; not distinguishable for MoCo v2");
}

#[test]
fn overall_verdict_when_all_agree_is_the_common_one() {
    let holding = [cmp("BYOL vs random", 0.60, 0.50), cmp("SimCLR vs random", 0.70, 0.50)];
    assert_eq!(overall(&holding), "holds");
    let failing = [cmp("BYOL vs random", 0.40, 0.50), cmp("SimCLR vs random", 0.30, 0.50)];
    assert_eq!(overall(&failing), "does not hold");
    let unclear = [cmp("BYOL vs random", 0.51, 0.50), cmp("SimCLR vs random", 0.49, 0.50)];
    assert_eq!(overall(&unclear), "not distinguishable");
    assert_eq!(overall(&[]), "nothing compared");
}

#[test]
fn a_verdict_table_shows_every_row_and_the_overall_verdict() {
    let v = Verdicts::new("probes").compare("BYOL vs random", 0.60, 0.50, N).compare("SimCLR vs random", 0.52, 0.50, N);
    assert_eq!(v.holding(), 1);
    assert_eq!(v.overall(), "holds for BYOL; not distinguishable for SimCLR");
    let t = v.table();
    assert_eq!(t.caption.as_deref(), Some("probes: holds for BYOL; not distinguishable for SimCLR"));
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[0], ["BYOL vs random", "60.0%", "50.0%", "+10.0", "4.9", "800", "holds"]);
    assert_eq!(t.rows[1][6], "not distinguishable");
    assert!(v.to_string().contains("SimCLR vs random"));
    assert!(t.to_html().contains("<td style=\"padding:2px 10px\">holds</td>"));
    // The same rows given as a list.
    let w = Verdicts::from_rows("probes", [("BYOL vs random", 0.60, 0.50, N), ("SimCLR vs random", 0.52, 0.50, N)]);
    assert_eq!(w, v);
}

fn experiment(id: &str, accuracy: f64) -> Experiment {
    Experiment::probe(id, id, 0.1, accuracy)
}

#[test]
fn the_seeds_conclusions_from_given_accuracies() {
    let exps: Vec<Experiment> = [
        ("probe_random", 0.30),
        ("probe_byol", 0.60),
        ("probe_simclr", 0.55),
        ("probe_moco_v2", 0.31),
        ("supervised_scratch", 0.50),
        ("byol_finetune", 0.51),
        ("simclr_finetune", 0.40),
        // moco_v2_finetune missing: not distinguishable
    ]
    .into_iter()
    .map(|(id, a)| experiment(id, a))
    .collect();
    let z = ZStd::from_stds(&[0.06, 0.01, 0.004], 256).unwrap();
    let cs = conclusions(&exps, N, Some(&z));
    assert_eq!(cs.len(), 3);
    assert_eq!(cs[0].id, "ssl_probe_beats_random");
    assert_eq!(cs[0].verdict, "holds for BYOL, SimCLR; not distinguishable for MoCo v2");
    assert!(cs[0].line.starts_with("- **SSL probe > random weights** (S1.7, S2.T4): **holds for BYOL, SimCLR;"), "{}", cs[0].line);
    assert!(cs[0].line.contains("BYOL vs random 0.600 vs 0.300 (Δ +0.300, 2·se 0.047): holds"), "{}", cs[0].line);
    assert_eq!(cs[1].verdict, "does not hold for SimCLR fine-tuned; not distinguishable for BYOL fine-tuned, MoCo v2 fine-tuned");
    assert!(cs[1].line.starts_with("- **Fine-tuning ≥ scratch** (S2.T5, same epochs): **"), "{}", cs[1].line);
    assert!(cs[1].line.ends_with("(\"not distinguishable\" is consistent with ≥ but does not show it)"));
    assert!(cs[1].line.contains("MoCo v2 fine-tuned vs scratch NaN vs 0.500"), "{}", cs[1].line);
    // 0.004 ≤ 0.25/16 = 0.0156: collapsed.
    assert_eq!(cs[2].verdict, "does not hold");
    assert!(cs[2].line.contains("last std(z) 0.0040 ≤ threshold 0.25/√d = 0.0156 (d = 256"), "{}", cs[2].line);
    assert_eq!(Conclusion::byol_std_z(None).verdict, "not distinguishable");
    let healthy = ZStd::from_stds(&[0.06, 0.05], 256).unwrap();
    assert_eq!(Conclusion::byol_std_z(Some(&healthy)).verdict, "holds");
}

fn small_report(shortened: bool) -> Report {
    let mut scratch = experiment("supervised_scratch", 0.5);
    scratch.dir = Some("runs/x/supervised_scratch".into());
    scratch.epochs = Some(3);
    scratch.batch_size = Some(32);
    scratch.steps = Some(30);
    scratch.resumed = true;
    scratch.train_seconds = Some(12.34);
    let experiments = vec![scratch, experiment("probe_random", 0.3), experiment("probe_byol", 0.6)];
    let z = ZStd::from_stds(&[0.06, 0.05], 256);
    let conclusions = conclusions(&experiments, 100, z.as_ref());
    Report {
        tool: "selfsup-results".into(),
        scale: "smoke".into(),
        epochs_factor: if shortened { 0.5 } else { 1.0 },
        shortened,
        machine: "a test machine".into(),
        device: "CPU (test)".into(),
        date_utc: date_utc_at(1_764_091_500),
        git_commit: "0123456789ab".into(),
        data: "data: the test's".into(),
        n_unlabeled: 64,
        n_train: 100,
        n_test: 100,
        image_size: 16,
        backbone: "ResNet-18".into(),
        ssl_epochs: 1,
        supervised_epochs: 3,
        scale_epochs: (2, 6),
        seed: 7,
        total_wall_seconds: 90.0,
        recipes: "the test's recipes".into(),
        experiments,
        byol_z_std: z,
        conclusions,
    }
}

#[test]
fn the_report_markdown_has_its_header_tables_and_verdict_lines() {
    let md = small_report(true).markdown();
    assert!(md.starts_with("## selfsup-results: smoke scale, 2025-11-25 17:25 UTC\n\n**Shortened run: every epoch count × 0.5"), "{md}");
    assert!(md.contains("SSL pre-training 1 epoch instead of 2 epochs, supervised from scratch and fine-tuning 3 epochs instead of 6 epochs"));
    for line in [
        "- machine: a test machine",
        "- device: CPU (test)",
        "- date: 2025-11-25 17:25 UTC",
        "- git commit: 0123456789ab",
        "- scale: smoke; epochs: SSL pre-training 1, supervised from scratch and fine-tuning 3 each (× 0.5 of the scale's)",
        "- data: the test's",
        "- images: 64 unlabelled (pre-training), 100 labelled train, 100 test, 16×16 px; backbone ResNet-18",
        "- recipes: the test's recipes",
        "- seed: 7; total wall time: 90 s (1.5 min)",
        "### Experiments",
        "| `supervised_scratch` | supervised_scratch | 3 | 32 | 30 | 12.3 | 0.1 | yes (loaded, not retrained) | 0.500 |",
        "| `probe_random` | probe_random | — | — | — | — | 0.1 | — | 0.300 |",
        "### Test accuracy (n = 100 test images)",
        "| random weights | 0.300 | — |",
        "| supervised from scratch | — | 0.500 (the scratch baseline) |",
        "| BYOL | 0.600 | — |",
        "### BYOL: std of ℓ2-normalised z during pre-training (collapse check)",
        "first 0.0600, min 0.0500, last 0.0500; healthy ≈ 1/√d = 0.0625 (d = 256); collapsed ≈ 0; threshold for \"away from 0\": 0.25/√d = 0.0156",
        "### Conclusions of the seeds",
    ] {
        assert!(md.lines().any(|l| l == line), "no line '{line}' in:\n{md}");
    }
    assert!(md.contains("Rule: accuracies a and b on n = 100 test images differ when |a − b| > 2·se"));
    let verdicts: Vec<&str> = md.lines().filter(|l| l.starts_with("- **")).collect();
    assert_eq!(verdicts.len(), 3, "{md}");
    assert!(verdicts[0].starts_with("- **SSL probe > random weights** (S1.7, S2.T4): **holds for BYOL; not distinguishable for SimCLR, MoCo v2**"));
    assert!(md.ends_with(&format!("{}\n", verdicts[2])));
    // Not shortened: no such paragraph, no factor in the scale line.
    let md = small_report(false).markdown();
    assert!(!md.contains("Shortened run"));
    assert!(md.contains("- scale: smoke; epochs: SSL pre-training 1, supervised from scratch and fine-tuning 3 each\n"));
}

#[test]
fn the_report_is_written_as_markdown_and_json() {
    let dir = std::env::temp_dir().join(format!("selfsup-experiments-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let r = small_report(false);
    let (md, json) = r.write(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(md).unwrap(), r.markdown());
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["conclusions"][0]["comparisons"][0]["verdict"], "holds");
    assert_eq!(v["scale_epochs"], serde_json::json!([2, 6]));
    assert_eq!(v["experiments"][1]["dir"], serde_json::Value::Null);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn dates_are_formatted_in_utc_from_a_fixed_time() {
    assert_eq!(date_utc_at(0), "1970-01-01 00:00 UTC");
    assert_eq!(date_utc_at(1_764_091_500), "2025-11-25 17:25 UTC");
    assert_eq!(date_utc_at(1_709_210_096), "2024-02-29 12:34 UTC"); // a leap day
    assert_eq!(date_utc_at(951_868_799), "2000-02-29 23:59 UTC"); // 2000 is a leap year
    assert_eq!(date_utc_at(-1), "1969-12-31 23:59 UTC");
    let now = date_utc();
    let b = now.as_bytes();
    assert_eq!(now.len(), "2026-11-25 17:25 UTC".len(), "{now}");
    assert!(now.ends_with(" UTC") && b[4] == b'-' && b[7] == b'-' && b[13] == b':', "{now}");
    assert!(now.as_str() >= "2025-01-01", "the clock says {now}");
}

#[test]
fn machine_detection_names_the_cpu_and_the_gpu() {
    let m = Machine::detect();
    assert!(!m.cpu.trim().is_empty());
    assert!(m.cpus >= 1);
    assert!(!m.cpu_bf16.is_empty());
    let text = m.to_string();
    assert!(text.starts_with(&format!("{}, {} CPUs", m.cpu, m.cpus)), "{text}");
    assert!(text.contains("; GPU: "), "{text}");
    let known = Machine { cpu: "X".into(), cpus: 2, ram_gib: Some(7.8), cpu_bf16: "-".into(), gpus: vec!["A, 80 GiB".into(), "B, 80 GiB".into()] };
    assert_eq!(known.to_string(), "X, 2 CPUs, 8 GiB RAM; GPU: A, 80 GiB; B, 80 GiB");
    let bare = Machine { ram_gib: None, gpus: vec![], ..known };
    assert_eq!(bare.to_string(), "X, 2 CPUs; GPU: none");
}

#[test]
fn the_results_command_line_is_consistent() {
    use clap::{CommandFactory, Parser};
    use selfsup::experiments::{DeviceChoice, ResultsConfig};
    use selfsup::train::Scale;
    ResultsConfig::command().debug_assert();
    let c = ResultsConfig::try_parse_from(["selfsup-results", "--scale", "Demo", "--device=CPU", "--epochs-factor", "0.5"]).unwrap();
    assert_eq!((c.scale, c.device, c.epochs_factor, c.seed), (Some(Scale::Demo), DeviceChoice::Cpu, 0.5, 0));
    assert_eq!(c.out_dir(Scale::Demo), std::path::PathBuf::from("runs/results-demo-x0.5"));
    let c = ResultsConfig::try_parse_from(["selfsup-results", "--image-size", "32"]).unwrap();
    assert!(!c.shortened());
    assert_eq!(c.out_dir(Scale::Lesson), std::path::PathBuf::from("runs/results-lesson-32px"));
}
