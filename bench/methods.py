"""The paper-style table on digits: float, ternary, naive, lasso-then-ternary and WPC.

    .venv/bin/python bench/methods.py [--lams 0.02 0.05 0.1] [--jobs 2] [--json out.json]

Every row is a full `ternpe train` pipeline (same float pretraining, same seed) on the CNN with
--pe 1x16; accuracy is on the held-out 20% of digits (359 images). CR is the paper's
16 / (rho * (1 - s_min)); storage is float32 bits / bits the export stores (index and
requantizers included).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys


def _run(job):
    import torch
    torch.set_num_threads(1)
    from ternpe.model.train import TrainConfig, train
    method, lam, extra = job
    cfg = TrainConfig(method=method, lam=lam, **extra)
    _, m = train(cfg, log=lambda *a: None)
    return {"method": method, "lam": lam if method in ("naive", "lasso-then-ternary", "wpc") else None,
            **{k: m[k] for k in ("float_accuracy", "accuracy", "integer_accuracy", "group_density",
                                 "min_in_group_sparsity", "compression_rate", "storage_compression",
                                 "train_seconds")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lams", type=float, nargs="+", default=[0.02, 0.05, 0.1], help="lambdas of the pruning methods")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--pe", default="1x16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    extra = {"arch": a.arch, "pe": a.pe, "seed": a.seed}
    jobs = [("float", 0.0, extra), ("ternary", 0.0, extra)]
    jobs += [(m, lam, extra) for m in ("naive", "lasso-then-ternary", "wpc") for lam in a.lams]
    with cf.ProcessPoolExecutor(a.jobs) as ex:
        rows = list(ex.map(_run, jobs))
    head = f"{'method':<20}{'lambda':>8}{'float':>8}{'acc':>8}{'int acc':>9}{'density':>9}{'s_min':>7}{'CR':>8}{'storage':>9}{'time':>7}"
    print(f"digits, --arch {a.arch}, --pe {a.pe}, seed {a.seed}")
    print(head)
    print("-" * len(head))
    for r in rows:
        lam = "" if r["lam"] is None else f"{r['lam']:g}"
        print(f"{r['method']:<20}{lam:>8}{r['float_accuracy']:>8.4f}{r['accuracy']:>8.4f}{r['integer_accuracy']:>9.4f}"
              f"{r['group_density']:>9.3f}{r['min_in_group_sparsity']:>7.3f}{r['compression_rate']:>7.1f}x"
              f"{r['storage_compression']:>8.1f}x{r['train_seconds']:>6.0f}s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
