"""t-SNE references for `src/bin/bench_tsne.rs` (issue 6): openTSNE and scikit-learn on the same
embeddings, with the same parameters as the kit's `TsneConfig::default()` (perplexity 30, 1000
iterations of which 250 with early exaggeration 12, learning rate auto, PCA initialisation,
2 jobs). Writes each layout and its wall time next to the data; `bench_tsne score` (or `run`)
scores all tools with the same Rust code.

Not part of the kit: install the two packages into any Python 3 with numpy, e.g.
    pip install openTSNE scikit-learn
then, from the repository root:
    cargo run --release --bin bench_tsne -- data
    python bench/tsne_reference.py            # [--sizes 5000,13000] [--tools opentsne,sklearn]
    cargo run --release --bin bench_tsne -- run --linfa
"""
import argparse
import os
import time

import numpy as np

DIR = os.path.join("out", "bench_tsne")


def run_opentsne(x, jobs):
    import openTSNE

    tsne = openTSNE.TSNE(
        n_components=2,
        perplexity=30,
        learning_rate="auto",
        early_exaggeration=12,
        early_exaggeration_iter=250,
        n_iter=750,
        initialization="pca",
        n_jobs=jobs,
        random_state=0,
    )
    return np.asarray(tsne.fit(x))


def run_sklearn(x, jobs):
    from sklearn.manifold import TSNE

    kwargs = dict(n_components=2, perplexity=30, early_exaggeration=12, learning_rate="auto", init="pca",
                  random_state=0, n_jobs=jobs)
    try:
        tsne = TSNE(max_iter=1000, **kwargs)
    except TypeError:  # scikit-learn < 1.5 calls it n_iter
        tsne = TSNE(n_iter=1000, **kwargs)
    return tsne.fit_transform(x)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="5000,13000")
    p.add_argument("--tools", default="opentsne,sklearn")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    tools = {"opentsne": run_opentsne, "sklearn": run_sklearn}
    for n in [int(s) for s in args.sizes.split(",")]:
        path = os.path.join(DIR, f"features_{n}.npy")
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run `cargo run --release --bin bench_tsne -- data` first")
        x = np.load(path).astype(np.float32)
        for name in args.tools.split(","):
            start = time.perf_counter()
            layout = tools[name](x, args.jobs)
            secs = time.perf_counter() - start
            np.save(os.path.join(DIR, f"layout_{n}_{name}.npy"), layout.astype(np.float32))
            with open(os.path.join(DIR, f"time_{n}_{name}.txt"), "w") as f:
                f.write(f"{secs:.2f}\n")
            print(f"{name} on {n} points: {secs:.1f} s", flush=True)


if __name__ == "__main__":
    main()
