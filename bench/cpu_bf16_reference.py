"""PyTorch reference of `examples/cpu_bf16_check.rs` (issue 17, item 2): how far does PyTorch's own
CPU bf16 autocast move a short pre-training run's kNN probe away from f32?

The kit's check pre-trains each method 200 steps in f32 and under CPU bf16 autocast from the same
seed, then probes the frozen backbone with a weighted kNN. Barlow Twins' first four seeds probed
1.4-3.4 points lower under bf16 (twelve seeds later showed that to be noise: BENCHMARKS.md). This
script runs the same recipe in PyTorch, with its own `torch.autocast("cpu", dtype=torch.bfloat16)`,
to tell a property of bf16 training from a fault of the kit:

  data       the kit's embedded 32 px set, written by
             `cargo run --release --example cpu_bf16_check -- 1 simclr --save-data DIR`
             (5,000 unlabelled images; 1,000 labelled train and 1,000 test images, 10 classes);
  network    ResNet-18 at width 16 (stages 16/32/64/128) with the 3x3 stride-1 stem and no
             max-pool, torchvision's initialisation;
  methods    Barlow Twins (projector 128-64-64-64, BN + ReLU on the hidden layers, no biases,
             lambda 5e-3; C of the standardised projections, its terms summed in f32) and SimCLR
             (head 128-128-32 with BN, NT-Xent at tau 0.5), the kit's `tiny` presets at width 16;
  training   batch 64, two SimCLR-augmented views per image (the kit's batched ops, from
             bench/train_step_reference.py), SGD lr 0.03, momentum 0.9, weight decay 1e-4, cosine
             over the planned epochs, stopped after `--steps`; a new shuffle each epoch;
  probe      weighted kNN (k 200, tau 0.1) on the L2-normalised pooled features, in eval mode.

For each seed the f32 and bf16 runs start from the same weights and see the same views (both are
drawn from the seed). `--kit-init` starts them from the kit's own starting weights for that method
and seed (`{method}_seed{seed}_init.npz`, which cpu_bf16_check writes with `--save-data` for the
seeds it runs); otherwise PyTorch draws them.

Before training, for every method and seed with a `{method}_seed{seed}_step.npz` (one step of
the kit from its starting weights on two random batches, in f32 and under bf16 autocast: the
views, the losses and all gradients), the script takes that step again in PyTorch and prints how
far the losses and gradients are apart. `--step-only` does only that, and exits with 1 when they
are not the same (relative difference above 1e-5): tests/amp_cpu.rs writes such files and runs it,
the test that the kit's autocast is PyTorch's. `--threads` sets libtorch's threads (a reduction
split over another number of threads rounds differently).

`--replay DIR` takes a whole run of the kit again: `examples/cpu_bf16_replay.rs` saves its starting
weights, every step's views and its losses in both precisions; PyTorch trains on those views from
those weights with the same schedule (`torch.optim.SGD(fused=True)`) and prints where its losses
part from the kit's and both kNN probes.

    cargo run --release --example cpu_bf16_check -- 1 barlow_twins,simclr --seeds 0 --save-data DIR
    python bench/cpu_bf16_reference.py --data DIR --seeds 0 --methods barlow_twins,simclr --kit-init
    cargo run --release --example cpu_bf16_replay -- RUN --seed 0
    python bench/cpu_bf16_reference.py --replay RUN --methods barlow_twins
"""
import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_reference import IMAGENET_MEAN, IMAGENET_STD, GpuAugment, nt_xent, standardize, view_specs  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)), inplace=True)


class ResNet18(nn.Module):
    """torchvision's resnet18 (its names) at `width` with the CIFAR stem; `forward` gives the pooled features."""

    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, planes in enumerate([width, 2 * width, 4 * width, 8 * width]):  # torchvision's names
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, planes, stride), BasicBlock(planes, planes, 1)))
            cin = planes
        self.feature_dim = cin
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer4(self.layer3(self.layer2(self.layer1(x)))).mean((2, 3))


def mlp(dims, bias):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Method(nn.Module):
    def __init__(self, name, width):
        super().__init__()
        self.name, self.backbone = name, ResNet18(width)
        d = self.backbone.feature_dim
        if name == "barlow_twins":
            self.head = mlp([d, 64, 64, 64], bias=False)
        elif name == "simclr":
            self.head = mlp([d, d, 32], bias=True)
        else:
            raise SystemExit(f"no reference run for {name} (barlow_twins, simclr)")

    def loss(self, v1, v2):
        if self.name == "barlow_twins":  # each view with its own BatchNorm statistics
            z1, z2 = self.head(self.backbone(v1)), self.head(self.backbone(v2))
            c = (standardize(z1).t() @ standardize(z2) / z1.shape[0]).float()  # [D, D]
            diag = torch.diagonal(c)
            return (diag - 1).pow(2).sum() + 5e-3 * (c.pow(2).sum() - diag.pow(2).sum())
        n = v1.shape[0]
        z = self.head(self.backbone(torch.cat([v1, v2])))  # in bf16 under autocast, as the kit's loss takes it
        return nt_xent(z[:n], z[n:], 0.5)


def kit_weights(model, path):
    """Loads the kit's weights (torchvision names; the kit's `projector` is `head` here)."""
    z = np.load(path)
    state = {k.replace("projector.", "head.", 1): torch.from_numpy(z[k]) for k in z.files}
    result = model.load_state_dict(state, strict=False)
    stray = result.unexpected_keys + [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if stray:
        raise SystemExit(f"{path} does not fit the reference's {model.name}: {stray[:5]}")


def step_check(name, seed, args):
    """The kit's first step again in PyTorch; returns the largest relative difference found."""
    path = os.path.join(args.data, f"{name}_seed{seed}_step.npz")
    if not os.path.exists(path):
        return None
    kit = np.load(path)
    v1, v2 = torch.from_numpy(kit["v1"]), torch.from_numpy(kit["v2"])
    worst = 0.0
    for tag, bf16 in (("f32", False), ("bf16", True)):
        model = Method(name, args.width)
        kit_weights(model, os.path.join(args.data, f"{name}_seed{seed}_init.npz"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(v1, v2)
        loss.backward()
        # All gradients as one vector: a bias before a BatchNorm has a gradient of about 0, which
        # rounding alone makes differ by 100 %.
        mine = torch.cat([p.grad.flatten() for _, p in model.named_parameters()])
        theirs = torch.cat([torch.from_numpy(kit[f"grad_{tag}." + k.replace("head.", "projector.", 1)]).flatten()
                            for k, _ in model.named_parameters()])
        grad_diff = ((mine - theirs).norm() / theirs.norm()).item()
        loss_diff = abs(loss.item() - float(kit[f"loss_{tag}"])) / abs(float(kit[f"loss_{tag}"]))
        worst = max(worst, grad_diff, loss_diff)
        print(f"{name}, seed {seed}, one step in {tag} from the kit's weights: loss {loss.item():.6f} (the kit: "
              f"{float(kit[f'loss_{tag}']):.6f}); relative difference of the gradient {grad_diff:.1e}")
    return worst


def normalized(images_u8):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images_u8.float() / 255 - mean) / std


@torch.no_grad()
def knn_accuracy(backbone, train, train_labels, test, test_labels, k=200, tau=0.1, classes=10):
    backbone.eval()
    feats = lambda x: F.normalize(torch.cat([backbone(normalized(c)).float() for c in x.split(256)]), dim=1)  # noqa: E731
    bank, queries = feats(train), feats(test)
    backbone.train()
    sim, idx = (queries @ bank.t()).topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(queries.shape[0], classes).scatter_add_(1, train_labels[idx], (sim / tau).exp())
    return (votes.argmax(1) == test_labels).float().mean().item()


def run(name, bf16, seed, data, args):
    unlabeled, train, train_labels, test, test_labels = data
    torch.manual_seed(seed)
    model = Method(name, args.width)
    if args.kit_init:
        kit_weights(model, os.path.join(args.data, f"{name}_seed{seed}_init.npz"))
    aug = GpuAugment(view_specs("simclr")[0], 32, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    per_epoch = unlabeled.shape[0] // args.batch
    total = math.ceil(args.steps / per_epoch) * per_epoch  # planned steps: whole epochs, as the kit's engine
    losses, step, started = [], 0, time.time()
    order = torch.Generator().manual_seed(seed)
    while step < args.steps:
        perm = torch.randperm(unlabeled.shape[0], generator=order)
        for b in range(per_epoch):
            if step == args.steps:
                break
            images = unlabeled[perm[b * args.batch:(b + 1) * args.batch]]
            v1, v2 = aug(images), aug(images)
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(v1, v2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
    seconds = time.time() - started
    knn = knn_accuracy(model.backbone, train, train_labels, test, test_labels)
    return dict(first=losses[0], last=losses[-1], max=max(losses), knn=knn, seconds=seconds,
                finite=all(math.isfinite(v) for v in losses))


def replay(name, args):
    """The kit's run saved by cpu_bf16_replay, trained again in PyTorch on the same views."""
    d = args.replay
    views = torch.from_numpy(np.load(os.path.join(d, "views.npy")))  # [steps, 2, B, 3, 32, 32]
    load = lambda f: torch.from_numpy(np.load(os.path.join(d, f)))  # noqa: E731
    sets = load("train.npy"), load("train_labels.npy"), load("test.npy"), load("test_labels.npy")
    steps = views.shape[0]
    per_epoch = 5000 // views.shape[2]  # the embedded set's 5,000 unlabelled images
    total = math.ceil(steps / per_epoch) * per_epoch
    for tag, bf16 in (("f32", False), ("bf16", True)):
        theirs = np.load(os.path.join(d, f"losses_{tag}.npy"))
        model = Method(name, args.width)
        kit_weights(model, os.path.join(d, "init.npz"))
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4, fused=True)
        losses = []
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(views[step, 0], views[step, 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        losses = np.array(losses)
        parted = next((i for i in range(steps) if losses[i] != theirs[i]), None)
        knn = knn_accuracy(model.backbone, *sets)
        print(f"PyTorch on the kit's views, {name}, {tag}: first loss {losses[0]:.4f}, last {losses[-1]:.4f}, "
              f"kNN {100 * knn:.1f}%; first step whose loss differs from the kit's: {parted}; "
              f"largest difference {np.abs(losses - theirs).max():.2e}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder cpu_bf16_check --save-data wrote (or tests/amp_cpu.rs, for --step-only)")
    p.add_argument("--replay", help="folder cpu_bf16_replay wrote: train PyTorch on the kit's views")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--methods", default="barlow_twins,simclr")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--tolerance", type=float, default=0.05, help="how far (0 to 1) a bf16 probe may fall below f32 (the check's)")
    p.add_argument("--kit-init", action="store_true", help="start from the kit's weights ({method}_seed{seed}_init.npz)")
    p.add_argument("--step-only", action="store_true", help="only compare the kit's steps ({method}_seed{seed}_step.npz)")
    p.add_argument("--threads", type=int, help="libtorch's threads (default: its own choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.replay:
        for name in args.methods.split(","):
            replay(name, args)
        return
    if not args.data:
        p.error("--data is needed (or --replay)")
    if args.step_only:
        pairs = [(name, seed) for name in args.methods.split(",") for seed in seeds]
        same = [step_check(name, seed, args) for name, seed in pairs]
        missing = [f"{name}_seed{seed}_step.npz" for (name, seed), w in zip(pairs, same) if w is None]
        if missing:
            raise SystemExit(f"not in {args.data}: {', '.join(missing)} (tests/amp_cpu.rs writes them)")
        print("the same step" if max(same) <= 1e-5 else "the kit's step differs from PyTorch's (see above)")
        sys.exit(0 if max(same) <= 1e-5 else 1)
    load = lambda f: torch.from_numpy(np.load(os.path.join(args.data, f)))  # noqa: E731
    data = (load("unlabeled.npy"), load("train.npy"), load("train_labels.npy"), load("test.npy"), load("test_labels.npy"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 at width {args.width}, 3x3 stem; "
          f"batch {args.batch}; {args.steps} steps; weights {'of the kit' if args.kit_init else 'drawn by PyTorch'}")
    same = [step_check(name, seed, args) for name in args.methods.split(",") for seed in seeds]
    if any(w is not None and w > 1e-5 for w in same):
        print("the kit's step differs from PyTorch's (see above)")
    print("| method | seed | precision | first loss | last loss | largest loss | kNN accuracy | seconds | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for name in args.methods.split(","):
        gaps = []
        for seed in seeds:
            f32 = run(name, False, seed, data, args)
            bf16 = run(name, True, seed, data, args)
            gaps.append(f32["knn"] - bf16["knn"])
            for precision, r in (("f32", f32), ("bf16", bf16)):
                close = abs(r["first"] - f32["first"]) <= 0.05 * abs(f32["first"])
                probe = r["knn"] >= f32["knn"] - args.tolerance
                verdict = ("FAIL: loss not finite" if not r["finite"] else "FAIL: first loss too far from f32"
                           if not close else "FAIL: probe below f32's" if not probe else "ok")
                ok &= verdict == "ok"
                print(f"| {name} | {seed} | {precision} | {r['first']:.4f} | {r['last']:.4f} | {r['max']:.4f} | "
                      f"{100 * r['knn']:.1f}% | {r['seconds']:.0f} | {verdict} |", flush=True)
        print(f"{name}: f32 minus bf16 probe, points: {', '.join(f'{100 * g:+.1f}' for g in gaps)}; "
              f"mean {100 * statistics.mean(gaps):+.1f}", flush=True)
    ok &= not any(w is not None and w > 1e-5 for w in same)
    print("all runs finite and consistent" if ok else "some runs FAILED (see the table)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
