//! # Data-parallel building blocks on PyTorch's own distributed engine (c10d)
//!
//! Several processes (ranks), one per GPU or CPU socket, each holding a copy of the model and
//! exchanging tensors through PyTorch's c10d: the same `TCPStore` rendezvous, the same Gloo
//! (CPU tensors) and NCCL (CUDA tensors) backends and the same launcher, `torchrun`, that
//! `torch.distributed` uses (Li et al. 2020, *PyTorch Distributed: Experiences on Accelerating
//! Data Parallel Training*, <https://arxiv.org/abs/2006.15704>). tch has no distributed API, so
//! a small C++ shim (`csrc/distributed.cpp`, compiled by `build.rs` with the `distributed`
//! feature) reaches the c10d classes inside the libtorch the kit already links.
//!
//! What is here: [`Dist`] (rendezvous from the environment torchrun or SLURM sets, and the
//! collectives `all_reduce_`, `all_gather`, `broadcast_`, `barrier`), the methods' building
//! blocks ([`Dist::concat_all_gather`] for MoCo's keys, [`Dist::gather_with_grad`] for SimCLR's
//! negatives) and the distributed sampler [`shard_indices`]. Data-parallel training in the
//! engine is built on these (docs/distributed.md says what is done and what is planned).
//!
//! ```no_run
//! // torchrun --no-python --nproc-per-node 2 target/release/examples/my_worker
//! use selfsup::distributed::{Dist, ReduceOp};
//! use selfsup::tch::{Kind, Tensor};
//! let dist = Dist::from_env()?;
//! let mut t = Tensor::ones([3], (Kind::Float, dist.device())) * (dist.rank() as f64 + 1.0);
//! dist.all_reduce_(&mut t, ReduceOp::Sum)?; // [3., 3., 3.] on both ranks
//! let all = dist.all_gather(&t)?; // [6]: rank 0's rows, then rank 1's
//! # Ok::<(), selfsup::Error>(())
//! ```
//!
//! Not for notebooks: a notebook is one process. Build with `--features distributed`.
mod ffi;
mod launch;
mod sampler;

use std::fmt;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

pub use launch::launch_local;
pub use sampler::shard_indices;

use crate::error::{config_err, Error, Result};

/// Where this process sits in the job: what `torchrun` (or SLURM) tells each rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// This process's global rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Number of processes in the job (`WORLD_SIZE`).
    pub world_size: usize,
    /// This process's rank on its machine, the CUDA device it uses (`LOCAL_RANK`).
    pub local_rank: usize,
    /// Host of the rendezvous store: rank 0's machine (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the rendezvous store (`MASTER_PORT`).
    pub master_port: u16,
    /// The store is already hosted by torchrun's agent, so rank 0 connects as a client too
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`, set by torchrun).
    pub agent_store: bool,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`); keeps a restarted job's store
    /// keys apart from the failed attempt's.
    pub restart_count: u32,
}

/// The torchrun line the error messages suggest.
const LAUNCH_HINT: &str = "start every process with torchrun, e.g. `torchrun --no-python --nproc-per-node 2 \
    target/release/<binary> …` (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); under \
    SLURM's srun, RANK/WORLD_SIZE/LOCAL_RANK default to SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and the \
    batch script exports MASTER_ADDR and MASTER_PORT (docs/distributed.md)";

impl DistEnv {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (as torchrun sets
    /// them), falling back to SLURM's `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` for the
    /// first three. `LOCAL_RANK` defaults to 0.
    ///
    /// # Errors
    /// A variable is missing or not a number (the message names it and the torchrun command),
    /// or `RANK >= WORLD_SIZE`.
    pub fn from_env() -> Result<DistEnv> {
        fn var(names: &[&str]) -> Option<(String, String)> {
            names.iter().find_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v.trim().to_string())))
        }
        fn number<T: std::str::FromStr>(names: &[&str], default: Option<T>) -> Result<T> {
            match var(names) {
                Some((name, value)) => value
                    .parse()
                    .map_err(|_| config_err!("{name}={value:?} is not a non-negative integer; {LAUNCH_HINT}")),
                None => default.ok_or_else(|| config_err!("{} is not set: {LAUNCH_HINT}", names[0])),
            }
        }
        let rank = number(&["RANK", "SLURM_PROCID"], None)?;
        let world_size = number(&["WORLD_SIZE", "SLURM_NTASKS"], None)?;
        let local_rank = number(&["LOCAL_RANK", "SLURM_LOCALID"], Some(0))?;
        let master_addr = var(&["MASTER_ADDR"])
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| config_err!("MASTER_ADDR is not set: {LAUNCH_HINT}"))?;
        let master_port = number(&["MASTER_PORT"], None)?;
        let agent_store = std::env::var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Ok("True");
        let restart_count = number(&["TORCHELASTIC_RESTART_COUNT"], Some(0))?;
        let env = DistEnv { rank, world_size, local_rank, master_addr, master_port, agent_store, restart_count };
        env.validate()?;
        Ok(env)
    }

    /// Rank `rank` of `world_size` processes on this machine, rendezvous at 127.0.0.1:`port`
    /// (tests, and a launcher that starts the local processes itself).
    pub fn local(rank: usize, world_size: usize, port: u16) -> DistEnv {
        DistEnv {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            restart_count: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(config_err!("WORLD_SIZE must be at least 1, got 0; {LAUNCH_HINT}"));
        }
        if self.rank >= self.world_size {
            return Err(config_err!(
                "RANK={} is out of range for WORLD_SIZE={} (ranks are 0..{}); {LAUNCH_HINT}",
                self.rank,
                self.world_size,
                self.world_size
            ));
        }
        Ok(())
    }

    /// `MASTER_ADDR:MASTER_PORT`.
    pub fn address(&self) -> String {
        if self.master_addr.contains(':') {
            format!("[{}]:{}", self.master_addr, self.master_port)
        } else {
            format!("{}:{}", self.master_addr, self.master_port)
        }
    }
}

/// Which c10d backend carries CUDA tensors. CPU tensors and [`Dist::barrier`] always use Gloo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistBackend {
    /// NCCL for CUDA tensors when this build has it and this rank's GPU (`LOCAL_RANK`) exists;
    /// Gloo for everything otherwise (`torch.distributed`'s `"cpu:gloo,cuda:nccl"`).
    Auto,
    /// Gloo only.
    Gloo,
    /// NCCL for CUDA tensors; an error if this build has no NCCL or the GPU is missing.
    Nccl,
}

/// How [`Dist`] starts.
#[derive(Debug, Clone)]
pub struct DistConfig {
    /// How long the rendezvous and every collective may wait for the other ranks before failing
    /// (10 min: ProcessGroupNCCL's default; `torch.distributed`'s Gloo default is 30 min).
    pub timeout: Duration,
    /// Backend for CUDA tensors.
    pub backend: DistBackend,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { timeout: Duration::from_secs(600), backend: DistBackend::Auto }
    }
}

impl DistConfig {
    /// Sets [`DistConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`DistConfig::backend`].
    pub fn backend(mut self, backend: DistBackend) -> Self {
        self.backend = backend;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err(config_err!("DistConfig.timeout must be between 1 ms and 7 days, got {:?}", self.timeout));
        }
        Ok(())
    }
}

/// How [`Dist::all_reduce_`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean over ranks (a sum divided by the world size: Gloo has no AVG).
    Avg,
}

/// This process's membership in a distributed job: the rendezvous store, a Gloo group and,
/// for CUDA tensors, an NCCL group.
///
/// Every collective must be called by every rank, in the same order, with tensors of the same
/// shape and kind; each waits at most [`DistConfig::timeout`] and returns
/// [`Error::Distributed`] instead of hanging when a peer died or stopped answering.
pub struct Dist {
    env: DistEnv,
    timeout: Duration,
    // Groups before the store: fields drop in this order.
    nccl: Option<ffi::Group>,
    gloo: ffi::Group,
    _store: ffi::Store,
}

impl fmt::Debug for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dist")
            .field("rank", &self.env.rank)
            .field("world_size", &self.env.world_size)
            .field("local_rank", &self.env.local_rank)
            .field("store", &self.env.address())
            .field("cuda_backend", &if self.nccl.is_some() { "nccl" } else { "gloo" })
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Dist {
    /// Joins the job described by the environment ([`DistEnv::from_env`]) with
    /// [`DistConfig::default`].
    ///
    /// # Errors
    /// As [`DistEnv::from_env`] and [`Dist::new`].
    pub fn from_env() -> Result<Dist> {
        Dist::new(&DistEnv::from_env()?, &DistConfig::default())
    }

    /// Joins the job described by the environment with `cfg`.
    ///
    /// # Errors
    /// As [`DistEnv::from_env`] and [`Dist::new`].
    pub fn from_env_with(cfg: &DistConfig) -> Result<Dist> {
        Dist::new(&DistEnv::from_env()?, cfg)
    }

    /// Rendezvous through the TCPStore at `env.address()` (hosted by rank 0, or by torchrun's
    /// agent), then sets up Gloo (and NCCL, see [`DistBackend`]). Returns when all
    /// `world_size` ranks have joined.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad `env`/`cfg`; [`Error::Distributed`] when the store cannot be
    /// reached or hosted within the timeout (the message names the address tried), or the
    /// backends cannot connect the ranks.
    pub fn new(env: &DistEnv, cfg: &DistConfig) -> Result<Dist> {
        env.validate()?;
        cfg.validate()?;
        let timeout_ms = cfg.timeout.as_millis() as i64;
        let address = env.address();
        let is_server = env.rank == 0 && !env.agent_store;
        let store = ffi::Store::new(&env.master_addr, env.master_port, env.world_size, is_server, timeout_ms).map_err(|e| {
            let what = if is_server {
                format!(
                    "rank 0 hosts the rendezvous store at {address} and waited {:?} for the other {} rank(s) to connect",
                    cfg.timeout,
                    env.world_size - 1
                )
            } else {
                format!(
                    "rank {} could not reach the rendezvous store at {address} (timeout {:?}); is rank 0 (or \
                     torchrun) running there, and do all ranks have the same MASTER_ADDR and MASTER_PORT?",
                    env.rank, cfg.timeout
                )
            };
            Error::Distributed(format!("{what} (libtorch: {e})"))
        })?;
        let prefix = format!("selfsup/attempt_{}/", env.restart_count);
        let gloo = ffi::Group::gloo(&store, &format!("{prefix}gloo/"), &env.master_addr, env.rank, env.world_size, timeout_ms)
            .map_err(|e| {
                Error::Distributed(format!(
                    "rank {} of {}: connecting the Gloo group (store {address}) failed: {e}; on several machines, \
                     set GLOO_SOCKET_IFNAME to the network interface the machines share",
                    env.rank, env.world_size
                ))
            })?;
        let nccl = match cfg.backend {
            DistBackend::Gloo => None,
            DistBackend::Auto if !ffi::nccl_compiled() || crate::device::cuda_device_count() <= env.local_rank => None,
            DistBackend::Auto | DistBackend::Nccl => {
                if !ffi::nccl_compiled() {
                    return Err(Error::Distributed(format!(
                        "DistBackend::Nccl asked for, but this build has no NCCL ({}); see docs/distributed.md",
                        nccl_build()
                    )));
                }
                let gpus = crate::device::cuda_device_count();
                if gpus <= env.local_rank {
                    return Err(Error::Distributed(format!(
                        "DistBackend::Nccl: LOCAL_RANK={} needs CUDA device {}, but {gpus} are visible",
                        env.local_rank, env.local_rank
                    )));
                }
                Some(ffi::Group::nccl(&store, &format!("{prefix}nccl/"), env.rank, env.world_size, timeout_ms).map_err(|e| {
                    Error::Distributed(format!("rank {} of {}: creating the NCCL group failed: {e}", env.rank, env.world_size))
                })?)
            }
        };
        Ok(Dist { env: env.clone(), timeout: cfg.timeout, nccl, gloo, _store: store })
    }

    /// This process's global rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Number of processes in the job.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// This process's rank on its machine.
    pub fn local_rank(&self) -> usize {
        self.env.local_rank
    }

    /// Rank 0: the one that writes checkpoints, history and progress.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// The environment this process joined with.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// Where this rank's tensors live: `Cuda(local_rank)` when CUDA tensors go through NCCL,
    /// else the CPU.
    pub fn device(&self) -> Device {
        if self.nccl.is_some() {
            Device::Cuda(self.env.local_rank)
        } else {
            Device::Cpu
        }
    }

    /// Whether this build compiled the NCCL backend (see [`nccl_build`]).
    pub fn nccl_compiled() -> bool {
        ffi::nccl_compiled()
    }

    fn group_for(&self, tensor: &Tensor) -> (&ffi::Group, &'static str) {
        match (&self.nccl, tensor.device()) {
            (Some(nccl), Device::Cuda(_)) => (nccl, "NCCL"),
            _ => (&self.gloo, "Gloo"),
        }
    }

    fn failed(&self, op: &str, backend: &str, e: String) -> Error {
        Error::Distributed(format!(
            "rank {} of {}: {op} over {backend} failed: {e} (another rank exited, stopped answering within {:?}, \
             or called a different collective; store {})",
            self.env.rank,
            self.env.world_size,
            self.timeout,
            self.env.address()
        ))
    }

    /// Combines `tensor` over all ranks, in place: afterwards every rank holds the same sum
    /// (or mean). Any shape; [`ReduceOp::Avg`] needs a floating-point kind. Runs under
    /// `no_grad`, so parameters and gradients can be reduced directly.
    ///
    /// # Errors
    /// [`Error::Config`] for `Avg` on an integer tensor; [`Error::Distributed`] when the
    /// collective fails or times out.
    pub fn all_reduce_(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        if op == ReduceOp::Avg && !tensor.is_floating_point() {
            return Err(config_err!("all_reduce_ with ReduceOp::Avg needs a floating-point tensor, got {:?}", tensor.kind()));
        }
        let (group, backend) = self.group_for(tensor);
        group.all_reduce_sum(tensor).map_err(|e| self.failed("all_reduce", backend, e))?;
        if op == ReduceOp::Avg {
            let world = self.env.world_size as f64;
            let _ = tch::no_grad(|| tensor.f_div_scalar_(world))?;
        }
        Ok(())
    }

    /// Concatenates every rank's `[B, ...]` along dim 0 in rank order: `[world · B, ...]`,
    /// rank 0's rows first, the same on every rank. No gradient (see
    /// [`Dist::gather_with_grad`]).
    ///
    /// A small all-gather first checks that every rank sent the same shape and kind, so that a
    /// mismatch is an error naming each rank's shape rather than a hang.
    ///
    /// # Shapes
    /// `[B, ...]` → `[world · B, ...]`.
    ///
    /// # Errors
    /// [`Error::Shape`] for a 0-d tensor; [`Error::Distributed`] when the ranks' shapes differ
    /// or the collective fails.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        self.check_same_shape("all_gather", tensor)?;
        let (group, backend) = self.group_for(tensor);
        group.all_gather(tensor).map_err(|e| self.failed("all_gather", backend, e))
    }

    /// MoCo's `concat_all_gather`: the keys of every rank, concatenated in rank order and
    /// detached ("gather keys before updating queue", `moco/builder.py`). The same as
    /// [`Dist::all_gather`], named as in the reference code.
    ///
    /// # Shapes
    /// `[N, C]` → `[world · N, C]`.
    ///
    /// # Errors
    /// As [`Dist::all_gather`].
    pub fn concat_all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        self.all_gather(tensor)
    }

    /// SimCLR's gather of the negatives across ranks, differentiable: the forward is
    /// [`Dist::all_gather`]; the backward sums the gradient arriving at the gathered tensor
    /// over all ranks and gives each rank the rows that were its own (the all-reduce gradient of
    /// `tpu_cross_replica_concat` in the official SimCLR; lightly's `GatherLayer`). So the local
    /// slice keeps its gradient, and it receives the gradient of *every* rank's loss through it:
    /// with each rank's loss a mean over its own rows, averaging the parameter gradients over
    /// ranks gives exactly the single-process gradient of the whole batch.
    ///
    /// Every rank must run the backward of a graph that used the result (the backward is a
    /// collective too). tch's `backward()` panics if that collective fails; call
    /// `f_backward()` to get the error as a `Result`.
    ///
    /// # Shapes
    /// `[B, D]` → `[world · B, D]`, rows `rank · B .. (rank + 1) · B` being `tensor`'s.
    ///
    /// # Errors
    /// As [`Dist::all_gather`].
    pub fn gather_with_grad(&self, tensor: &Tensor) -> Result<Tensor> {
        self.check_same_shape("gather_with_grad", tensor)?;
        let (group, backend) = self.group_for(tensor);
        group.gather_with_grad(tensor).map_err(|e| self.failed("gather_with_grad", backend, e))
    }

    /// The sum of `tensor` over the ranks, differentiable: the backward sums the gradients
    /// arriving at the result over the ranks too (an all-reduce whose gradient is an all-reduce,
    /// as the statistics of PyTorch's `SyncBatchNorm`). Through [`Dist::gather_with_grad`], so it
    /// moves `world ×` the tensor: for small tensors (per-channel statistics).
    ///
    /// # Shapes
    /// Any `[...]` → the same.
    ///
    /// # Errors
    /// As [`Dist::gather_with_grad`].
    pub fn sum_with_grad(&self, tensor: &Tensor) -> Result<Tensor> {
        let gathered = self.gather_with_grad(&tensor.unsqueeze(0))?; // [world, ...]
        Ok(gathered.f_sum_dim_intlist([0i64].as_slice(), false, tensor.kind())?)
    }

    /// Overwrites `tensor` on every rank with rank `root`'s, in place (the parameters at the
    /// start of data-parallel training). Checks the ranks' shapes first, as
    /// [`Dist::all_gather`] does.
    ///
    /// # Errors
    /// [`Error::Config`] for `root >= world_size`; [`Error::Distributed`] when the shapes
    /// differ or the collective fails.
    pub fn broadcast_(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        if root >= self.env.world_size {
            return Err(config_err!("broadcast_: root {root} out of range for world size {}", self.env.world_size));
        }
        self.check_same_shape("broadcast", tensor)?;
        let (group, backend) = self.group_for(tensor);
        group.broadcast(tensor, root).map_err(|e| self.failed("broadcast", backend, e))
    }

    /// Waits until every rank has reached this call (over Gloo).
    ///
    /// # Errors
    /// [`Error::Distributed`] when a rank does not arrive within the timeout or has died.
    pub fn barrier(&self) -> Result<()> {
        self.gloo.barrier().map_err(|e| self.failed("barrier", "Gloo", e))
    }

    /// All-gathers `[ndim, kind, d0, …, d7]` (on the CPU, over Gloo) and compares the ranks'.
    fn check_same_shape(&self, op: &str, tensor: &Tensor) -> Result<()> {
        const MAX_DIMS: usize = 8;
        let size = tensor.size();
        if size.is_empty() {
            return Err(Error::shape(format!("{op} input"), "[B, ...] (at least one dimension)", &size));
        }
        if size.len() > MAX_DIMS {
            return Err(Error::shape(format!("{op} input"), format!("at most {MAX_DIMS} dimensions"), &size));
        }
        let mut header = vec![0i64; MAX_DIMS + 2];
        header[0] = size.len() as i64;
        header[1] = tensor.kind() as i64;
        header[2..2 + size.len()].copy_from_slice(&size);
        let mine = Tensor::from_slice(&header).reshape([1, -1]);
        let all = self.gloo.all_gather(&mine).map_err(|e| self.failed(op, "Gloo", e))?;
        let rows: Vec<Vec<i64>> = (0..self.env.world_size)
            .map(|r| Vec::<i64>::try_from(all.get(r as i64)))
            .collect::<Result<_, _>>()?;
        if rows.iter().all(|row| row == &header) {
            return Ok(());
        }
        let describe = |row: &Vec<i64>| {
            let ndim = row[0].clamp(0, MAX_DIMS as i64) as usize;
            let kind = KINDS.iter().find(|k| **k as i64 == row[1]).map(|k| format!("{k:?}")).unwrap_or_else(|| format!("kind {}", row[1]));
            format!("{:?} {kind}", &row[2..2 + ndim])
        };
        let listed: Vec<String> = rows.iter().enumerate().map(|(r, row)| format!("rank {r}: {}", describe(row))).collect();
        Err(Error::Distributed(format!(
            "{op}: every rank must pass the same shape and kind, got {}",
            listed.join(", ")
        )))
    }
}

/// Kinds, for naming a mismatched one in an error.
const KINDS: [Kind; 8] = [Kind::Uint8, Kind::Int8, Kind::Int, Kind::Int64, Kind::Half, Kind::BFloat16, Kind::Float, Kind::Double];

/// Whether NCCL was compiled into this build, and if not why (`"compiled"`, or
/// `"not compiled: nv/target not found …"`), as build.rs found it.
pub fn nccl_build() -> &'static str {
    option_env!("SELFSUP_NCCL_BUILD").unwrap_or("not compiled: build.rs did not find libtorch")
}
