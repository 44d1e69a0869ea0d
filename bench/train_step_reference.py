"""PyTorch reference of `bench_train_step` (issue 4, "Speed"): one training step of SimCLR,
MoCo v2, BYOL and Barlow Twins on torchvision's ResNet-18 (ImageNet stem, or with --stem cifar
the 3x3 stride-1 stem without max-pool) with the same heads, losses, optimizer (SGD, momentum
0.9, weight decay 1e-4) and augmentation lists as selfsup, in these configurations:

  usual    torchvision transforms per image on PIL images in DataLoader workers
           (num_workers = CPU count, pin_memory), fp32, NCHW: the usual PyTorch pipeline;
  eager    augmentation batched on the device (the same ops as selfsup's, written with torch
           ops, per-sample parameters drawn on the CPU and uploaded without a sync), bf16
           autocast + channels-last on CUDA (fp32 NCHW on the CPU, as selfsup's engine);
  compile  `eager` with the networks under torch.compile (only with --configs ...,compile);
  compute  no augmentation: the same two fixed views every step (random normal), fp32, NCHW:
           PyTorch's compute-only step, the figure issue 17 compares the kit's full step with;
  compute_bf16  `compute` under torch.autocast(device, dtype=torch.bfloat16): PyTorch's best CPU
           recipe on CPUs with native bf16 (on others libtorch emulates bf16: slower).
Any configuration with `_fused` appended (`compute_fused`, `compute_bf16_fused`) steps with
torch.optim.SGD(..., fused=True), one kernel over all weights (on the CPU PyTorch's default is a
loop over the parameters, foreach being its default only on CUDA).
--channels-last also puts the `eager` and `compute*` configurations in channels-last on the CPU.

On the CPU each row also gives the median ms of the step's parts (views, forward, backward,
optimizer; the CPU runs them synchronously), to put next to bench_train_step's.
Each timed step ends with a device synchronisation; median and p90 ms/step, source images/s
(each image gives two views) and the median CPU time of this process per step (all threads;
for `usual` the DataLoader workers' time is not in it). Prints a Markdown table; --json writes the rows for
bench/run_train_step.sh.

    python bench/train_step_reference.py --batch 256 --size 96 --steps 20 --warmup 5 \
        --methods simclr,moco_v2,byol,barlow_twins --configs usual,eager,compile
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.2989, 0.587, 0.114)
METHODS = ("simclr", "moco_v2", "byol", "barlow_twins")


# ------------------------------------------------------------------------------------------
# Models, heads, losses: selfsup's presets on torchvision's resnet18.
# ------------------------------------------------------------------------------------------
STEM = "imagenet"


def resnet18():
    net = torchvision.models.resnet18()
    if STEM == "cifar":  # SimCLR's CIFAR variant, selfsup's `small_images: true`
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # features [N, 512]
    return net


def mlp(dims, bn, bias=True):
    """Linear (+BN) + ReLU between layers, plain Linear last (selfsup's `Mlp`)."""
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < len(dims) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.backbone, self.head = resnet18(), head

    def forward(self, x):
        return self.head(self.backbone(x))


def nt_xent(z1, z2, t):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2N, D]
    sim = z @ z.t() / t  # [2N, 2N]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(sim, targets)


def normalized_mse(p, z):
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1)).mean()


def standardize(z, eps=1e-5):
    return (z - z.mean(0, keepdim=True)) / (z.var(0, unbiased=False, keepdim=True) + eps).sqrt()


class SimClr(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Encoder(mlp([512, 512, 128], bn=True))

    def step(self, v1, v2, step, total):
        n = v1.shape[0]
        z = self.enc(torch.cat([v1, v2]))  # both views in one batch of 2N
        return nt_xent(z[:n].float(), z[n:].float(), 0.1)

    def after_step(self, step, total):
        pass


class Moco(nn.Module):
    """MoCo v2 as facebookresearch/moco builder.py, with selfsup's single-GPU shuffled BN (8 groups)."""

    def __init__(self, k=65536, m=0.999, t=0.2, splits=8):
        super().__init__()
        self.q = Encoder(mlp([512, 512, 128], bn=False))
        self.k = Encoder(mlp([512, 512, 128], bn=False))
        self.k.load_state_dict(self.q.state_dict())
        for p in self.k.parameters():
            p.requires_grad = False
        self.m, self.t, self.splits = m, t, splits
        self.register_buffer("queue", F.normalize(torch.randn(128, k), dim=0))
        self.ptr = 0
        self.qp, self.kp = list(self.q.parameters()), list(self.k.parameters())

    def encode(self, enc, x):
        return torch.cat([enc(c) for c in x.chunk(self.splits)])

    def step(self, v1, v2, step, total):
        q = F.normalize(self.encode(self.q, v1), dim=1)
        with torch.no_grad():
            torch._foreach_lerp_(self.kp, self.qp, 1 - self.m)  # momentum update
            idx = torch.randperm(v2.shape[0], device=v2.device)
            k = self.encode(self.k, v2[idx])[idx.argsort()]
            k = F.normalize(k, dim=1)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ self.queue.clone().detach().to(q.dtype)
        logits = torch.cat([l_pos, l_neg], 1).float() / self.t
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        with torch.no_grad():  # dequeue and enqueue
            b = k.shape[0]
            self.queue[:, self.ptr:self.ptr + b] = k.t().to(self.queue.dtype)
            self.ptr = (self.ptr + b) % self.queue.shape[1]
        return loss

    def after_step(self, step, total):
        pass


class Byol(nn.Module):
    def __init__(self, base_tau=0.996):
        super().__init__()
        self.online = Encoder(mlp([512, 4096, 256], bn=True))
        self.predictor = mlp([256, 4096, 256], bn=True)
        self.target = Encoder(mlp([512, 4096, 256], bn=True))
        self.target.load_state_dict(self.online.state_dict())
        for p in self.target.parameters():
            p.requires_grad = False
        self.base_tau = base_tau
        self.op, self.tp = list(self.online.parameters()), list(self.target.parameters())

    def step(self, v1, v2, step, total):
        z1, z2 = self.online(v1), self.online(v2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1, t2 = self.target(v1), self.target(v2)
        return normalized_mse(p1.float(), t2.float()) + normalized_mse(p2.float(), t1.float())

    def after_step(self, step, total):
        tau = 1 - (1 - self.base_tau) * (math.cos(math.pi * min(step, total) / total) + 1) / 2
        with torch.no_grad():
            torch._foreach_lerp_(self.tp, self.op, 1 - tau)


class BarlowTwins(nn.Module):
    def __init__(self, lambd=5e-3):
        super().__init__()
        self.enc = Encoder(mlp([512, 8192, 8192, 8192], bn=True, bias=False))
        self.lambd = lambd

    def step(self, v1, v2, step, total):
        z1, z2 = self.enc(v1).float(), self.enc(v2).float()
        c = standardize(z1).t() @ standardize(z2) / z1.shape[0]  # [D, D]
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on + self.lambd * off

    def after_step(self, step, total):
        pass


def build(name):
    return {"simclr": SimClr, "moco_v2": Moco, "byol": Byol, "barlow_twins": BarlowTwins}[name]()


# ------------------------------------------------------------------------------------------
# Augmentation lists (selfsup's presets): (crop scale, jitter (b, c, s, h), order, blur p, solarize p)
# ------------------------------------------------------------------------------------------
def view_specs(name):
    simclr = dict(scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, blur_p=0.5, sol_p=0.0, flip_first=True)
    moco = dict(scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, blur_p=0.5, sol_p=0.0, flip_first=False)
    byol1 = dict(scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, blur_p=1.0, sol_p=0.0, flip_first=True)
    byol2 = dict(byol1, blur_p=0.1, sol_p=0.2)
    return {"simclr": (simclr, simclr), "moco_v2": (moco, moco), "byol": (byol1, byol2), "barlow_twins": (byol1, byol2)}[name]


def blur_kernel(size):
    return 2 * ((size // 10) // 2) + 1  # SimCLR's rule: 9 at 96


# ---- (1) the usual pipeline: torchvision on PIL images, per image, in DataLoader workers ----
def pil_transform(spec, size):
    ops = [T.RandomResizedCrop(size, scale=spec["scale"])]
    flip = T.RandomHorizontalFlip()
    if spec["flip_first"]:
        ops.append(flip)
    ops += [T.RandomApply([T.ColorJitter(*spec["jitter"])], p=spec["jitter_p"]), T.RandomGrayscale(p=0.2)]
    if spec["blur_p"] > 0:
        ops.append(T.RandomApply([T.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=spec["blur_p"]))
    if spec["sol_p"] > 0:
        ops.append(T.RandomSolarize(128, p=spec["sol_p"]))
    if not spec["flip_first"]:
        ops.append(flip)
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


class PilPairs(torch.utils.data.Dataset):
    def __init__(self, n, size, specs):
        from PIL import Image

        g = torch.Generator().manual_seed(0)
        arr = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g).numpy()
        self.images = [Image.fromarray(a) for a in arr]
        self.t1, self.t2 = pil_transform(specs[0], size), pil_transform(specs[1], size)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return self.t1(img), self.t2(img)


# ---- (2) the same ops batched on the device, as selfsup's src/augment/ops.rs ----
class GpuAugment:
    def __init__(self, spec, size, device):
        self.s, self.size, self.device = spec, size, device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        self.luma = torch.tensor(LUMA, device=device).view(1, 3, 1, 1)
        self.hue_n = torch.tensor([5.0, 3.0, 1.0], device=device).view(1, 3, 1, 1)

    def up(self, t):  # CPU -> device without a sync
        return t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t

    def gray(self, x):
        return (x * self.luma).sum(1, keepdim=True)

    def masked(self, x, p, f):
        mask = torch.rand(x.shape[0]) < p
        idx = mask.nonzero().flatten()  # on the CPU: no device sync
        if len(idx) == 0:
            return x
        if len(idx) == x.shape[0]:
            return f(x, len(idx))
        i = self.up(idx)
        return x.index_copy(0, i, f(x.index_select(0, i), len(idx)))

    def crop(self, x):
        b, _, h, w = x.shape
        lo, hi = self.s["scale"]
        area = h * w * (torch.rand(b, 10) * (hi - lo) + lo)
        logr = torch.rand(b, 10) * (math.log(4 / 3) - math.log(3 / 4)) + math.log(3 / 4)
        r = torch.exp(logr)
        cw, ch = torch.sqrt(area * r).round(), torch.sqrt(area / r).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
        cw = torch.where(first >= 0, cw.gather(1, first.clamp(min=0)[:, None])[:, 0], torch.tensor(float(min(h, w))))
        ch = torch.where(first >= 0, ch.gather(1, first.clamp(min=0)[:, None])[:, 0], torch.tensor(float(min(h, w))))
        top = (torch.rand(b) * (h - ch + 1)).floor()
        left = (torch.rand(b) * (w - cw + 1)).floor()
        boxes = self.up(torch.stack([top, left, ch, cw], 1))
        top, left, ch, cw = boxes.unbind(1)
        s = self.size
        steps = torch.arange(s, device=x.device, dtype=torch.float32) + 0.5
        gx = (left[:, None, None] + steps.view(1, 1, s) * (cw / s)[:, None, None]) * (2.0 / w) - 1
        gy = (top[:, None, None] + steps.view(1, s, 1) * (ch / s)[:, None, None]) * (2.0 / h) - 1
        grid = torch.stack([gx.expand(b, s, s), gy.expand(b, s, s)], -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def hue(self, x, shift):
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        maxc = x.amax(1, keepdim=True)
        chroma = maxc - x.amin(1, keepdim=True)
        h6 = r - g + chroma * 4
        h6 = torch.lerp(h6, b - r + chroma * 2, (maxc == g).to(x.dtype))
        h6 = torch.lerp(h6, g - b, (maxc == r).to(x.dtype))
        h6 = (h6 / chroma.clamp_min(1e-12) + shift * 6).remainder(6)
        k = ((h6 + self.hue_n).remainder(6) - 2).abs().neg().add(2).clamp(0, 1)
        return maxc - k * chroma

    def jitter(self, x, n):
        bs, cs, ss, hs = self.s["jitter"]
        order = torch.argsort(torch.rand(n, 4), 1)
        fb, fc, fs = (torch.rand(n) * 2 * v + 1 - v for v in (bs, cs, ss))
        fh = (torch.rand(n) * 2 - 1) * hs
        for pos in range(4):
            part = order[:, pos]
            rows = torch.stack([
                torch.where(part == 0, fb, torch.where(part == 1, fc, torch.where(part == 2, fs, torch.ones(n)))),
                (part == 2).float(), (part == 1).float(), torch.where(part == 3, fh, torch.zeros(n))])
            rows = self.up(rows).view(4, n, 1, 1, 1)
            if bool((part < 3).any()):
                gray = self.gray(x)
                ref = gray * rows[1] + gray.mean((1, 2, 3), keepdim=True) * rows[2]
                x = torch.lerp(ref, x, rows[0]).clamp_(0, 1)
            members = (part == 3).nonzero().flatten()
            if len(members) == n:
                x = self.hue(x, rows[3])
            elif len(members) > 0:
                i = self.up(members)
                x = x.index_copy(0, i, self.hue(x.index_select(0, i), rows[3].index_select(0, i)))
        return x

    def blur(self, x, n):
        k = blur_kernel(x.shape[-1])
        half, (b, c, h, w) = k // 2, x.shape
        sig = self.up(torch.rand(n) * 1.9 + 0.1).view(b, 1)
        pdf = torch.exp(-0.5 * ((torch.arange(k, device=x.device, dtype=x.dtype) - half).view(1, k) / sig) ** 2)
        kern = (pdf / pdf.sum(1, keepdim=True)).unsqueeze(1).expand(b, 3, k).reshape(3 * b, 1, 1, k)
        y = F.pad(x.reshape(1, 3 * b, h, w), (half,) * 4, mode="reflect")
        y = F.conv2d(y, kern, groups=3 * b)
        y = F.conv2d(y, kern.view(3 * b, 1, k, 1), groups=3 * b)
        return y.view(b, 3, h, w)

    def __call__(self, images_u8):
        s = self.s
        x = self.crop(images_u8.float() / 255)
        flip = lambda x, n: x.flip(3)  # noqa: E731
        if s["flip_first"]:
            x = self.masked(x, 0.5, flip)
        x = self.masked(x, s["jitter_p"], self.jitter)
        x = self.masked(x, 0.2, lambda x, n: self.gray(x).expand(n, 3, *x.shape[2:]).contiguous())
        if s["blur_p"] > 0:
            x = self.masked(x, s["blur_p"], self.blur)
        if s["sol_p"] > 0:
            x = self.masked(x, s["sol_p"], lambda x, n: torch.where(x >= 0.5, 1 - x, x))
        if not s["flip_first"]:
            x = self.masked(x, 0.5, flip)
        return (x - self.mean) / self.std


# ------------------------------------------------------------------------------------------
# The step and its timing.
# ------------------------------------------------------------------------------------------
def native_bf16():
    """Whether this CPU has bf16 instructions (the flags selfsup's `amp::native_bf16_feature` reads)."""
    try:
        words = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(name, config, args, device):
    torch.manual_seed(0)
    fused = config.endswith("_fused")
    config = config.removesuffix("_fused")
    cuda = device.type == "cuda"
    fast = config in ("eager", "compile")
    compute = config in ("compute", "compute_bf16")
    autocast = (fast and cuda) or config == "compute_bf16"
    channels_last = (fast and cuda) or ((fast or compute) and args.channels_last)
    model = build(name).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4, fused=fused or None)
    step_fn = model.step
    if config == "compile":
        for attr in ("enc", "q", "k", "online", "target", "predictor"):
            if hasattr(model, attr):
                setattr(model, attr, torch.compile(getattr(model, attr)))
    total = args.warmup + args.steps
    specs = view_specs(name)
    if config == "usual":
        workers = os.cpu_count() or 1
        data = PilPairs(args.batch * max(4, min(total, 16)), args.size, specs)
        loader = torch.utils.data.DataLoader(
            data, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
            pin_memory=cuda, persistent_workers=True)

        def batches():
            while True:
                for v1, v2 in loader:
                    yield v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)

        source = batches()
        next_views = lambda: next(source)  # noqa: E731
    elif compute:
        g = torch.Generator(device="cpu").manual_seed(1234)
        fixed = [torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device) for _ in range(2)]
        next_views = lambda: (fixed[0], fixed[1])  # noqa: E731
    else:
        g = torch.Generator(device="cpu").manual_seed(1234)
        images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device)
        aug1, aug2 = GpuAugment(specs[0], args.size, device), GpuAugment(specs[1], args.size, device)
        next_views = lambda: (aug1(images), aug2(images))  # noqa: E731
    model.train()
    times, cpu, parts, loss = [], [], [], float("nan")
    sync(device)
    for step in range(total):
        t0, c0 = time.perf_counter(), time.process_time()
        for grp in opt.param_groups:  # cosine schedule, as selfsup's default
            grp["lr"] = 0.03 * 0.5 * (1 + math.cos(math.pi * step / total))
        v1, v2 = next_views()
        if channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = step_fn(v1, v2, step, total)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        model.after_step(step, total)
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if not cuda:  # CPU ops run synchronously: the marks split the step (views, forward, backward, optimizer)
                parts.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        if step == total - 1:
            loss = out.item()
    times.sort()
    med = statistics.median(times)
    p90 = times[min(len(times), max(1, math.ceil(0.9 * len(times)))) - 1]
    split = {k: statistics.median(p[i] for p in parts) * 1e3 for i, k in enumerate(("views", "forward", "backward", "optimizer"))} if parts else None
    return dict(parts_ms=split, median_ms=med * 1e3, cpu_ms=statistics.median(cpu) * 1e3, p90_ms=p90 * 1e3, images_per_sec=args.batch / med, loss=loss,
                precision=("bf16 autocast" + ("" if cuda or native_bf16() else ", emulated (no native bf16)")) if autocast else "fp32", layout="channels-last" if channels_last else "NCHW",
                sgd="fused SGD" if fused else "SGD")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--configs", default="usual,eager", help="any of usual, eager, compile, compute, compute_bf16, each also with _fused (fused SGD)")
    ap.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    ap.add_argument("--channels-last", action="store_true", help="channels-last also on the CPU")
    ap.add_argument("--json")
    args = ap.parse_args()
    global STEM
    STEM = args.stem
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        dev = f"CUDA {torch.cuda.get_device_name(device)}"
    else:
        dev = f"CPU ({torch.get_num_threads()} threads)"
    rows = []
    labels = {"usual": "PyTorch usual: DataLoader + torchvision/PIL, {w} workers, {p}",
              "eager": "PyTorch eager: batched device augmentation, {p}, {l}",
              "compile": "PyTorch torch.compile: batched device augmentation, {p}, {l}",
              "compute": "PyTorch compute only (fixed views, no augmentation), {p}, {l}",
              "compute_bf16": "PyTorch compute only (fixed views, no augmentation), {p}, {l}"}
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
            try:
                r = run(name, config, args, device)
            except Exception as e:  # torch.compile may fail: report, go on
                print(f"{config} {name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            label = labels[config.removesuffix("_fused")].format(w=os.cpu_count(), p=r["precision"], l=r["layout"])
            if r["sgd"] != "SGD":
                label += ", " + r["sgd"]
            r.update(impl="pytorch", config=label, kind=config, method=name, device=dev, batch=args.batch,
                     size=args.size, steps=args.steps, warmup=args.warmup, stem=args.stem)
            split = "".join(f", {k} {v:.1f}" for k, v in (r["parts_ms"] or {}).items())
            print(f"{label}: {name} {r['median_ms']:.1f} ms/step (loss {r['loss']:.4f}{split})", flush=True)
            rows.append(r)
    print(f"# train_step_reference: ResNet-18 ({args.stem} stem), {args.size}x{args.size}, batch {args.batch}, two views, "
          f"{args.steps} steps after {args.warmup} warm-up, {dev}, torch {torch.__version__}\n")
    print("| configuration | method | median ms/step | p90 ms/step | images/s | CPU ms/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['method']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{r['images_per_sec']:.0f} | {r['cpu_ms']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
