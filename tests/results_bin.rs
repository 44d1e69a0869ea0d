//! The `selfsup-results` binary end to end at smoke scale (issue 7): every experiment and the
//! three verdicts in results.md / results.json, and a second run that loads every finished
//! training from its checkpoint instead of training again.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_selfsup-results");

const TRAININGS: [&str; 7] =
    ["supervised_scratch", "byol", "simclr", "moco_v2", "byol_finetune", "simclr_finetune", "moco_v2_finetune"];
const PROBES: [&str; 5] = ["probe_random", "probe_supervised", "probe_byol", "probe_simclr", "probe_moco_v2"];
const VERDICT_LINES: [&str; 3] =
    ["- **SSL probe > random weights**", "- **Fine-tuning ≥ scratch**", "- **BYOL std(z) away from 0**"];

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SELFSUP_SCALE")
        .output()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"))
}

fn smoke(out: &Path) -> (String, String, Value) {
    // --epochs-factor 0.5 keeps smoke's single epochs (at least 1 each) and makes the report
    // say it was shortened.
    let o = run(&["--scale", "smoke", "--epochs-factor", "0.5", "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "selfsup-results failed ({}):\n{stdout}\n{stderr}", o.status);
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md written");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("results.json written"))
            .expect("results.json parses");
    assert!(stdout.contains(&md), "the Markdown report is printed to stdout too");
    (stdout, md, json)
}

fn experiment<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["experiments"]
        .as_array()
        .expect("experiments array")
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("experiment '{id}' missing from results.json"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-results-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn smoke_run_reports_every_experiment_and_resumes_without_retraining() {
    let out = tmp("smoke");
    let (_, md, json) = smoke(&out);

    // Every experiment, in the Markdown and in the JSON.
    for id in TRAININGS.iter().chain(PROBES.iter()) {
        assert!(md.contains(&format!("`{id}`")), "results.md lacks experiment {id}:\n{md}");
        let e = experiment(&json, id);
        assert!(e["wall_seconds"].as_f64().is_some_and(|s| s.is_finite() && s >= 0.0), "{id}: wall time");
    }
    for id in TRAININGS {
        let e = experiment(&json, id);
        assert_eq!(e["resumed"], false, "{id}: first run starts fresh");
        assert!(e["steps_this_run"].as_u64().unwrap() > 0, "{id}: trained in the first run");
        assert_eq!(e["steps_this_run"], e["steps"], "{id}: the whole run trained now");
    }
    // Accuracies: finite, in [0, 1], for the probes, the scratch run and the fine-tunings.
    for id in PROBES.iter().chain(["supervised_scratch", "byol_finetune", "simclr_finetune", "moco_v2_finetune"].iter())
    {
        let a = experiment(&json, id)["test_accuracy"].as_f64().unwrap_or(f64::NAN);
        assert!(a.is_finite() && (0.0..=1.0).contains(&a), "{id}: accuracy {a} not in [0, 1]");
    }
    // The header: scale, shortening, machine, date, commit, data.
    assert_eq!(json["scale"], "smoke");
    assert_eq!(json["shortened"], true);
    assert_eq!(json["epochs_factor"], 0.5);
    assert!(md.contains("Shortened run: every epoch count × 0.5"), "the shortening is stated:\n{md}");
    for key in ["- machine:", "- device:", "- date:", "- git commit:", "- scale: smoke", "- data:"] {
        assert!(md.contains(key), "results.md lacks '{key}'");
    }
    assert!(json["date_utc"].as_str().unwrap().ends_with("UTC"));
    assert_eq!(json["n_test"].as_u64().unwrap(), 100);

    // BYOL's std(z): first, min, last, healthy 1/√d, threshold 0.25/√d.
    let z = &json["byol_z_std"];
    let d = z["dim"].as_f64().unwrap();
    for k in ["first", "min", "last"] {
        let v = z[k].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "std(z) {k} = {v}");
    }
    assert!((z["healthy"].as_f64().unwrap() - 1.0 / d.sqrt()).abs() < 1e-12);
    assert!((z["threshold"].as_f64().unwrap() - 0.25 / d.sqrt()).abs() < 1e-12);

    // The three verdict lines.
    let verdicts = ["holds", "does not hold", "not distinguishable"];
    for head in VERDICT_LINES {
        let line = md.lines().find(|l| l.starts_with(head)).unwrap_or_else(|| panic!("no line '{head}' in:\n{md}"));
        assert!(verdicts.iter().any(|v| line.contains(&format!("**{v}"))), "no verdict in '{line}'");
    }
    let conclusions = json["conclusions"].as_array().unwrap();
    assert_eq!(conclusions.len(), 3);
    for c in conclusions {
        let v = c["verdict"].as_str().unwrap();
        assert!(verdicts.iter().any(|w| v.contains(w)), "verdict '{v}'");
    }
    assert!(md.contains("0.25/√d"), "the std(z) threshold is stated");
    assert!(md.contains("2·se"), "the 2-standard-error rule is stated");

    // Second run: every training loads its finished checkpoint; the same numbers come back.
    let (stdout, _, again) = smoke(&out);
    for id in TRAININGS {
        let e = experiment(&again, id);
        assert_eq!(e["resumed"], true, "{id}: resumed from its checkpoint");
        assert_eq!(e["steps_this_run"], 0, "{id}: nothing retrained");
        assert_eq!(e["steps"], experiment(&json, id)["steps"]);
        assert!(
            stdout.contains(&format!("resumed {id}: finished run loaded from its checkpoint, nothing retrained")),
            "{id}: no 'resumed' line in:\n{stdout}"
        );
    }
    for id in TRAININGS {
        // Read from the checkpointed history: the very same numbers.
        assert_eq!(experiment(&again, id)["test_accuracy"], experiment(&json, id)["test_accuracy"], "{id}");
    }
    for id in PROBES {
        // Recomputed from the loaded weights (exact on the CPU; a GPU may pick other kernels).
        let (a, b) =
            (experiment(&again, id)["test_accuracy"].as_f64(), experiment(&json, id)["test_accuracy"].as_f64());
        assert!((a.unwrap() - b.unwrap()).abs() <= 0.02, "{id}: {a:?} then {b:?}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_arguments_say_what_is_wrong_and_what_to_do() {
    // clap's messages name the flag and the bad value (and the choices, for a fixed set).
    for (args, expect) in [
        (&["--scale", "huge"][..], "invalid value 'huge' for '--scale <S>'\n  [possible values: smoke, lesson, demo, full]"),
        (&["--epochs-factor", "-1"][..], "invalid value '-1' for '--epochs-factor <F>': must be a positive number"),
        (&["--epochs-factor", "x"][..], "invalid value 'x' for '--epochs-factor <F>'"),
        (&["--device", "tpu"][..], "invalid value 'tpu' for '--device <D>'\n  [possible values: cpu, cuda, auto]"),
        (&["--seed"][..], "a value is required for '--seed <N>'"),
        (&["--image-size", "8"][..], "invalid value '8' for '--image-size <N>': 8 is not in 16..=256"),
        (&["--frobnicate"][..], "unexpected argument '--frobnicate' found"),
    ] {
        let o = run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: exit code 2, stderr:\n{stderr}");
        assert!(stderr.contains(expect), "{args:?}: expected '{expect}' in:\n{stderr}");
    }
    let o = Command::new(BIN).env("SELFSUP_SCALE", "large").output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr.contains("SELFSUP_SCALE must be smoke, lesson, demo or full, got 'large'; or pass --scale"), "{stderr}");
    let help = run(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--epochs-factor <F>") && help.contains("[default: 1]"), "{help}");
}
