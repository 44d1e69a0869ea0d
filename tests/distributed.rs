//! `selfsup::distributed` on the CPU: Gloo over loopback (127.0.0.1) between real processes.
//!
//! Each multi-rank test starts this test binary again, once per rank, running only the ignored
//! test `worker` with `SELFSUP_DIST_TEST_SCENARIO` and the torchrun variables (RANK, WORLD_SIZE,
//! LOCAL_RANK, MASTER_ADDR, MASTER_PORT) set; the parent waits for the ranks with a deadline, so
//! a hang fails the test instead of stalling it. `torchrun_launches_two_ranks` has torchrun
//! itself start the ranks.
//!
//! Run with `cargo test --features distributed --test distributed`.
#![cfg(feature = "distributed")]
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use selfsup::augment::{Augment, Op, TwoViews};
use selfsup::data::synthetic::{self, SyntheticConfig};
use selfsup::data::{Loader, LoaderConfig, Split};
use selfsup::distributed::{shard_indices, Dist, DistConfig, ReduceOp};
use selfsup::tch::{nn, nn::Module, Device, Kind, Tensor};
use selfsup::losses::{barlow_twins_terms, cross_correlation, nt_xent, NtXentConfig};
use selfsup::methods::across_ranks::{cross_correlation_across_ranks, nt_xent_across_ranks};
use selfsup::methods::{Moco, MocoConfig, SimClr, SimClrConfig, SslMethod};
use selfsup::models::ResNetConfig;
use selfsup::train::{self, DataParallel, History, Optimizer, OptimizerConfig, TrainConfig};
use std::sync::Arc;

mod common;

const SCENARIO: &str = "SELFSUP_DIST_TEST_SCENARIO";
const TIMEOUT: &str = "SELFSUP_DIST_TEST_TIMEOUT_MS";
const DIR: &str = "SELFSUP_DIST_TEST_DIR";

/// A fresh folder for one test's run folders, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("selfsup-dist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// What one rank printed and how it ended.
struct RankRun {
    rank: usize,
    success: bool,
    output: String,
    elapsed: Duration,
}

fn describe(runs: &[RankRun]) -> String {
    runs.iter()
        .map(|r| format!("--- rank {} (success {}, {:.1} s)\n{}", r.rank, r.success, r.elapsed.as_secs_f64(), r.output))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `world` ranks of `scenario` on 127.0.0.1 and waits for all of them, killing them
/// and failing if any is still running after `deadline`.
fn run_ranks(scenario: &str, world: usize, timeout: Duration, deadline: Duration) -> anyhow::Result<Vec<RankRun>> {
    run_some_ranks(scenario, &(0..world).collect::<Vec<_>>(), world, timeout, deadline)
}

/// As `run_ranks`, starting only `ranks` of the `world`.
fn run_some_ranks(scenario: &str, ranks: &[usize], world: usize, timeout: Duration, deadline: Duration) -> anyhow::Result<Vec<RankRun>> {
    run_ranks_in(scenario, ranks, world, timeout, deadline, None)
}

/// As `run_some_ranks`, with `SELFSUP_DIST_TEST_DIR` set to `dir` (the ranks' run folders).
fn run_ranks_in(
    scenario: &str,
    ranks: &[usize],
    world: usize,
    timeout: Duration,
    deadline: Duration,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<RankRun>> {
    let port = free_port().to_string();
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut pids = Vec::new();
    for &rank in ranks {
        let child: Child = Command::new(&exe)
            .args(["worker", "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
            .env(SCENARIO, scenario)
            .env(TIMEOUT, timeout.as_millis().to_string())
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .env_remove("GLOO_SOCKET_IFNAME")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .env(DIR, dir.map(|d| d.as_os_str().to_owned()).unwrap_or_default())
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting rank {rank} ({})", exe.display()))?;
        pids.push(child.id());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let out = child.wait_with_output();
            let run = match out {
                Ok(o) => RankRun {
                    rank,
                    success: o.status.success(),
                    output: format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
                    elapsed: start.elapsed(),
                },
                Err(e) => RankRun { rank, success: false, output: format!("wait failed: {e}"), elapsed: start.elapsed() },
            };
            let _ = tx.send(run);
        });
    }
    drop(tx);
    let mut runs = Vec::new();
    while runs.len() < ranks.len() {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(run) => runs.push(run),
            Err(_) => {
                for pid in &pids {
                    // SAFETY: plain kill(2) of the children this test started.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                let mut all = runs;
                all.extend(rx.iter());
                bail!("ranks still running after {deadline:?} (a hang), killed:\n{}", describe(&all));
            }
        }
    }
    runs.sort_by_key(|r| r.rank);
    Ok(runs)
}

fn all_succeed(runs: &[RankRun]) -> anyhow::Result<()> {
    ensure!(runs.iter().all(|r| r.success), "a rank failed:\n{}", describe(runs));
    Ok(())
}

// ---------------------------------------------------------------- the parent tests

#[test]
fn collectives_on_two_ranks() -> anyhow::Result<()> {
    let runs = run_ranks("collectives", 2, Duration::from_secs(20), Duration::from_secs(90))?;
    all_succeed(&runs)?;
    for run in &runs {
        ensure!(run.output.contains(&format!("rank {} collectives ok", run.rank)), "{}", describe(&runs));
    }
    Ok(())
}

#[test]
fn gather_with_grad_gives_the_single_process_gradient() -> anyhow::Result<()> {
    let runs = run_ranks("gather_with_grad", 2, Duration::from_secs(20), Duration::from_secs(90))?;
    all_succeed(&runs)
}

#[test]
fn a_killed_rank_makes_the_other_fail_within_the_timeout() -> anyhow::Result<()> {
    // Once the rank that is killed is rank 1, once rank 0, which also hosts the store.
    for victim in [1, 0] {
        let timeout = Duration::from_secs(5);
        let runs = run_ranks(&format!("killed_{victim}"), 2, timeout, Duration::from_secs(60))?;
        let survivor = &runs[1 - victim];
        ensure!(!runs[victim].success, "rank {victim} should have been killed:\n{}", describe(&runs));
        ensure!(
            !survivor.success && survivor.output.contains(&format!("rank {} of 2: all_reduce over Gloo failed", 1 - victim)),
            "the surviving rank should exit with a clear error:\n{}",
            describe(&runs)
        );
        // Start-up (loading libtorch) and the rendezvous come before; the survivor must not wait
        // much longer than one timeout once its peer is gone.
        ensure!(survivor.elapsed < Duration::from_secs(45), "the survivor took {:?}:\n{}", survivor.elapsed, describe(&runs));
        eprintln!("rank {} killed: {}", victim, describe(std::slice::from_ref(survivor)));
    }
    Ok(())
}

#[test]
fn a_stalled_rank_makes_the_other_fail_after_the_timeout() -> anyhow::Result<()> {
    // Rank 1 stays alive but never joins the all-reduce (a deadlock, a rank stuck in I/O).
    let timeout = Duration::from_secs(3);
    let runs = run_ranks("stalled_1", 2, timeout, Duration::from_secs(60))?;
    let rank0 = &runs[0];
    ensure!(
        !rank0.success && rank0.output.contains("rank 0 of 2: all_reduce over Gloo failed") && rank0.output.to_lowercase().contains("timed out"),
        "rank 0 should report a timeout:\n{}",
        describe(&runs)
    );
    ensure!(rank0.elapsed < Duration::from_secs(30), "rank 0 took {:?}:\n{}", rank0.elapsed, describe(&runs));
    eprintln!("rank 1 stalled: {}", describe(std::slice::from_ref(rank0)));
    Ok(())
}

#[test]
fn a_rank_without_a_store_fails_within_the_timeout_naming_the_address() -> anyhow::Result<()> {
    // Alone in a job of 2: rank 1 finds no store, rank 0 hosts one that nobody joins.
    let timeout = Duration::from_secs(2);
    for (rank, expected) in [(1, "could not reach the rendezvous store at 127.0.0.1:"), (0, "waited")] {
        let runs = run_some_ranks("no_store", &[rank], 2, timeout, Duration::from_secs(40))?;
        let run = &runs[0];
        ensure!(run.success && run.output.contains(expected), "rank {rank}:\n{}", describe(&runs));
        ensure!(run.elapsed < timeout * 3 + Duration::from_secs(10), "rank {rank} took {:?}:\n{}", run.elapsed, describe(&runs));
    }
    Ok(())
}

#[test]
fn from_env_names_the_missing_variable_and_torchrun() -> anyhow::Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .args(["worker", "--exact", "--include-ignored", "--nocapture"])
        .env(SCENARIO, "missing_env")
        .env_remove("RANK")
        .env_remove("SLURM_PROCID")
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{text}");
    Ok(())
}

/// The venv's torchrun, or one on the PATH.
fn find_torchrun() -> Option<PathBuf> {
    std::env::var_os("VIRTUAL_ENV")
        .map(|v| PathBuf::from(v).join("bin/torchrun"))
        .filter(|p| p.exists())
        .or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("torchrun")).find(|p| p.exists()))
}

#[test]
fn torchrun_launches_two_ranks() -> anyhow::Result<()> {
    let Some(torchrun) = find_torchrun() else {
        common::tool_present("torchrun_launches_two_ranks", false, "torchrun (the venv's) not found");
        return Ok(());
    };
    let port = free_port().to_string();
    let exe = std::env::current_exe()?;
    let out = Command::new(&torchrun)
        .args(["--no-python", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", &port])
        .arg(&exe)
        .args(["worker", "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, "torchrun")
        .env(TIMEOUT, "30000")
        .env("OMP_NUM_THREADS", "1")
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "torchrun failed:\n{text}");
    for rank in 0..2 {
        ensure!(text.contains(&format!("torchrun rank {rank} of 2 ok")), "{text}");
    }
    Ok(())
}

#[test]
fn shards_together_are_the_single_process_batches() -> anyhow::Result<()> {
    // 2 ranks, batch 3 each: step s of both ranks reads the single process's batch s of 6.
    let epoch: Vec<usize> = [13, 2, 7, 0, 11, 5, 9, 1, 12, 4, 8, 3, 10, 6].to_vec(); // N = 14
    let (world, b) = (2, 3);
    let shards: Vec<Vec<usize>> = (0..world).map(|r| shard_indices(&epoch, r, world)).collect::<Result<_, _>>()?;
    ensure!(shards.iter().all(|s| s.len() == 7));
    for step in 0..7 / b {
        let mut together: Vec<usize> = shards.iter().flat_map(|s| s[step * b..(step + 1) * b].to_vec()).collect();
        let mut single = epoch[step * world * b..(step + 1) * world * b].to_vec();
        together.sort();
        single.sort();
        ensure!(together == single, "step {step}: {together:?} vs {single:?}");
    }
    let mut union: Vec<usize> = shards.concat();
    union.sort();
    ensure!(union == (0..14).collect::<Vec<_>>());
    ensure!(shard_indices(&epoch, 2, 2).is_err());
    Ok(())
}

#[test]
fn loader_shards_together_are_the_single_process_batches() -> anyhow::Result<()> {
    // The engine's sampler: 2 ranks, global batch 6 from 100 images (16 steps, 4 images left).
    let set = synthetic::load(Split::Train, &SyntheticConfig::tiny())?;
    let cfg = LoaderConfig::train(6).seed(3).prefetch(0);
    let single = Loader::new(&set, &cfg, Device::Cpu)?;
    let ranks: Vec<Loader> = (0..2).map(|r| Loader::new(&set, &cfg, Device::Cpu)?.shard(r, 2)).collect::<Result<_, _>>()?;
    ensure!(ranks.iter().all(|l| l.batches_per_epoch() == single.batches_per_epoch()));
    let indices = |l: &Loader| -> anyhow::Result<Vec<Vec<i64>>> {
        l.epoch(1)?.map(|b| Ok(b?.indices)).collect::<anyhow::Result<_>>()
    };
    let (whole, r0, r1) = (indices(&single)?, indices(&ranks[0])?, indices(&ranks[1])?);
    ensure!(whole.len() == 16 && r0.len() == 16 && r1.len() == 16);
    for (s, batch) in whole.iter().enumerate() {
        let mut together = [r0[s].clone(), r1[s].clone()].concat();
        let mut expected = batch.clone();
        together.sort();
        expected.sort();
        ensure!(r0[s].len() == 3 && together == expected, "step {s}: {r0:?} + {r1:?} vs {batch:?}");
    }
    ensure!(Loader::new(&set, &LoaderConfig::train(5), Device::Cpu)?.shard(0, 2).is_err(), "5 does not split in 2");
    Ok(())
}

/// Two ranks with 8 images each against one process with the global batch of 16, through
/// `train_supervised`: after 5 steps the same weights within float32 round-off, and the same
/// logged losses (rank 0 logs the ranks' mean). The model is linear, without BatchNorm: BN
/// normalises over each rank's own 8 images, which makes 2 × 8 differ from 16; and the
/// augmentation is deterministic (each rank draws its own random views, as DDP's workers do).
/// The ranks start from different random weights, so rank 0's broadcast is needed too.
#[test]
fn two_ranks_train_like_one_process_with_the_global_batch() -> anyhow::Result<()> {
    let dir = TempDir::new("supervised")?;
    let runs = run_ranks_in("ddp_supervised", &[0, 1], 2, Duration::from_secs(30), Duration::from_secs(120), Some(&dir.0))?;
    all_succeed(&runs)?;
    ensure!(runs[0].output.contains("rank 0 ddp_supervised ok"), "{}", describe(&runs));
    ensure!(!dir.0.join("rank1").exists(), "rank 1 wrote its run folder:\n{}", describe(&runs));
    let (weights, history) = supervised_run(&dir.0.join("single"), single_config(5), 0)?;
    let (ddp_weights, ddp_history) = saved_supervised_run(&dir.0.join("ddp"))?;
    ensure!(max_difference(&weights, &ddp_weights)? < 1e-5, "weights differ by {}", max_difference(&weights, &ddp_weights)?);
    ensure!(history.steps.len() == 5 && ddp_history.steps.len() == 5);
    for (a, b) in history.steps.iter().zip(&ddp_history.steps) {
        ensure!((a.loss - b.loss).abs() < 1e-5, "step {}: loss {} vs {} (two ranks)", a.step, a.loss, b.loss);
    }
    Ok(())
}

#[test]
fn a_two_rank_run_resumes_with_one_process() -> anyhow::Result<()> {
    // Two ranks train 3 steps and checkpoint; one process continues to 6; one process alone to 6.
    let dir = TempDir::new("resume")?;
    let runs = run_ranks_in("ddp_resume", &[0, 1], 2, Duration::from_secs(30), Duration::from_secs(120), Some(&dir.0))?;
    all_succeed(&runs)?;
    let (resumed, history) = supervised_run(&dir.0.join("ddp"), single_config(6), 0)?;
    ensure!(history.steps.len() == 6, "{} steps", history.steps.len());
    let (whole, _) = supervised_run(&dir.0.join("single"), single_config(6), 0)?;
    let diff = max_difference(&resumed, &whole)?;
    ensure!(diff < 1e-5, "resumed weights differ by {diff}");
    Ok(())
}

#[test]
fn a_one_process_run_resumes_with_two_ranks() -> anyhow::Result<()> {
    // One process trains 3 steps; two ranks, both reading its folder, continue to 6: the weights
    // of one process that trained 6 steps. A rank given another (empty) folder is refused.
    let dir = TempDir::new("resume_on_two")?;
    supervised_run(&dir.0.join("ddp"), single_config(3), 0)?;
    let runs = run_ranks_in("ddp_mismatch", &[0, 1], 2, Duration::from_secs(30), Duration::from_secs(120), Some(&dir.0))?;
    for run in &runs {
        ensure!(!run.success && run.output.contains("start at different steps ([3, 0]"), "{}", describe(&runs));
    }
    let runs = run_ranks_in("ddp_continue", &[0, 1], 2, Duration::from_secs(30), Duration::from_secs(120), Some(&dir.0))?;
    all_succeed(&runs)?;
    let (continued, history) = saved_supervised_run(&dir.0.join("ddp"))?;
    ensure!(history.steps.len() == 6, "{} steps", history.steps.len());
    let (whole, _) = supervised_run(&dir.0.join("single"), single_config(6), 0)?;
    let diff = max_difference(&continued, &whole)?;
    ensure!(diff < 1e-5, "weights continued on two ranks differ by {diff}");
    Ok(())
}

#[test]
fn a_rank_killed_in_training_makes_the_other_fail_with_a_clear_error() -> anyhow::Result<()> {
    let dir = TempDir::new("killed")?;
    let runs = run_ranks_in("ddp_killed", &[0, 1], 2, Duration::from_secs(5), Duration::from_secs(90), Some(&dir.0))?;
    ensure!(!runs[1].success, "rank 1 should have been killed:\n{}", describe(&runs));
    let rank0 = &runs[0];
    ensure!(
        !rank0.success && rank0.output.contains("rank 0 of 2:") && rank0.output.contains("failed"),
        "rank 0 should exit with a clear error:\n{}",
        describe(&runs)
    );
    ensure!(rank0.elapsed < Duration::from_secs(60), "rank 0 took {:?}:\n{}", rank0.elapsed, describe(&runs));
    eprintln!("rank 1 killed in training: {}", describe(std::slice::from_ref(rank0)));
    Ok(())
}

// ---------------------------------------------------------------- supervised runs

/// The config of the supervised runs: global batch 16, SGD with momentum and weight decay.
fn single_config(steps: usize) -> TrainConfig {
    TrainConfig::tiny()
        .batch_size(16)
        .epochs(2)
        .max_steps(steps)
        .optimizer(OptimizerConfig::sgd(0.9))
        .lr(0.05)
        .progress(false)
}

/// A linear classifier of the 3×32×32 synthetic images, initialised from `init_seed`.
fn linear_model(vs: &nn::VarStore, init_seed: i64) -> nn::Linear {
    selfsup::tch::manual_seed(init_seed);
    nn::linear(vs.root() / "fc", 3 * 32 * 32, 10, Default::default())
}

/// Trains the linear model in `out_dir` with `cfg`; its weights (by name) and history.
fn supervised_run(out_dir: &std::path::Path, cfg: TrainConfig, init_seed: i64) -> anyhow::Result<(Vec<(String, Tensor)>, History)> {
    supervised_run_with(out_dir, cfg, init_seed, &|| ())
}

fn supervised_run_with(
    out_dir: &std::path::Path,
    cfg: TrainConfig,
    init_seed: i64,
    each_forward: &dyn Fn(),
) -> anyhow::Result<(Vec<(String, Tensor)>, History)> {
    let set = synthetic::load(Split::Train, &SyntheticConfig::tiny())?;
    let vs = nn::VarStore::new(Device::Cpu);
    let fc = linear_model(&vs, init_seed);
    let history = train::train_supervised(
        &vs,
        |x, _train| {
            each_forward();
            Ok(fc.forward(&x.flatten(1, -1)))
        },
        &set,
        None,
        &Augment::new(),
        &cfg,
        out_dir,
    )?;
    Ok((sorted_vars(&vs), history))
}

/// The weights and history in a run folder.
fn saved_supervised_run(out_dir: &std::path::Path) -> anyhow::Result<(Vec<(String, Tensor)>, History)> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = linear_model(&vs, 0);
    let meta = train::checkpoint::load_online(out_dir, &vs)?;
    Ok((sorted_vars(&vs), meta.history))
}

fn sorted_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn max_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> anyhow::Result<f64> {
    ensure!(a.len() == b.len());
    let mut max = 0.0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        ensure!(na == nb && ta.size() == tb.size(), "{na} {:?} vs {nb} {:?}", ta.size(), tb.size());
        max = max.max((ta - tb).abs().max().double_value(&[]));
    }
    Ok(max)
}

/// A rank's side of the supervised tests: rank 0 trains in `<dir>/ddp`, rank 1 is given
/// `<dir>/rank1`, which it must never create.
fn ddp_supervised(dist: Dist, steps: usize) -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var(DIR)?);
    let rank = dist.rank();
    let dist = Arc::new(dist);
    let out = if rank == 0 { dir.join("ddp") } else { dir.join("rank1") };
    let cfg = single_config(steps).distributed(dist.clone());
    // Rank 0 starts where the single process starts; rank 1 elsewhere, until the broadcast.
    let (weights, _) = supervised_run(&out, cfg, 100 * rank as i64)?;
    // Both ranks hold the same weights, bit for bit (same start, same averaged gradients).
    for (name, w) in &weights {
        let all = dist.all_gather(&w.reshape([1, -1]))?;
        ensure!(all.get(0).equal(&all.get(1)), "rank {rank}: '{name}' differs between the ranks");
    }
    println!("rank {rank} ddp_supervised ok");
    Ok(())
}

/// SimCLR's gathered negatives and Barlow Twins' cross-correlation summed over ranks: two
/// ranks of 6 rows against one process of 12, 4 SGD steps of a linear projection (no BatchNorm,
/// which would normalise over each rank's rows; the methods' ResNets have it, hence the loss
/// functions the methods call, on a model without it).
#[test]
fn simclr_and_barlow_twins_across_two_ranks_match_one_process() -> anyhow::Result<()> {
    let runs = run_ranks("method_losses", 2, Duration::from_secs(30), Duration::from_secs(120))?;
    all_succeed(&runs)?;
    for run in &runs {
        ensure!(run.output.contains(&format!("rank {} simclr ok", run.rank)), "{}", describe(&runs));
        ensure!(run.output.contains(&format!("rank {} barlow_twins ok", run.rank)), "{}", describe(&runs));
    }
    Ok(())
}

/// MoCo on two ranks: after one step the queue of both ranks holds the keys of rank 0's images,
/// then rank 1's (builder.py's `concat_all_gather`), each key computed with the BatchNorm of the
/// shuffled share rank 0 drew (`_batch_shuffle_ddp`).
#[test]
fn moco_queue_holds_both_ranks_keys_in_rank_order() -> anyhow::Result<()> {
    let runs = run_ranks("moco_queue", 2, Duration::from_secs(30), Duration::from_secs(150))?;
    all_succeed(&runs)?;
    for run in &runs {
        ensure!(run.output.contains(&format!("rank {} moco_queue ok", run.rank)), "{}", describe(&runs));
    }
    Ok(())
}

/// Synchronised BatchNorm (`TrainConfig::sync_batch_norm`, `models::norm`) on two ranks against
/// one process with the global batch:
///
/// - an MLP head with BatchNorm1d after both layers, trained 4 SGD steps with SimCLR's gathered
///   negatives (2 ranks of 6 rows against 12): the same weights within 1e-5, and the gradient
///   reaching the head's input (the path into a backbone) `world ×` the single process's;
/// - SimCLR itself through `pretrain` (a ResNet-18 of width 8 and its head, BatchNorm in both),
///   2 ranks of 4 images against 8: after one step the same weights and BN running statistics
///   within 1e-6, and without synchronisation not (each rank's BN over its own images). One
///   step: this tiny BN network's trajectory is chaotic in float32 (measured once: perturbing its
///   initial weights by a relative 1e-7 moved them by 2e-4 after two SGD steps at lr 0.01, more
///   than the two ranks then differed by, 9e-5), so the step's gradient is what can be compared
///   exactly. The views are deterministic (the image,
///   and the image flipped), since each rank draws its own random ones.
#[test]
fn synchronised_batch_norm_trains_like_one_process() -> anyhow::Result<()> {
    let runs = run_ranks("sync_bn_head", 2, Duration::from_secs(30), Duration::from_secs(120))?;
    all_succeed(&runs)?;
    let dir = TempDir::new("sync_bn")?;
    let runs = run_ranks_in("sync_bn_simclr", &[0, 1], 2, Duration::from_secs(60), Duration::from_secs(240), Some(&dir.0))?;
    all_succeed(&runs)?;
    ensure!(runs[0].output.contains("rank 0 sync_bn ok"), "{}", describe(&runs));
    Ok(())
}

fn sync_bn_head(dist: Dist) -> anyhow::Result<()> {
    use selfsup::models::heads::{HeadConfig, Mlp};
    use selfsup::models::norm::with_sync_batch_norm;
    let (rank, b) = (dist.rank() as i64, 6);
    let dist = Arc::new(dist);
    let head_config = HeadConfig { last_batch_norm: true, ..HeadConfig::simclr().for_features(16).out_dim(8) };
    selfsup::tch::manual_seed(3);
    let x = Tensor::randn([2 * b, 16], (Kind::Float, Device::Cpu)); // the whole batch, on every rank
    let x_mine = x.narrow(0, rank * b, b);
    let new_head = |vs: &nn::VarStore| {
        selfsup::tch::manual_seed(4);
        Mlp::new(&(vs.root() / "h"), &head_config)
    };
    // SimCLR's loss of the head's projections of two views (x, and x reversed and shifted).
    let loss_of = |head: &Mlp, x: &Tensor, sync: Option<Arc<Dist>>| -> anyhow::Result<Tensor> {
        let n = x.size()[0];
        let views = Tensor::cat(&[x, &(x.flip([1]) * 0.5 + 1.0)], 0);
        let z = with_sync_batch_norm(sync.clone(), || head.forward_t(&views, true))?; // [2n, 8]
        let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        Ok(match &sync {
            Some(d) => nt_xent_across_ranks(&z1, &z2, 0.5, d)?,
            None => nt_xent(&z1, &z2, &NtXentConfig { temperature: 0.5 })?,
        })
    };

    // The gradient at the input: rank r's rows get every rank's loss through the statistics.
    let vs = nn::VarStore::new(Device::Cpu);
    let head = new_head(&vs)?;
    let mine = x_mine.detach().set_requires_grad(true);
    loss_of(&head, &mine, Some(dist.clone()))?.f_backward()?;
    let whole = x.detach().set_requires_grad(true);
    loss_of(&head, &whole, None)?.f_backward()?;
    let expected = whole.grad().narrow(0, rank * b, b) * 2.0;
    let diff = (mine.grad() - &expected).abs().max().double_value(&[]);
    ensure!(diff < 1e-5, "rank {rank}: the input's gradient differs from 2 × one process's by {diff}");

    // 4 SGD steps.
    let train = |x: &Tensor, sync: Option<Arc<Dist>>| -> anyhow::Result<Vec<(String, Tensor)>> {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = new_head(&vs)?;
        let mut opt = Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 1e-4, &[])?;
        opt.set_lr(0.1);
        let par = sync.clone().map(DataParallel::new).unwrap_or_default();
        for _ in 0..4 {
            opt.zero_grad();
            loss_of(&head, x, sync.clone())?.f_backward()?;
            par.average_gradients(&opt)?;
            opt.step()?;
        }
        Ok(sorted_vars(&vs))
    };
    let diff = max_difference(&train(&x_mine, Some(dist.clone()))?, &train(&x, None)?)?;
    ensure!(diff < 1e-5, "rank {rank}: the head's weights (and BN statistics) differ from one process's by {diff}");
    println!("rank {rank} sync_bn_head ok ({diff:e})");
    Ok(())
}

fn sync_bn_simclr(dist: Dist) -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var(DIR)?);
    let rank = dist.rank();
    let dist = Arc::new(dist);
    let set = synthetic::load(Split::Unlabeled, &SyntheticConfig::tiny())?.head(64);
    let augment = TwoViews::new(Augment::new(), Augment::new().then(Op::HorizontalFlip, 1.0));
    let config = SimClrConfig::tiny().backbone(ResNetConfig::default().small_images(true).width(8));
    let cfg = TrainConfig::tiny().batch_size(8).epochs(1).max_steps(1).optimizer(OptimizerConfig::sgd(0.9)).lr(0.01).progress(false);
    let run = |cfg: TrainConfig, out: PathBuf, init_seed: i64| -> anyhow::Result<(Vec<(String, Tensor)>, History)> {
        selfsup::tch::manual_seed(init_seed);
        let mut simclr = SimClr::new(config.clone(), Device::Cpu)?;
        let history = train::pretrain(&mut simclr, &set, &augment, &cfg, out)?;
        Ok((sorted_vars(simclr.online()), history))
    };
    let folder = |name: &str| if rank == 0 { dir.join(name) } else { dir.join(format!("{name}_rank{rank}")) };
    let (synced, synced_history) = run(cfg.clone().distributed(dist.clone()).sync_batch_norm(true), folder("synced"), 100 * rank as i64)?;
    let (plain, _) = run(cfg.clone().distributed(dist.clone()), folder("plain"), 100 * rank as i64)?;
    if rank != 0 {
        ensure!(!folder("synced").exists() && !folder("plain").exists(), "rank {rank} wrote a run folder");
        return Ok(());
    }
    let (single, history) = run(cfg, dir.join("single"), 0)?;
    let (d_synced, d_plain) = (max_difference(&synced, &single)?, max_difference(&plain, &single)?);
    ensure!(d_synced < 1e-6, "with SyncBatchNorm the weights differ from one process's by {d_synced}");
    ensure!(d_plain > 1e-4, "without SyncBatchNorm the weights should differ, by {d_plain} only");
    let (a, b) = (&history.steps[0], &synced_history.steps[0]);
    ensure!((a.loss - b.loss).abs() < 1e-6, "loss {} vs {} (two ranks)", a.loss, b.loss);
    println!("rank 0 sync_bn ok (synced {d_synced:e}, per-rank BN {d_plain:e})");
    Ok(())
}

/// A linear projection `[12] -> [5]` trained `steps` SGD steps on `(x1, x2)` with `loss`; the
/// gradients averaged over the ranks when `par` is a job.
fn train_projection(
    x1: &Tensor,
    x2: &Tensor,
    par: &DataParallel,
    steps: usize,
    loss: &dyn Fn(&Tensor, &Tensor) -> anyhow::Result<Tensor>,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let vs = nn::VarStore::new(Device::Cpu);
    selfsup::tch::manual_seed(11);
    let f = nn::linear(vs.root() / "g", 12, 5, Default::default());
    let mut opt = Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 1e-4, &[])?;
    opt.set_lr(0.1);
    for _ in 0..steps {
        opt.zero_grad();
        loss(&f.forward(x1), &f.forward(x2))?.f_backward()?;
        par.average_gradients(&opt)?;
        opt.step()?;
    }
    Ok(sorted_vars(&vs))
}

fn method_losses(dist: Dist) -> anyhow::Result<()> {
    let (rank, b) = (dist.rank() as i64, 6);
    let dist = Arc::new(dist);
    let par = DataParallel::new(dist.clone());
    selfsup::tch::manual_seed(5);
    let x1 = Tensor::randn([2 * b, 12], (Kind::Float, Device::Cpu)); // the whole batch, on every rank
    let x2 = &x1 + Tensor::randn([2 * b, 12], (Kind::Float, Device::Cpu)) * 0.3;
    let (m1, m2) = (x1.narrow(0, rank * b, b), x2.narrow(0, rank * b, b)); // this rank's rows
    let single = DataParallel::default();
    let tau = 0.5;

    let across = train_projection(&m1, &m2, &par, 4, &|z1, z2| Ok(nt_xent_across_ranks(z1, z2, tau, &dist)?))?;
    let alone = train_projection(&x1, &x2, &single, 4, &|z1, z2| Ok(nt_xent(z1, z2, &NtXentConfig { temperature: tau })?))?;
    let diff = max_difference(&across, &alone)?;
    ensure!(diff < 1e-5, "rank {rank}: SimCLR weights differ from one process's by {diff}");
    println!("rank {rank} simclr ok ({diff:e})");

    let bt_loss = |c: Tensor| -> anyhow::Result<Tensor> {
        let (on, off) = barlow_twins_terms(&c)?;
        Ok(on + off * 0.0051)
    };
    let across =
        train_projection(&m1, &m2, &par, 4, &|z1, z2| bt_loss(cross_correlation_across_ranks(z1, z2, 1e-5, &dist)?))?;
    let alone = train_projection(&x1, &x2, &single, 4, &|z1, z2| bt_loss(cross_correlation(z1, z2, 1e-5)?))?;
    let diff = max_difference(&across, &alone)?;
    ensure!(diff < 1e-5, "rank {rank}: Barlow Twins weights differ from one process's by {diff}");
    println!("rank {rank} barlow_twins ok ({diff:e})");
    Ok(())
}

fn moco_queue(dist: Dist) -> anyhow::Result<()> {
    let (rank, n) = (dist.rank() as i64, 4);
    let dist = Arc::new(dist);
    selfsup::tch::manual_seed(0);
    let mut moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?; // the same weights on both ranks
    moco.set_distributed(Some(dist.clone()))?;
    selfsup::tch::manual_seed(1);
    let v1_all = Tensor::randn([2 * n, 3, 32, 32], (Kind::Float, Device::Cpu));
    let v2_all = Tensor::randn([2 * n, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (v1, v2) = (v1_all.narrow(0, rank * n, n), v2_all.narrow(0, rank * n, n));
    // The step's only random draw is rank 0's permutation of the 2N keys' images.
    selfsup::tch::manual_seed(2);
    moco.training_step(&v1, &v2)?;
    selfsup::tch::manual_seed(2);
    let shuffle = Tensor::randperm(2 * n, (Kind::Int64, Device::Cpu));

    ensure!(moco.queue_ptr() == 2 * n, "rank {rank}: queue_ptr {}", moco.queue_ptr());
    let queue = moco.queue().shallow_clone(); // [C, K]
    let both = dist.all_gather(&queue.unsqueeze(0))?;
    ensure!(both.get(0).equal(&both.get(1)), "rank {rank}: the ranks' queues differ");

    // The keys as a single process computes them: each rank's shuffled share through the key
    // encoder (still equal to the query encoder: no optimizer step yet), back in image order.
    let keys = selfsup::tch::no_grad(|| -> anyhow::Result<Tensor> {
        let shares: Vec<Tensor> = (0..2)
            .map(|r| moco.query(&v2_all.index_select(0, &shuffle.narrow(0, r * n, n))))
            .collect::<Result<_, _>>()?;
        let k = selfsup::losses::l2_normalize(&Tensor::cat(&shares, 0))?; // [2N, C], shuffled order
        Ok(k.index_select(0, &shuffle.argsort(0, false))) // [2N, C]: rank 0's images, then rank 1's
    })?;
    let written = queue.narrow(1, 0, 2 * n).tr(); // [2N, C]
    let diff = (&written - &keys).abs().max().double_value(&[]);
    ensure!(diff < 1e-5, "rank {rank}: the queue's new keys differ from rank 0's then rank 1's by {diff}");
    println!("rank {rank} moco_queue ok");
    Ok(())
}

/// `selfsup-train --nproc 2` trains 2 steps of SimCLR as two ranks (rank 0 writes the run
/// folder); torchrun then starts the same command's ranks itself and continues the run to 3.
#[test]
fn selfsup_train_runs_with_nproc_and_under_torchrun() -> anyhow::Result<()> {
    let dir = TempDir::new("selfsup-train")?;
    let out = dir.0.join("run");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_selfsup-train"));
    let args = |steps: &str| -> Vec<String> {
        [
            "--method", "simclr", "--dataset", "synthetic", "--subset", "32", "--image-size", "32", "-b", "8", "--epochs",
            "1", "--max-steps", steps, "--precision", "off", "-j", "0", "--output",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    let run = |command: &mut Command| -> anyhow::Result<String> {
        let child = command
            .env("OMP_NUM_THREADS", "1")
            .env_remove("RANK")
            .env_remove("WORLD_SIZE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let Ok(out) = rx.recv_timeout(Duration::from_secs(180)) else {
            // SAFETY: kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            bail!("still running after 180 s (a hang), killed");
        };
        let out = out?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "failed:\n{text}");
        Ok(text)
    };
    let text = run(Command::new(&exe).args(args("2")).args(["--nproc", "2", "--sync-bn"]))?;
    ensure!(text.contains("starting 2 processes") && text.contains("× 2 processes"), "{text}");
    ensure!(train::checkpoint::load_history(&out)?.steps.len() == 2, "{text}");

    let Some(torchrun) = find_torchrun() else {
        common::tool_present("selfsup_train_runs_with_nproc_and_under_torchrun", false, "torchrun (the venv's) not found");
        return Ok(());
    };
    let port = free_port().to_string();
    let text = run(Command::new(&torchrun)
        .args(["--no-python", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", &port])
        .arg(&exe)
        .args(args("3")))?;
    let history = train::checkpoint::load_history(&out)?;
    ensure!(history.steps.len() == 3 && history.steps[2].step == 2, "{text}");
    ensure!(text.contains("resuming"), "{text}");
    Ok(())
}

#[test]
fn says_whether_nccl_was_compiled() {
    // Recorded in the test log; NCCL itself needs a GPU per rank (docs/distributed.md).
    let build = selfsup::distributed::nccl_build();
    eprintln!("NCCL: {build}");
    assert_eq!(Dist::nccl_compiled(), build == "compiled", "{build}");
}

// ---------------------------------------------------------------- the ranks

/// One rank of the tests above; does nothing unless they started it.
#[test]
#[ignore = "a rank of the multi-process tests, which start it with SELFSUP_DIST_TEST_SCENARIO set"]
fn worker() -> anyhow::Result<()> {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return Ok(());
    };
    if scenario == "missing_env" {
        let message = Dist::from_env().map(|_| ()).expect_err("no RANK, no job").to_string();
        ensure!(message.contains("RANK is not set") && message.contains("torchrun --no-python --nproc-per-node"), "{message}");
        return Ok(());
    }
    let timeout = Duration::from_millis(std::env::var(TIMEOUT)?.parse()?);
    if scenario == "no_store" {
        let start = Instant::now();
        let message = Dist::from_env_with(&DistConfig::default().timeout(timeout)).map(|_| ()).expect_err("a job of one").to_string();
        let address = format!("127.0.0.1:{}", std::env::var("MASTER_PORT")?);
        ensure!(message.contains(&address), "{message}");
        println!("failed after {:.1} s: {message}", start.elapsed().as_secs_f64());
        return Ok(());
    }
    let dist = Dist::from_env_with(&DistConfig::default().timeout(timeout))?;
    match scenario.as_str() {
        "collectives" => collectives(&dist),
        "gather_with_grad" => gather_with_grad(&dist),
        "killed_0" => killed(&dist, 0),
        "killed_1" => killed(&dist, 1),
        "ddp_supervised" => ddp_supervised(dist, 5),
        "method_losses" => method_losses(dist),
        "moco_queue" => moco_queue(dist),
        "sync_bn_simclr" => sync_bn_simclr(dist),
        "sync_bn_head" => sync_bn_head(dist),
        "ddp_resume" => ddp_supervised(dist, 3),
        "ddp_continue" | "ddp_mismatch" => {
            // Both ranks resume from <dir>/ddp; for the mismatch, rank 1 from an empty folder.
            let dir = PathBuf::from(std::env::var(DIR)?);
            let rank = dist.rank();
            let out = if scenario == "ddp_mismatch" && rank == 1 { dir.join("empty") } else { dir.join("ddp") };
            supervised_run(&out, single_config(6).distributed(Arc::new(dist)), 100 * rank as i64)?;
            println!("rank {rank} continued");
            Ok(())
        }
        "ddp_killed" => {
            let dir = PathBuf::from(std::env::var(DIR)?);
            let rank = dist.rank();
            let calls = std::cell::Cell::new(0);
            let kill = || {
                calls.set(calls.get() + 1);
                if rank == 1 && calls.get() == 3 {
                    // SAFETY: kill(2) on this very process, as a crash or an OOM killer would.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
            };
            let cfg = single_config(50).epochs(20).distributed(Arc::new(dist));
            supervised_run_with(&dir.join(format!("rank{rank}")), cfg, 0, &kill)?;
            bail!("rank {rank} trained 50 steps although rank 1 was killed")
        }
        "stalled_1" => {
            if dist.rank() == 1 {
                // Long enough for rank 0 to time out, then leave without a collective.
                std::thread::sleep(timeout * 2);
                return Ok(());
            }
            let mut t = Tensor::ones([4], (Kind::Float, Device::Cpu));
            dist.all_reduce_(&mut t, ReduceOp::Sum)?;
            bail!("rank 0's all_reduce returned although rank 1 never called it")
        }
        "torchrun" => {
            let mut t = Tensor::from_slice(&[dist.rank() as f32 + 1.0]);
            dist.all_reduce_(&mut t, ReduceOp::Sum)?;
            ensure!(t.double_value(&[0]) == 3.0);
            let all = dist.all_gather(&Tensor::from_slice(&[dist.rank() as i64]))?;
            ensure!(Vec::<i64>::try_from(&all)? == vec![0, 1]);
            println!("torchrun rank {} of {} ok (agent store: {})", dist.rank(), dist.world_size(), dist.env().agent_store);
            Ok(())
        }
        other => bail!("unknown scenario {other}"),
    }
}

fn values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?)
}

fn collectives(dist: &Dist) -> anyhow::Result<()> {
    let (rank, world) = (dist.rank(), dist.world_size());
    ensure!(world == 2 && dist.device() == Device::Cpu);
    let r = rank as f32;

    // all_reduce: sum and mean; a non-contiguous tensor; an integer one.
    let mut t = Tensor::from_slice(&[r + 1.0, 2.0 * (r + 1.0)]);
    dist.all_reduce_(&mut t, ReduceOp::Sum)?;
    ensure!(values(&t)? == [3.0, 6.0], "sum {t}");
    let mut t = Tensor::from_slice(&[r + 1.0, 2.0 * (r + 1.0)]);
    dist.all_reduce_(&mut t, ReduceOp::Avg)?;
    ensure!(values(&t)? == [1.5, 3.0], "avg {t}");
    let mut t = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]).tr() * (r as f64 + 1.0);
    ensure!(!t.is_contiguous());
    dist.all_reduce_(&mut t, ReduceOp::Sum)?;
    ensure!(values(&t)? == [0.0, 9.0, 3.0, 12.0, 6.0, 15.0], "transposed {t}");
    let mut t = Tensor::from_slice(&[rank as i64 + 10]);
    dist.all_reduce_(&mut t, ReduceOp::Sum)?;
    ensure!(t.int64_value(&[0]) == 21);
    ensure!(dist.all_reduce_(&mut t, ReduceOp::Avg).is_err(), "Avg of an integer tensor");

    // all_gather: rank order along dim 0; MoCo's concat_all_gather drops the gradient.
    let x = Tensor::full([2, 3], r as f64, (Kind::Float, Device::Cpu));
    let all = dist.all_gather(&x)?;
    ensure!(all.size() == [4, 3], "{:?}", all.size());
    ensure!(values(&all)? == [[0.0; 6], [1.0; 6]].concat(), "{all}");
    let keys = dist.concat_all_gather(&x.set_requires_grad(true))?;
    ensure!(!keys.requires_grad() && keys.size() == [4, 3]);

    // Mismatched shapes: an error naming both ranks' shapes, on both ranks, no hang.
    let uneven = Tensor::zeros([2 + rank as i64, 3], (Kind::Float, Device::Cpu));
    let message = dist.all_gather(&uneven).map(|_| ()).expect_err("mismatched shapes").to_string();
    ensure!(message.contains("rank 0: [2, 3] Float") && message.contains("rank 1: [3, 3] Float"), "{message}");

    // broadcast from rank 1, then a barrier.
    let mut t = Tensor::full([3], r as f64 * 7.0, (Kind::Double, Device::Cpu));
    dist.broadcast_(&mut t, 1)?;
    ensure!(values(&t)? == [7.0; 3], "{t}");
    ensure!(dist.broadcast_(&mut t, 2).is_err());
    dist.barrier()?;
    println!("rank {rank} collectives ok");
    Ok(())
}

/// A SimCLR-like loss over gathered keys: two ranks with B rows each get, through
/// `gather_with_grad`, `world` times the single-process gradient of the mean over 2B rows
/// (DDP's average of the parameter gradients over ranks divides it back).
fn gather_with_grad(dist: &Dist) -> anyhow::Result<()> {
    let (rank, world) = (dist.rank() as i64, dist.world_size() as i64);
    let (b, d) = (4, 5);
    selfsup::tch::manual_seed(7);
    let z_all = Tensor::randn([world * b, d], (Kind::Float, Device::Cpu)); // [2B, D], the same on both ranks
    let loss_of = |queries: &Tensor, keys: &Tensor| (queries.matmul(&keys.tr()) / 0.5).logsumexp([1], false).mean(Kind::Float);

    // Distributed: each rank holds its own rows and their gradient.
    let z = z_all.narrow(0, rank * b, b).detach().set_requires_grad(true); // [B, D]
    let keys = dist.gather_with_grad(&z)?; // [2B, D]
    ensure!(keys.size() == [world * b, d] && keys.requires_grad());
    ensure!(keys.allclose(&z_all, 0.0, 0.0, false), "the gathered rows are the ranks' rows in rank order");
    loss_of(&z, &keys).f_backward()?;
    let grad = z.grad();

    // One process, the whole batch.
    let z_ref = z_all.detach().set_requires_grad(true);
    loss_of(&z_ref, &z_ref).f_backward()?;
    let expected = z_ref.grad().narrow(0, rank * b, b) * world as f64;
    let diff = (&grad - &expected).abs().max().double_value(&[]);
    ensure!(diff < 1e-5, "rank {rank}: gradient differs by {diff}:\n{grad}\nvs\n{expected}");

    // The local slice only: with rank 1's loss ignoring the gathered rows, rank 0 still gets
    // rank 1's (zero) share and rank 1 still joins the backward's all-reduce.
    let z = z_all.narrow(0, rank * b, b).detach().set_requires_grad(true);
    let keys = dist.gather_with_grad(&z)?;
    let weight = Tensor::full([world * b, 1], (rank + 1) as f64, (Kind::Float, Device::Cpu));
    (keys * weight).sum(Kind::Float).f_backward()?;
    ensure!(values(&z.grad())? == vec![3.0; (b * d) as usize], "sum over ranks of 1 and 2: {}", z.grad());
    println!("rank {rank} gather_with_grad ok");
    Ok(())
}

/// Both ranks all-reduce in a loop; `victim` kills itself (SIGKILL) after three rounds. The
/// other must return an error, not hang.
fn killed(dist: &Dist, victim: usize) -> anyhow::Result<()> {
    for round in 0..10_000 {
        if dist.rank() == victim && round == 3 {
            // SAFETY: kill(2) on this very process, as a crash or an OOM killer would.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        let mut t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
        dist.all_reduce_(&mut t, ReduceOp::Sum)?;
    }
    bail!("rank {} finished 10000 rounds although rank {victim} was killed", dist.rank())
}
