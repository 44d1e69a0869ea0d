//! The CPU path of [`Augment::apply`](super::Augment::apply): every op on one image at a time.
//!
//! On a GPU the batched ops of [`super::ops`] are right: a few kernels per op, whatever the batch
//! size. On a CPU each of those kernels is a pass over the whole batch in memory, and the
//! per-sample choices cost more passes still: ColorJitter alone is four blends (one per position
//! of the random order) and a hue rotation on each subset that has it there, gathered out and
//! scattered back. On 2 cores that was 8.9 ms of the benchmark's 207 ms SimCLR step (batch 64 at
//! 32 px, two views), the part PyTorch's compute-only reference does not have, and 10 % of
//! notebook 03's step (BENCHMARKS.md, issue 17).
//!
//! Here each image goes through its whole pipeline while it sits in the core's cache (3 × 32 ×
//! 32 floats are 12 KB): crop, flip, its jitter parts in its own order, grayscale, blur,
//! solarize and normalisation, then one write to the output: 3–5× faster. The batch is split
//! over libtorch's own OpenMP threads (`at::get_num_threads` of them), which idle meanwhile.
//!
//! The random numbers are drawn first, op by op for the whole batch, by the same functions the
//! batched ops draw with ([`ops::sample_crop_boxes`], [`ops::sample_mask`], …), so a seed gives
//! the same crop boxes, coins and factors on either path. The pixels agree with the batched path
//! to float rounding (`tests/augment.rs` checks every preset to 1e-4 after normalisation); the
//! formulas are those of [`ops`]' deterministic functions, with their stated deviations from
//! torchvision.
use super::ops::{self, ColorJitter, CropBox, JitterParams, LUMA_WEIGHTS};
use super::pipeline::{Op, Step};
use crate::data::Normalization;
use crate::error::{Error, Result};
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// One step's draws for the whole batch, in the order the batched op draws them.
enum Drawn {
    /// A box per sample, resized to `size × size`.
    Crop { boxes: Vec<CropBox>, size: usize },
    /// Samples mirrored.
    Flip(Vec<bool>),
    /// Samples jittered, and the parameters of those samples (in batch order).
    Jitter { mask: Vec<bool>, jitter: ColorJitter, params: JitterParams },
    /// Samples turned grey.
    Grayscale(Vec<bool>),
    /// Samples blurred and their σ (in batch order), with the kernel side for the image side at
    /// this step.
    Blur { mask: Vec<bool>, sigmas: Vec<f64>, kernel: usize },
    /// Samples solarised at `threshold`.
    Solarize { mask: Vec<bool>, threshold: f32 },
    /// Per-channel mean and std.
    Normalize { mean: [f32; 3], std: [f32; 3] },
}

/// What one sample does at one step, read off the batch's draws.
enum Action<'a> {
    Skip,
    Crop(CropBox, usize),
    Flip,
    Jitter { order: [usize; 4], factors: [f32; 3], hue: f32, enabled: [bool; 4] },
    Grayscale,
    Blur(&'a [f32]),
    Solarize(f32),
    Normalize(&'a [f32; 3], &'a [f32; 3]),
}

/// Per-sample index into the list of drawn values of the samples a mask selects.
fn ranks(mask: &[bool]) -> Vec<usize> {
    let mut next = 0;
    mask.iter()
        .map(|&m| {
            let r = next;
            next += m as usize;
            r
        })
        .collect()
}

/// A drawn step with what each sample needs precomputed (jitter ranks, blur kernels).
struct Prepared {
    drawn: Drawn,
    ranks: Vec<usize>,
    kernels: Vec<Vec<f32>>,
}

impl Prepared {
    fn action(&self, i: usize) -> Action<'_> {
        match &self.drawn {
            Drawn::Crop { boxes, size } => Action::Crop(boxes[i], *size),
            Drawn::Flip(m) => if m[i] { Action::Flip } else { Action::Skip },
            Drawn::Grayscale(m) => if m[i] { Action::Grayscale } else { Action::Skip },
            Drawn::Solarize { mask, threshold } => if mask[i] { Action::Solarize(*threshold) } else { Action::Skip },
            Drawn::Normalize { mean, std } => Action::Normalize(mean, std),
            Drawn::Jitter { mask, jitter, params } => {
                if !mask[i] {
                    return Action::Skip;
                }
                let r = self.ranks[i];
                Action::Jitter {
                    order: params.order[r],
                    factors: [params.brightness[r] as f32, params.contrast[r] as f32, params.saturation[r] as f32],
                    hue: params.hue[r] as f32,
                    enabled: [jitter.brightness > 0.0, jitter.contrast > 0.0, jitter.saturation > 0.0, jitter.hue > 0.0],
                }
            }
            Drawn::Blur { mask, kernel, .. } => {
                if mask[i] && *kernel > 1 {
                    Action::Blur(&self.kernels[self.ranks[i]])
                } else {
                    Action::Skip
                }
            }
        }
    }
}

/// Draws every step's random numbers for a batch of `b` images of `h × w`, as the batched ops
/// do, checking what they check.
fn draw<R: Rng + ?Sized>(steps: &[Step], b: i64, mut h: i64, mut w: i64, rng: &mut R) -> Result<Vec<Prepared>> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let p = step.p;
        let drawn = match &step.op {
            Op::RandomResizedCrop(c) => {
                let boxes = ops::sample_crop_boxes(h, w, b, c, rng)?;
                (h, w) = (c.size, c.size);
                Drawn::Crop { boxes, size: c.size as usize }
            }
            Op::HorizontalFlip => Drawn::Flip(ops::sample_mask(b, p, rng)),
            Op::ColorJitter(j) => {
                let (mask, params) = ops::draw_jitter(b, j, p, rng)?;
                Drawn::Jitter { mask, jitter: *j, params }
            }
            Op::Grayscale => Drawn::Grayscale(ops::sample_mask(b, p, rng)),
            Op::GaussianBlur(cfg) => {
                let kernel = cfg.kernel_for(h.min(w));
                let (mask, sigmas) = ops::draw_blur(b, cfg, p, rng);
                if !sigmas.is_empty() {
                    ops::check_blur_kernel(kernel, h, w)?;
                }
                Drawn::Blur { mask, sigmas, kernel: kernel as usize }
            }
            Op::Solarize { threshold } => {
                Drawn::Solarize { mask: ops::sample_mask(b, p, rng), threshold: *threshold as f32 }
            }
            Op::Normalize(Normalization { mean, std }) => Drawn::Normalize {
                mean: mean.map(|v| v as f32),
                std: std.map(|v| v as f32),
            },
        };
        let (ranks, kernels) = match &drawn {
            Drawn::Jitter { mask, .. } => (ranks(mask), Vec::new()),
            Drawn::Blur { mask, sigmas, kernel } => {
                let kernels = sigmas
                    .iter()
                    .map(|&s| ops::gaussian_kernel(s, *kernel as i64).map(|k| k.into_iter().map(|v| v as f32).collect()))
                    .collect::<Result<Vec<Vec<f32>>>>()?;
                (ranks(mask), kernels)
            }
            _ => (Vec::new(), Vec::new()),
        };
        out.push(Prepared { drawn, ranks, kernels });
    }
    Ok(out)
}

/// The pipeline `steps` on a CPU batch `[B, 3, H, W]` (u8 0..=255 or f32 in `[0, 1]`), image by
/// image; f32 `[B, 3, S, S]`. The caller has validated the steps and the shape.
pub(crate) fn apply<R: Rng + ?Sized>(steps: &[Step], images: &Tensor, rng: &mut R) -> Result<Tensor> {
    debug_assert_eq!(images.device(), Device::Cpu);
    let s = images.size();
    let (b, h, w) = (s[0], s[2], s[3]);
    let plan = draw(steps, b, h, w, rng)?;
    let side = plan.iter().rev().find_map(|p| match p.drawn {
        Drawn::Crop { size, .. } => Some(size),
        _ => None,
    });
    let (oh, ow) = side.map_or((h as usize, w as usize), |s| (s, s));
    let (b, h, w) = (b as usize, h as usize, w as usize);

    let source = match images.kind() {
        Kind::Uint8 | Kind::Float => images.contiguous(),
        Kind::Double | Kind::Half | Kind::BFloat16 => images.to_kind(Kind::Float).contiguous(),
        other => {
            return Err(Error::Data(format!(
                "Augment::apply: expected u8 images (0..=255) or floats in [0, 1], got {other:?}"
            )))
        }
    };
    let out = Tensor::empty([b as i64, 3, oh as i64, ow as i64], (Kind::Float, Device::Cpu));
    let (in_len, out_len) = (3 * h * w, 3 * oh * ow);
    // SAFETY: `source` and `out` are contiguous CPU tensors of these element types and sizes,
    // alive until the end of this function; `out` is fresh, so nothing else reads or writes it.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, b * out_len) };
    let src = match source.kind() {
        Kind::Uint8 => Source::U8(unsafe { std::slice::from_raw_parts(source.data_ptr() as *const u8, b * in_len) }),
        _ => Source::F32(unsafe { std::slice::from_raw_parts(source.data_ptr() as *const f32, b * in_len) }),
    };

    // One contiguous run of images per thread; each thread writes only its own images' output.
    let threads = (tch::get_num_threads().max(1) as usize).min(b);
    let per_thread = b.div_ceil(threads);
    let chunks: Vec<std::sync::Mutex<&mut [f32]>> = dst.chunks_mut(per_thread * out_len).map(std::sync::Mutex::new).collect();
    parallel::for_each(chunks.len(), &|t| {
        let mut dst = chunks[t].lock().unwrap_or_else(|e| e.into_inner());
        let mut image = Image::default();
        for (k, out) in dst.chunks_mut(out_len).enumerate() {
            let i = t * per_thread + k;
            image.load(&src, i * in_len, h, w);
            for step in &plan {
                image.apply(&step.action(i));
            }
            debug_assert_eq!((image.h, image.w), (oh, ow));
            out.copy_from_slice(&image.data);
        }
    });
    Ok(out)
}

/// Work split over libtorch's own intra-op threads.
mod parallel {
    use std::any::Any;
    use std::ffi::c_void;
    use std::sync::{Mutex, OnceLock};

    type Parallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);
    type Query = unsafe extern "C" fn() -> i32;

    /// libgomp's `GOMP_parallel`, `omp_get_thread_num` and `omp_get_num_threads`, when the process
    /// has them: the entry points a compiled `#pragma omp parallel` calls, and the pool that
    /// libtorch's CPU kernels run on (`at::parallel_for`, PyTorch's Linux builds use OpenMP).
    fn openmp() -> Option<(Parallel, Query, Query)> {
        static OPENMP: OnceLock<Option<(usize, usize, usize)>> = OnceLock::new();
        let found = OPENMP.get_or_init(|| {
            #[cfg(unix)]
            {
                // SAFETY: dlsym with NUL-terminated names only looks them up.
                let find = |name: &std::ffi::CStr| unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize };
                let (p, t, n) = (find(c"GOMP_parallel"), find(c"omp_get_thread_num"), find(c"omp_get_num_threads"));
                (p != 0 && t != 0 && n != 0).then_some((p, t, n))
            }
            #[cfg(not(unix))]
            None
        });
        // SAFETY: the addresses are those of the functions with these C signatures (libgomp's ABI).
        found.map(|(p, t, n)| unsafe {
            (std::mem::transmute::<usize, Parallel>(p), std::mem::transmute::<usize, Query>(t), std::mem::transmute::<usize, Query>(n))
        })
    }

    struct Job<'a> {
        items: usize,
        work: &'a (dyn Fn(usize) + Sync),
        thread_num: Query,
        team_size: Query,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
    }

    extern "C" fn run(data: *mut c_void) {
        // SAFETY: `data` is the `Job` that `for_each` passed, alive until GOMP_parallel returns.
        let job = unsafe { &*(data as *const Job) };
        // SAFETY: inside a parallel region these only read the team's state.
        let (t, team) = unsafe { ((job.thread_num)().max(0) as usize, (job.team_size)().max(1) as usize) };
        // No unwinding across the C frames: a panic is kept and raised again on the caller.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (t..job.items).step_by(team).for_each(|i| (job.work)(i));
        }));
        if let Err(payload) = result {
            job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
        }
    }

    /// Runs `work(i)` for every `i < items`, spread over up to `items` threads of libtorch's
    /// OpenMP pool, and returns when all are done. Those threads are idle between libtorch's
    /// kernels but spin for a while before they sleep, so threads of our own would share the
    /// cores with them; the pool's own threads start at once. Without OpenMP in the process
    /// (another platform's build), scoped threads of our own do the same.
    pub(super) fn for_each(items: usize, work: &(dyn Fn(usize) + Sync)) {
        if items <= 1 {
            (0..items).for_each(work);
            return;
        }
        match openmp() {
            Some((parallel, thread_num, team_size)) => {
                let job = Job { items, work, thread_num, team_size, panic: Mutex::new(None) };
                // SAFETY: `run` matches the callback type and `job` outlives the call, which
                // returns after every thread of the team has finished `run`.
                unsafe { parallel(run, &job as *const Job as *mut c_void, items as u32, 0) };
                if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    std::panic::resume_unwind(payload);
                }
            }
            None => scoped(items, work),
        }
    }

    /// [`for_each`] on threads of our own, where the process has no OpenMP.
    pub(super) fn scoped(items: usize, work: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..items).map(|i| scope.spawn(move || work(i))).collect();
            let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (0..items.min(1)).for_each(work)));
            // Joined here, so a worker's own panic (not the scope's summary of it) reaches the caller.
            for handle in handles {
                if let Err(payload) = handle.join() {
                    std::panic::resume_unwind(payload);
                }
            }
            if let Err(payload) = mine {
                std::panic::resume_unwind(payload);
            }
        });
    }
}

/// The batch's pixels, as they arrive.
enum Source<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

/// One image, planar `[3, h, w]` f32, with a scratch buffer of the same kind.
#[derive(Default)]
struct Image {
    data: Vec<f32>,
    scratch: Vec<f32>,
    h: usize,
    w: usize,
}

impl Image {
    /// Loads image `at..at + 3hw` of the source, u8 divided by 255.
    fn load(&mut self, src: &Source, at: usize, h: usize, w: usize) {
        (self.h, self.w) = (h, w);
        self.data.clear();
        match src {
            Source::U8(s) => self.data.extend(s[at..at + 3 * h * w].iter().map(|&v| v as f32 / 255.0)),
            Source::F32(s) => self.data.extend_from_slice(&s[at..at + 3 * h * w]),
        }
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Skip => {}
            Action::Crop(c, size) => self.resized_crop(c, size),
            Action::Flip => self.data.chunks_mut(self.w).for_each(|row| row.reverse()),
            Action::Jitter { order, factors, hue, enabled } => {
                for part in order {
                    if !enabled[part] {
                        continue;
                    }
                    match part {
                        0 => self.brightness(factors[0]),
                        1 => self.contrast(factors[1]),
                        2 => self.saturation(factors[2]),
                        _ => self.hue(hue),
                    }
                }
            }
            Action::Grayscale => {
                let n = self.h * self.w;
                let (r, rest) = self.data.split_at_mut(n);
                let (g, b) = rest.split_at_mut(n);
                for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                    let y = luma(*r, *g, *b);
                    (*r, *g, *b) = (y, y, y);
                }
            }
            Action::Blur(kernel) => self.blur(kernel),
            Action::Solarize(t) => self.data.iter_mut().for_each(|v| {
                if *v >= t {
                    *v = 1.0 - *v;
                }
            }),
            Action::Normalize(mean, std) => {
                let n = self.h * self.w;
                for (c, plane) in self.data.chunks_mut(n).enumerate() {
                    let (m, s) = (mean[c], std[c]);
                    plane.iter_mut().for_each(|v| *v = (*v - m) / s);
                }
            }
        }
    }

    /// [`ops::resized_crop`] for one image: bilinear, `align_corners=False`, border padding,
    /// as `grid_sampler` computes it.
    fn resized_crop(&mut self, c: CropBox, size: usize) {
        let (h, w) = (self.h, self.w);
        // Source coordinate of each output row / column, clamped to the image (border padding),
        // split into the two neighbours and the second one's weight.
        let taps = |start: i64, extent: i64, side: usize| -> Vec<(usize, usize, f32)> {
            let scale = extent as f32 / size as f32;
            (0..size)
                .map(|o| {
                    let x = (start as f32 + (o as f32 + 0.5) * scale - 0.5).clamp(0.0, (side - 1) as f32);
                    let x0 = x.floor();
                    let i0 = x0 as usize;
                    (i0, (i0 + 1).min(side - 1), x - x0)
                })
                .collect()
        };
        let (rows, cols) = (taps(c.top, c.height, h), taps(c.left, c.width, w));
        self.scratch.clear();
        self.scratch.resize(3 * size * size, 0.0);
        for (plane, out) in self.data.chunks(h * w).zip(self.scratch.chunks_mut(size * size)) {
            for (&(y0, y1, wy), out_row) in rows.iter().zip(out.chunks_mut(size)) {
                let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
                for (&(x0, x1, wx), o) in cols.iter().zip(out_row.iter_mut()) {
                    let top = r0[x0] + (r0[x1] - r0[x0]) * wx;
                    let bottom = r1[x0] + (r1[x1] - r1[x0]) * wx;
                    *o = top + (bottom - top) * wy;
                }
            }
        }
        std::mem::swap(&mut self.data, &mut self.scratch);
        (self.h, self.w) = (size, size);
    }

    /// `clamp(f·x, 0, 1)` ([`ops::adjust_brightness`]), as the batched path's blend with black.
    fn brightness(&mut self, f: f32) {
        self.data.iter_mut().for_each(|v| *v = lerp(0.0, *v, f).clamp(0.0, 1.0));
    }

    /// `clamp(lerp(mean(gray), x, f), 0, 1)` ([`ops::adjust_contrast`]).
    fn contrast(&mut self, f: f32) {
        let n = self.h * self.w;
        let (r, rest) = self.data.split_at(n);
        let (g, b) = rest.split_at(n);
        let sum: f64 = r.iter().zip(g).zip(b).map(|((&r, &g), &b)| luma(r, g, b) as f64).sum();
        let mean = (sum / n as f64) as f32;
        self.data.iter_mut().for_each(|v| *v = lerp(mean, *v, f).clamp(0.0, 1.0));
    }

    /// `clamp(lerp(gray, x, f), 0, 1)` per pixel ([`ops::adjust_saturation`]).
    fn saturation(&mut self, f: f32) {
        let n = self.h * self.w;
        let (r, rest) = self.data.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let y = luma(*r, *g, *b);
            *r = lerp(y, *r, f).clamp(0.0, 1.0);
            *g = lerp(y, *g, f).clamp(0.0, 1.0);
            *b = lerp(y, *b, f).clamp(0.0, 1.0);
        }
    }

    /// The hue rotated by `shift` turns ([`ops::adjust_hue`]'s closed form, per pixel).
    fn hue(&mut self, shift: f32) {
        let n = self.h * self.w;
        let (r, rest) = self.data.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        let turn = shift * 6.0;
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let (vr, vg, vb) = (*r, *g, *b);
            let max = vr.max(vg).max(vb);
            let chroma = max - vr.min(vg).min(vb);
            // Hue in sixths of a turn, torchvision's three sectors (red wins ties, then green);
            // all three computed and one selected, so the loop vectorises.
            let (red, green, blue) = (vg - vb, vb - vr + chroma * 2.0, vr - vg + chroma * 4.0);
            let numerator = if max == vr { red } else if max == vg { green } else { blue };
            let h6 = rem6(numerator / chroma.max(1e-12) + turn);
            // c_n = V − V·S·clamp(2 − |k − 2|, 0, 1), k = (h + n) mod 6, n = 5, 3, 1.
            let channel = |n: f32| max - chroma * (2.0 - (rem6(h6 + n) - 2.0).abs()).clamp(0.0, 1.0);
            (*r, *g, *b) = (channel(5.0), channel(3.0), channel(1.0));
        }
    }

    /// Separable Gaussian blur with reflect padding ([`ops::blur`]), horizontally then
    /// vertically.
    fn blur(&mut self, kernel: &[f32]) {
        let (h, w) = (self.h, self.w);
        let half = kernel.len() / 2;
        // Reflect (no edge repeat): index −1 → 1, side → side − 2.
        let reflect = |i: isize, side: usize| -> usize {
            let s = side as isize;
            let j = if i < 0 { -i } else if i >= s { 2 * (s - 1) - i } else { i };
            j as usize
        };
        self.scratch.clear();
        self.scratch.resize(self.data.len(), 0.0);
        // Each row padded by reflection once, then one pass per tap over the whole row (loops
        // the compiler vectorises, unlike a gather of reflected indices per output pixel).
        let mut padded = vec![0.0f32; w + 2 * half];
        for (plane, out) in self.data.chunks(h * w).zip(self.scratch.chunks_mut(h * w)) {
            for (row, out_row) in plane.chunks(w).zip(out.chunks_mut(w)) {
                for (j, p) in padded.iter_mut().enumerate() {
                    *p = row[reflect(j as isize - half as isize, w)];
                }
                out_row.iter_mut().for_each(|v| *v = 0.0);
                for (t, &k) in kernel.iter().enumerate() {
                    out_row.iter_mut().zip(&padded[t..t + w]).for_each(|(o, &v)| *o += k * v);
                }
            }
        }
        for (plane, out) in self.scratch.chunks(h * w).zip(self.data.chunks_mut(h * w)) {
            for y in 0..h {
                let out_row = &mut out[y * w..(y + 1) * w];
                out_row.iter_mut().for_each(|v| *v = 0.0);
                for (t, &k) in kernel.iter().enumerate() {
                    let sy = reflect(y as isize + t as isize - half as isize, h);
                    let in_row = &plane[sy * w..(sy + 1) * w];
                    out_row.iter_mut().zip(in_row).for_each(|(o, &v)| *o += k * v);
                }
            }
        }
    }
}

/// ITU-R 601-2 luma ([`LUMA_WEIGHTS`]), summed in channel order as the batched `luma` does.
#[inline]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    r * LUMA_WEIGHTS[0] as f32 + g * LUMA_WEIGHTS[1] as f32 + b * LUMA_WEIGHTS[2] as f32
}

/// ATen's `lerp`: `start + weight·(end − start)`, computed from the nearer end.
#[inline]
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// `x mod 6` into `[0, 6)` (Python's `%`, ATen's `remainder`), with the floor taken by a
/// conversion to an integer (x here lies in (−12, 12)): `f32::floor` is a call into libm on
/// baseline x86-64, which keeps the hue loop from being vectorised.
#[inline]
fn rem6(x: f32) -> f32 {
    let q = x / 6.0;
    let t = q as i32 as f32; // truncated towards 0
    let floor = if t > q { t - 1.0 } else { t };
    x - 6.0 * floor
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parallel_for_each_runs_every_item_once_and_raises_a_panic_on_the_caller() {
        let _torch = Tensor::zeros([1], (Kind::Float, Device::Cpu)) + 1; // libtorch (and its OpenMP) loaded
        type Runner = fn(usize, &(dyn Fn(usize) + Sync));
        let runners: [(&str, Runner); 2] = [("OpenMP", parallel::for_each), ("scoped threads", parallel::scoped)];
        for (name, run) in runners {
            for items in [0, 1, 2, 3, 7] {
                let counts: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                run(items, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "{name}: {items} items");
            }
            let caught = std::panic::catch_unwind(|| run(4, &|i| assert!(i != 2, "item two")));
            let payload = caught.expect_err("the panic of item 2 reaches the caller");
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(message.contains("item two"), "{name}: {message}");
        }
    }

    #[test]
    fn rem6_is_the_floored_remainder() {
        for x in [-11.5f32, -6.0, -4.2, -0.0001, 0.0, 0.5, 5.9999, 6.0, 7.25, 11.9] {
            let want = x.rem_euclid(6.0);
            assert!((rem6(x) - want).abs() < 1e-5 || (rem6(x) - want).abs() > 6.0 - 1e-5, "{x}: {} vs {want}", rem6(x));
        }
    }
}
