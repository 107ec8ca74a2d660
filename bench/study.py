"""Accuracy against cycles: every pruning method with lambda swept, over seeds (a skeleton).

    .venv/bin/python bench/study.py [--datasets digits mnist] [--seeds 0 1 2 3 4]
                                    [--rows naive wpc ...] [--lams 0.03 0.1 ...] [--jobs 2]
                                    [--results bench/results/study.jsonl] [--cache runs/study-float]

Each cell (data set, row, lambda, seed) is one ``ternpe train`` run; its figures are appended to
``--results`` (one JSON line) the moment it finishes, and a cell already there is not run again,
so the study can be stopped and resumed across sessions. The float phase of each seed is trained
once and kept in ``--cache`` for every method. The table: per row and lambda, integer accuracy
and cycles as mean +- std over the seeds, the row's Pareto front (no other of its points has
fewer cycles and a higher accuracy), and which row is best at each point of the front over
all rows. Mechanism figures per penalized layer: the kept groups' norm over their norm after the
float phase, the zero-code fraction of kept groups, the fraction of kept weights with |w| >= 1
(where the straight-through gradient is zero).

Both mechanisms: the proximal step (ours) and the gradient term (the paper's, rows "... grad"),
each over its own lambda grid (``--lams`` sets one grid for every row). ``--plot`` draws each
row's points and its Pareto front; ``--table-only`` runs nothing. Every method has the same
schedule: the float phase of its seed (shared), ``epochs_ternary`` ternary epochs and
``epochs_finetune`` fine-tune epochs; lasso-then-ternary runs its float lasso phase before them.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import pathlib
import statistics
import sys

#: Row name -> TrainConfig fields (lambda and seed are the grid's).
ROWS = {
    "naive": {"method": "naive"},
    "lasso-then-ternary": {"method": "lasso-then-ternary"},
    "wpc": {"method": "wpc"},                                   # rank, r 0.7, over all groups
    "wpc mix": {"method": "wpc", "tau": "mix"},
    "wpc live": {"method": "wpc", "tau_over": "live"},
    # the paper's mechanism: the penalty as a term of the loss, pruned at the end
    "naive grad": {"method": "naive", "penalty": "gradient"},
    "wpc grad": {"method": "wpc", "penalty": "gradient"},
}
#: lambda grid of the proximal step (relative to each layer's norm scale) ...
LAMS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: ... and of the gradient term (the paper's scale: pruning starts near 2e-2 on these networks)
GRAD_LAMS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def lams_of(row: str) -> tuple:
    return GRAD_LAMS if ROWS[row].get("penalty") == "gradient" else LAMS


#: A row whose training changed since cells were kept: its cells of an older version run again.
#: lasso-then-ternary 2: the same ternary and fine-tune epochs as the others after its lasso
#: phase (version 1 fine-tuned its ternary network for ``epochs_finetune`` only).
VERSIONS = {"lasso-then-ternary": 2}


def _key(cell: dict) -> tuple:
    return (cell["dataset"], cell["row"], float(cell["lam"]), int(cell["seed"]), tuple(cell["epochs"] or ()),
            int(cell.get("version", 1)))


def _mechanism(net, cfg, ds_name: str, cache) -> list:
    import torch
    from ternpe.contract import ArrayGeometry, tile_ids
    from ternpe.model.penalty import group_norms
    from ternpe.model.ternary import ternary_codes, weight_layers
    from ternpe.model.train import float_checkpoint
    blob = torch.load(float_checkpoint(cfg, ds_name, cache), map_location="cpu", weights_only=False)["state_dict"]
    names = {id(m): n for n, m in net.named_modules()}
    out = []
    for m in weight_layers(net):
        if not m.penalized:
            continue
        ids = torch.from_numpy(tile_ids(m.spec, ArrayGeometry.parse(cfg.pe)))
        n = int(ids.max()) + 1
        w0 = blob[f"{names[id(m)]}.weight"]
        kept = torch.zeros(n).index_add_(0, ids.reshape(-1), m.mask.reshape(-1).float()) > 0
        w = (m.weight * m.mask).detach()
        ratio = (group_norms(w, ids, n) / group_norms(w0, ids, n))[kept]
        codes, _, _ = ternary_codes(m.weight.detach(), m.mask, m.t)
        size = torch.zeros(n).index_add_(0, ids.reshape(-1), torch.ones(ids.numel()))
        zeros = torch.zeros(n).index_add_(0, ids.reshape(-1), (codes == 0).float().reshape(-1)) / size
        big = (m.weight.detach().abs() >= 1)[m.mask > 0]
        out.append({"layer": m.spec.name, "kept": int(kept.sum()), "groups": n,
                    "kept_norm_ratio": float(ratio.mean()) if kept.any() else None,
                    "kept_zero_codes": float(zeros[kept].mean()) if kept.any() else None,
                    "weights_over_1": float(big.float().mean()) if big.numel() else None})
    return out


def _run(job):
    import torch
    torch.set_num_threads(1)
    from ternpe.model.train import TrainConfig, train
    cell, cache = job
    epochs = dict(zip(("epochs_float", "epochs_ternary", "epochs_finetune"), cell["epochs"] or ()))
    cfg = TrainConfig(dataset=cell["dataset"], seed=cell["seed"], lam=cell["lam"], **ROWS[cell["row"]], **epochs)
    try:
        net, m = train(cfg, log=lambda *a: None, float_cache=cache)
    except Exception as e:      # a cell that fails (a diverged run) is kept as failed; the rest go on
        return {**cell, "error": f"{type(e).__name__}: {e}"}
    figures = {k: m[k] for k in ("float_accuracy", "integer_accuracy", "cycles", "dense_cycles", "speedup",
                                 "compression_rate", "group_density")}
    return {**cell, **figures, "mechanism": _mechanism(net, cfg, m["dataset"], cache)}


def _mean_sd(vals) -> tuple:
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _front(points: list) -> list:
    """The points no other beats on both: fewer cycles and higher accuracy."""
    return [p for p in points if not any(q["cycles"] <= p["cycles"] and q["acc"] >= p["acc"]
                                         and (q["cycles"] < p["cycles"] or q["acc"] > p["acc"]) for q in points)]


def _points(rs: list) -> list:
    points = []
    for row in ROWS:
        for lam in sorted({r["lam"] for r in rs if r["row"] == row}):
            cell = [r for r in rs if r["row"] == row and r["lam"] == lam]
            acc, acc_sd = _mean_sd([100 * r["integer_accuracy"] for r in cell])
            cyc, cyc_sd = _mean_sd([r["cycles"] for r in cell])
            points.append({"row": row, "lam": lam, "acc": acc, "acc_sd": acc_sd, "cycles": cyc,
                           "cycles_sd": cyc_sd, "seeds": len(cell),
                           "speedup": statistics.mean(r["speedup"] for r in cell),
                           "float": statistics.mean(100 * r["float_accuracy"] for r in cell)})
    return points


def plot(results: list, path) -> None:
    """Integer accuracy against cycles per data set: each row's points (mean +- std over seeds,
    lambda rising to the left) joined along its Pareto front."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    results = _split(results)[0]
    sets = sorted({r["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], sets):
        rs = [r for r in results if r["dataset"] == ds]
        points = _points(rs)
        for i, row in enumerate(ROWS):
            mine = [p for p in points if p["row"] == row]
            if not mine:
                continue
            style = dict(color=f"C{i}", ls="--" if ROWS[row].get("penalty") == "gradient" else "-")
            ax.errorbar([p["cycles"] for p in mine], [p["acc"] for p in mine], xerr=[p["cycles_sd"] for p in mine],
                        yerr=[p["acc_sd"] for p in mine], fmt="o", ms=3, alpha=0.35, color=style["color"])
            front = sorted(_front(mine), key=lambda p: p["cycles"])
            ax.plot([p["cycles"] for p in front], [p["acc"] for p in front], marker="o", ms=4, label=row, **style)
        ax.set_title(f"{ds}: integer accuracy against cycles (dense {rs[0]['dense_cycles']:,}), "
                     f"{max(p['seeds'] for p in points)} seeds", fontsize=9)
        ax.set_xlabel("cycles per inference (fewer is faster)")
        ax.set_ylabel("integer accuracy, % (mean +- std)")
        fl = statistics.mean(100 * r["float_accuracy"] for r in rs)
        ax.axhline(fl, color="grey", lw=0.8, ls=":", label=f"float {fl:.2f} %")
        ax.axhspan(fl - NEAR_FLOAT, fl, color="grey", alpha=0.12, lw=0)
        # the region where methods differ: a collapsed point (chance accuracy) would squash it
        low = min(p["acc"] for p in points)
        ax.set_ylim(max(low - 1, fl - 8), min(100, fl + 2))
        cut = [p for p in points if p["acc"] < fl - 8]
        if cut:
            ax.text(0.01, 0.01, f"{len(cut)} point(s) below {fl - 8:.0f} % not shown", transform=ax.transAxes,
                    fontsize=7, va="bottom")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: "within a point of float": integer accuracy (mean over seeds) at most this far below float's
NEAR_FLOAT = 0.5


def _split(results: list) -> tuple:
    """(the finished cells, the failed ones no later run of the same cell finished)."""
    ok = [r for r in results if "error" not in r]
    keys = {_key(r) for r in ok}
    return ok, [r for r in results if "error" in r and _key(r) not in keys]


def table(results: list) -> str:
    lines = []
    results, failed = _split(results)
    for ds in sorted({r["dataset"] for r in results}):
        rs = [r for r in results if r["dataset"] == ds]
        fl = statistics.mean(100 * r["float_accuracy"] for r in rs)
        lines.append(f"\n{ds}: integer accuracy and cycles, mean +- std over seeds (dense {rs[0]['dense_cycles']:,}, "
                     f"float {fl:.2f} %)")
        points = _points(rs)
        for row in ROWS:
            mine = [p for p in points if p["row"] == row]
            front = _front(mine)
            for p in sorted(mine, key=lambda p: p["lam"]):
                lines.append(f"  {row:<20} lambda {p['lam']:<6g} {p['acc']:6.2f} +- {p['acc_sd']:4.2f} %  "
                             f"{p['cycles']:9,.0f} +- {p['cycles_sd']:7,.0f} cycles  {p['speedup']:5.2f}x  "
                             f"{p['seeds']} seeds" + ("  front" if p in front else ""))
        lines.append(f"  fastest within {NEAR_FLOAT} points of float (mean over seeds; its own seeds' float):")
        for row in ROWS:
            near = [p for p in points if p["row"] == row and p["acc"] >= p["float"] - NEAR_FLOAT]
            if near:
                p = max(near, key=lambda p: p["speedup"])
                lines.append(f"    {row:<20} {p['speedup']:5.2f}x  {p['acc']:6.2f} % (float {p['float']:.2f}) "
                             f"lambda {p['lam']:g}, {p['seeds']} seeds")
        lines.append("  best over all rows (the common front, by cycles):")
        for p in sorted(_front(points), key=lambda p: p["cycles"]):
            lines.append(f"    {p['cycles']:9,.0f} cycles  {p['acc']:6.2f} %  {p['row']} (lambda {p['lam']:g})")
    for r in failed:
        lines.append(f"failed: {r['dataset']} {r['row']} lambda {r['lam']:g} seed {r['seed']}: {r['error']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    p.add_argument("--lams", type=float, nargs="+", default=None,
                   help="one lambda grid for every row (default: each mechanism's own: LAMS, GRAD_LAMS)")
    p.add_argument("--epochs", type=int, nargs=3, default=None, metavar=("FLOAT", "TERNARY", "FINETUNE"),
                   help="another schedule than the default (its cells are kept apart from the default's)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    p.add_argument("--results", default="bench/results/study.jsonl", help="one line per finished cell")
    p.add_argument("--cache", default="runs/study-float", help="the float phase of each seed, kept for every run")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw accuracy against cycles, each row's front")
    p.add_argument("--table-only", action="store_true", help="run nothing: the table (and plot) of what is done")
    p.add_argument("--retry-failed", action="store_true", help="run again the cells kept as failed")
    a = p.parse_args(argv)
    path = pathlib.Path(a.results)
    done = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    have = {_key(r) for r in done}
    # a row's points in turn, each over all seeds, so a stopped study leaves whole points
    cells = [{"dataset": ds, "row": row, "lam": lam, "seed": seed, "epochs": a.epochs, "version": VERSIONS.get(row, 1)}
             for ds in a.datasets for row in a.rows for lam in (a.lams or lams_of(row)) for seed in a.seeds]
    wanted = {_key(c) for c in cells}
    if a.retry_failed:
        have = {_key(r) for r in done if "error" not in r}
        done = [r for r in done if "error" not in r or _key(r) not in wanted]
    todo = [] if a.table_only else [c for c in cells if _key(c) not in have]
    print(f"{sum(_key(c) in have for c in cells)} of {len(cells)} cells done; running {len(todo)}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one seed's first cell trains its float phase alone, so parallel runs do not train it twice
    first = {(c["dataset"], c["seed"]): c for c in reversed(todo)}
    with cf.ProcessPoolExecutor(a.jobs) as ex:
        for batch in (list(first.values()), [c for c in todo if c not in first.values()]):
            # each cell is kept the moment it finishes, whatever the order; the file is opened for
            # each line, so a file replaced meanwhile (a git checkout, a stash) still gets it
            for fut in cf.as_completed([ex.submit(_run, (c, a.cache)) for c in batch]):
                r = fut.result()
                with path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                done.append(r)
                print(f"  {r['dataset']:<7} seed {r['seed']}  {r['row']:<20} lambda {r['lam']:<6g} "
                      + (f"failed: {r['error']}" if "error" in r else
                         f"integer {r['integer_accuracy']:.4f}  {r['speedup']:.2f}x"), file=sys.stderr, flush=True)
    results = [r for r in done if _key(r) in wanted]
    print(table(results))
    if a.plot and results:
        plot(results, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
