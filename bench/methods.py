"""The method table: every pipeline on digits and on MNIST, mean +- std over seeds.

    .venv/bin/python bench/methods.py [--datasets digits mnist] [--seeds 0 1 2] [--lam 1.0]
                                      [--target-speedup S] [--jobs 2] [--json out.json]

Rows: float, ternary, naive (ternary + group lasso at once), lasso-then-ternary, WPC with the
paper's group count (--cost groups) and WPC weighted by cycles (--cost cycles, the default);
all on the CNN at --pe 1x16 with the same lambda. Columns: float accuracy, accuracy of the
trained model, integer accuracy (the model the hardware computes), CR (the paper's figure,
each layer at its real bits), storage (float32 bits / bits the export stores), cycles per
inference from the accelerator's cycle model, speedup over the dense network. With
--target-speedup every pruning method adapts lambda to the same cycle budget, which is the
fair way to compare them at equal cycles.

Deterministic given the seeds and one thread per run (torch.set_num_threads(1)); the float
phase of a seed is trained once and shared by its methods (the same result as training it
again). Digits: 1,438 train / 359 test images; MNIST: the built-in 5,000-digit sample,
4,000 / 1,000.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import sys
import tempfile

ROWS = [("float", "float", {}), ("ternary", "ternary", {}), ("naive", "naive", {"cost": "cycles"}),
        ("lasso-then-ternary", "lasso-then-ternary", {"cost": "cycles"}),
        ("wpc (groups)", "wpc", {"cost": "groups"}), ("wpc (cycles)", "wpc", {"cost": "cycles"})]
FIELDS = ("float_accuracy", "accuracy", "integer_accuracy", "compression_rate", "storage_compression", "cycles",
          "speedup", "train_seconds")


def _run(job):
    import torch
    torch.set_num_threads(1)
    from ternpe.model.train import TrainConfig, train
    label, method, extra, dataset, seed, cache = job
    cfg = TrainConfig(dataset=dataset, method=method, seed=seed, **extra)
    _, m = train(cfg, log=lambda *a: None, float_cache=cache)
    return {"row": label, "dataset": dataset, "seed": seed, **{k: m[k] for k in FIELDS}}


def _fmt(vals, spec, pct=False):
    k = 100 if pct else 1
    mu = statistics.mean(vals) * k
    sd = statistics.stdev(vals) * k if len(vals) > 1 else 0.0
    return f"{mu:{spec}} +- {sd:{spec}}"


def table(rows, datasets, seeds, lam, target) -> str:
    lines = []
    for ds in datasets:
        lines.append(f"\n{ds}: cnn, --pe 1x16, lambda {lam:g}"
                     + (f", --target-speedup {target:g} for the pruning methods" if target else "")
                     + f", mean +- std over seeds {', '.join(map(str, seeds))}")
        head = (f"{'method':<20}{'float %':>15}{'acc %':>15}{'integer %':>15}{'CR':>14}{'storage':>14}"
                f"{'cycles':>18}{'speedup':>14}")
        lines += [head, "-" * len(head)]
        for label, _, _ in ROWS:
            rs = [r for r in rows if r["row"] == label and r["dataset"] == ds]
            if not rs:
                continue
            col = lambda k: [r[k] for r in rs]
            lines.append(f"{label:<20}{_fmt(col('float_accuracy'), '.2f', True):>15}{_fmt(col('accuracy'), '.2f', True):>15}"
                         f"{_fmt(col('integer_accuracy'), '.2f', True):>15}{_fmt(col('compression_rate'), '.1f'):>14}"
                         f"{_fmt(col('storage_compression'), '.1f'):>14}{_fmt(col('cycles'), '.0f'):>18}"
                         f"{_fmt(col('speedup'), '.2f'):>14}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3 for a mean worth reading")
    p.add_argument("--lam", type=float, default=1.0, help="lambda of every pruning method (default: %(default)s)")
    p.add_argument("--target-speedup", type=float, default=None,
                   help="give every pruning method the same cycle budget (lambda adapts)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="only these rows (float, ternary, naive, lasso-then-ternary, 'wpc (groups)', 'wpc (cycles)')")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    p.add_argument("--json", help="also write every run's figures to this file")
    a = p.parse_args(argv)
    unknown = set(a.rows or ()) - {r[0] for r in ROWS}
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {[r[0] for r in ROWS]}")
    with tempfile.TemporaryDirectory(prefix="ternpe-float-") as cache:
        def jobs(first):
            out = []
            for ds in a.datasets:
                for seed in a.seeds:
                    for label, method, extra in ROWS:
                        if (method == "float") != first or (a.rows and label not in a.rows):
                            continue
                        kw = dict(extra)
                        if method != "float" and method != "ternary":
                            kw["lam"] = a.lam
                            if a.target_speedup:
                                kw["target_speedup"] = a.target_speedup
                        out.append((label, method, kw, ds, seed, cache))
            return out
        rows = []
        with cf.ProcessPoolExecutor(a.jobs) as ex:
            # the float runs first: they leave each seed's float phase for the other methods
            for batch in (jobs(True), jobs(False)):
                for r in ex.map(_run, batch):
                    rows.append(r)
                    print(f"  {r['dataset']:<7} seed {r['seed']}  {r['row']:<20} integer {r['integer_accuracy']:.4f}  "
                          f"speedup {r['speedup']:.2f}x  {r['train_seconds']:.0f} s", file=sys.stderr, flush=True)
    print(table(rows, a.datasets, a.seeds, a.lam, a.target_speedup))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
