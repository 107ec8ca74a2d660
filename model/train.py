"""Training pipelines: float, ternary, naive, lasso-then-ternary and WPC.

Every pipeline starts from a float model trained here (the paper's runs start from a trained
float model too), then:

* ``ternary``: ternary fine-tuning, no pruning;
* ``naive``: ternarization and plain PE-wise group lasso at the same time;
* ``lasso-then-ternary``: group lasso on the float model, prune, then ternarize (the same
  ternary and fine-tune epochs as the others, after its lasso phase);
* ``wpc``: ternarization and Weight Penalty Clipping at the same time.

The pruning methods end with hard pruning (a tile is pruned when all its ternary weights are
zero) and a fine-tuning phase that keeps the mask.

``--cost cycles`` (the default) weighs each group's penalty, and so its WPC clip, by the cycles
the accelerator spends on the tile (:func:`ternpe.cycles.tile_cycles`: output pixels x pool
positions x words per tile), normalized so the mean weight over all penalized groups is 1:
pruning lands where the cycles are. ``--cost groups`` weighs every group the same (the paper).
``--target-speedup S`` raises lambda after every epoch of the penalty phase while the cycle
model's count is over ``dense / S`` (at most 4x an epoch, never over ``--lam-max``), and stops
the pull (lambda 0) the step the masks reach it. A WPC threshold ranked over all groups caps
what the penalty can prune (:meth:`model.penalty.Threshold.cap`); when that cap is under the
target, the run says so before it trains (:func:`threshold_speedup`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ternpe.contract import ArrayGeometry, MULT_BITS, TileLayout, accumulator_bits, check_array, image_bits, tile_ids
from ternpe.cycles import cycle_model, rows_per_group, tile_cycles
from ternpe.outdir import check_dir, replace_dir
from .config import METHODS, TrainConfig
from .data import Dataset, load_dataset
from .distributed import check_in_step, cross_entropy_share, is_main, rank, setup, sync_batchnorm, world_size
from .fold import calibrate_activations, fold
from .nets import build_net
from .penalty import Threshold, group_lasso, group_norms, shrink_factors, wpc_penalty
from .ternary import ActQuant, ternary_codes, weight_layers

__all__ = ["TrainConfig", "train", "PIPELINES", "Pipeline", "load_run", "group_stats", "cycle_stats", "check_out",
           "resolve_device", "RunError", "raise_lambda", "threshold_speedup", "float_checkpoint"]

def _tensors(ds: Dataset):
    def t(x):
        return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    return t(ds.x_train), torch.from_numpy(ds.y_train), t(ds.x_test), torch.from_numpy(ds.y_test)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


class _Groups:
    """Tile ids of every weight layer on the chosen array (from the contract), the weight of each
    layer's penalty and WPC's ``threshold`` rule."""

    def __init__(self, net: nn.Module, geometry: ArrayGeometry, cost: str = "groups",
                 threshold: Threshold = Threshold()):
        self.layers = weight_layers(net)
        self.geometry = geometry
        self.threshold = threshold
        self.ids, self.layouts = [], []
        for m in self.layers:
            self.ids.append(torch.from_numpy(tile_ids(m.spec, geometry)))
            self.layouts.append(TileLayout(m.spec, geometry))
        self.weights = self.cost_weights(cost)

    def cost_weights(self, cost: str) -> list:
        """Per layer, the weight of each of its groups' penalty: 1 (``groups``), or the tile's
        cycles over the mean cycles of all penalized groups (``cycles``)."""
        if cost == "groups":
            return [1.0] * len(self.layers)
        # a layer the hardware repeats (ResNet's classifier behind the average pool, at every
        # pixel) costs its tile's cycles that many times
        cyc = [float(tile_cycles(m.spec, self.geometry)) * getattr(m, "repeats", 1) for m in self.layers]
        pen = [(c, lay.count) for m, c, lay in zip(self.layers, cyc, self.layouts) if m.penalized]
        mean = sum(c * n for c, n in pen) / max(1, sum(n for _, n in pen)) if pen else 1.0
        return [c / mean for c in cyc]

    @staticmethod
    def live(m, ids: torch.Tensor, lay: TileLayout) -> torch.Tensor:
        """Per group of layer ``m``, whether its mask keeps any weight."""
        return torch.zeros(lay.count, device=m.mask.device).index_add_(
            0, ids.reshape(-1).to(m.mask.device), m.mask.reshape(-1).float()) > 0

    def penalty(self, kind: str) -> torch.Tensor:
        th = self.threshold
        total = 0.0
        for m, ids, lay, wt in zip(self.layers, self.ids, self.layouts, self.weights):
            if not m.penalized:
                continue
            norms = group_norms(m.weight * m.mask, ids, lay.count)
            # R_l = w_l * sum_i min(a_i, tau_l) = sum_i min(w_l a_i, w_l tau_l): the clip scales too
            total = total + wt * (group_lasso(norms) if kind == "lasso" else
                                  wpc_penalty(norms, th.variant, th.r, **th.kwargs(self.live(m, ids, lay))))
        return total

    @torch.no_grad()
    def shrink(self, kind: str, step: float) -> None:
        """The proximal step of ``step * penalty``: each pulled group's norm shrinks by ``step x
        weight x the mean norm of the layer's live groups`` (to exactly zero when it is smaller).
        The ternarizer is blind to a layer's scale, and its latent weights drift in scale while
        training, so the pull is relative: lambda means the same on every layer and network."""
        th = self.threshold
        for m, ids, lay, wt in zip(self.layers, self.ids, self.layouts, self.weights):
            if not m.penalized:
                continue
            norms = group_norms(m.weight * m.mask, ids, lay.count)
            live = norms[norms > 1e-5]
            scale = float(live.mean()) if live.numel() else 0.0
            f = shrink_factors(norms, kind, step * wt * scale, th.variant, th.r, **th.kwargs(self.live(m, ids, lay)))
            m.weight.mul_(f[ids])
            # a group shrunk to zero is pruned for good: behind a batch norm a zero filter would
            # otherwise get an enormous gradient (its output variance is 0) and grow straight back
            m.mask.mul_((f > 0).to(m.mask.dtype)[ids])

    @torch.no_grad()
    def mask_rows(self) -> list:
        """Per layer, the tiles per row the masks keep (cheap: no ternarization)."""
        return [self.live(m, ids, lay).reshape(lay.rows, lay.cols).sum(1).cpu().numpy()
                for m, ids, lay in zip(self.layers, self.ids, self.layouts)]

    def ternary_weights(self, m):
        """The ternary codes of a ternary layer (what it will hold once ternarized, whatever its
        mode now), the masked weights of another: what pruning looks at."""
        if m.spec.ternary:
            codes, _, _ = ternary_codes(m.weight.detach(), m.mask, m.t)
            return codes
        return m.weight.detach() * m.mask

    def computed_weights(self, m):
        """The weights the layer computes with in its current mode, for density statistics: the
        codes in ternary mode, the masked weights otherwise (a float model before any pruning
        keeps every tile, even one whose weights would all ternarize to zero)."""
        return self.ternary_weights(m) if m.mode == "ternary" else m.weight.detach() * m.mask

    def prune(self) -> None:
        """Hard-prune every tile whose ternary weights are all zero (or |w| < 1e-5)."""
        for m, ids, lay in zip(self.layers, self.ids, self.layouts):
            if not m.spec.ternary:
                continue
            codes = self.ternary_weights(m)
            small = (m.weight.detach().abs() < 1e-5) | (m.mask == 0)
            live = torch.zeros(lay.count, dtype=torch.bool).index_put_(
                (ids.reshape(-1),), ((codes != 0) & ~small).reshape(-1), accumulate=True)
            m.mask.copy_(live[ids].to(m.mask.dtype))
            with torch.no_grad():
                m.weight.mul_(m.mask)


def group_stats(net: nn.Module, geometry: ArrayGeometry, *, float_model: bool = False) -> dict:
    """Per-layer tile density and the compression rate over the penalized layers.

    Each layer counts at the bits it really has: 2 for a ternary layer, 8 for a full-precision
    layer of an integer model (``--first-last fp``), 32 for the float model (``float_model``).
    ``CR = sum(32 * groups) / sum(bits * kept groups * (1 - s_min))`` over the penalized layers,
    which is the paper's ``16 / (rho * (1 - s_min))`` when they are all ternary."""
    g = _Groups(net, geometry)
    layers, kept_total, groups_total, s_min = [], 0, 0, 1.0
    kept_bits = full_bits = 0.0
    for m, ids, lay in zip(g.layers, g.ids, g.layouts):
        w = g.computed_weights(m)
        nz = torch.zeros(lay.count).index_add_(0, ids.reshape(-1), (w != 0).float().reshape(-1))
        size = torch.zeros(lay.count).index_add_(0, ids.reshape(-1), torch.ones(ids.numel()))
        kept = nz > 0
        bits = 2 if m.mode == "ternary" else (32 if float_model else 8)
        layers.append({"name": m.spec.name, "penalized": m.penalized, "ternary": m.spec.ternary,
                       "weight_bits": bits, "tiles": lay.count, "nonzero_tiles": int(kept.sum()),
                       "tile_density": float(kept.float().mean()),
                       "tile_map": kept.reshape(lay.rows, lay.cols).int().tolist()})
        if m.penalized:
            kept_total += int(kept.sum())
            groups_total += lay.count
            kept_bits += bits * int(kept.sum())
            full_bits += 32 * lay.count
            if kept.any():
                s_min = min(s_min, float((1 - nz[kept] / size[kept]).min()))
    rho = kept_total / groups_total if groups_total else 1.0
    s_min = s_min if kept_total else 0.0
    cr = full_bits / (kept_bits * (1 - s_min)) if kept_bits > 0 and s_min < 1 else (
        1.0 if not groups_total else float("inf"))
    return {"layers": layers, "group_density": rho, "min_in_group_sparsity": s_min, "compression_rate": cr}


def cycle_stats(specs, geometry: ArrayGeometry, layers: list) -> dict:
    """Cycles per inference of the network whose tile maps ``layers`` holds (as
    :func:`group_stats` gives them), from the accelerator's own cycle model, beside the dense
    network's: ``cycles``, ``dense_cycles``, ``speedup``, and the same per layer."""
    rows = [np.asarray(l["tile_map"], np.int64).sum(axis=1) for l in layers]
    rows = _hw_rows(rows, specs, [len(l["tile_map"][0]) for l in layers], geometry)
    sparse, dense = cycle_model(specs, geometry, rows), cycle_model(specs, geometry)
    per = [{"name": a["name"], "cycles": a["cycles"], "dense_cycles": b["cycles"],
            "speedup": b["cycles"] / a["cycles"]} for a, b in zip(sparse["layers"], dense["layers"])]
    return {"cycles": sparse["total"], "dense_cycles": dense["total"], "speedup": dense["total"] / sparse["total"],
            "layers": per}


def _hw_rows(rows: list, specs, cols: list, geometry: ArrayGeometry) -> list:
    """Kept tiles per row of the trained layers, as the hardware's layers hold them: a
    classifier behind an average pool (ResNet-20) is repeated at every pixel, so each of its
    tiles is that many hardware tiles."""
    return [r * (TileLayout(s, geometry).cols // c) for r, s, c in zip(rows, specs, cols)]


def _float_bits(net: nn.Module) -> int:
    skip = ("mask", "clip", "num_batches_tracked")
    return 32 * sum(v.numel() for k, v in net.state_dict().items() if not k.endswith(skip))


def _set_modes(net: nn.Module, ternary: bool, quant_acts: bool) -> None:
    for m in weight_layers(net):
        m.mode = "ternary" if ternary and m.spec.ternary else "float"
    for a in net.modules():
        if isinstance(a, ActQuant):
            a.enabled = quant_acts


def _lr_factor(steps: int):
    """Warm up over the first 10% of the steps (at least one), then a cosine decay to ~0; defined
    for any number of steps >= 1 (no division by zero on a short phase)."""
    warm = max(1, round(0.1 * steps))

    def f(step: int) -> float:
        if step < warm:
            return 0.04 + 0.96 * step / warm
        span = max(1, steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / span))) + 1e-3
    return f


def _phase(net, data, cfg, epochs, lr, *, penalty=None, groups=None, desc="", history=None, log=print,
           lam=None, specs=None, model=None):
    """Train ``epochs`` epochs; returns the final lambda (adapted when ``cfg.target_speedup``).

    ``model`` is what runs the forward pass: ``net`` itself, or its DistributedDataParallel
    wrapper in a multi-process run, where each rank takes its share of every global batch."""
    lam = cfg.lam if lam is None else lam
    model = net if model is None else model
    world, me = world_size(), rank()
    if epochs == 0:
        return lam
    xtr, ytr, xte, yte = data
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps = epochs * math.ceil(len(xtr) / cfg.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(steps))
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + len(history or []))
    adapt = bool(penalty and cfg.target_speedup and specs is not None)
    dense = cycle_model(specs, groups.geometry)["total"] if adapt else 0
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=None if is_main() else True)
    for ep in bar:
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot_loss = tot_pen = 0.0
        for i in range(0, len(xtr), cfg.batch):
            idx = perm[i:i + cfg.batch]
            if len(idx) < 2 * world:
                continue
            mine = idx if world == 1 else idx[me::world]
            xb = _augment(xtr[mine], len(idx), slice(me, None, world), gen) if cfg.augment else xtr[mine]
            if world == 1:
                loss = F.cross_entropy(model(xb), ytr[idx])
            else:
                loss = cross_entropy_share(model(xb), ytr[mine], len(idx))
            gradient = penalty and lam > 0 and cfg.penalty == "gradient"
            if gradient:                 # the paper: the penalty is a term of the loss (every rank adds it
                pen = groups.penalty(penalty)    # whole; DDP averages the ranks' gradients)
                loss_opt = loss + lam * pen
            else:
                loss_opt = loss
            opt.zero_grad()
            loss_opt.backward()
            opt.step()
            if gradient:
                pen = pen.detach()
            elif penalty and lam > 0:    # the penalty's proximal step, at this step's learning rate
                groups.shrink(penalty, opt.param_groups[0]["lr"] * lam)
                if adapt:
                    # pruning is for good: stop pulling the moment the masks reach the target
                    rows = _hw_rows(groups.mask_rows(), specs, [l.cols for l in groups.layouts], groups.geometry)
                    sp = dense / cycle_model(specs, groups.geometry, rows)["total"]
                    if sp >= cfg.target_speedup:
                        lam = 0.0
                with torch.no_grad():
                    pen = groups.penalty(penalty)
            else:
                pen = torch.zeros(())
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)       # a rank's share: its own estimate
            tot_pen += float(pen.detach()) * len(idx)
        check_in_step(net)
        acc = accuracy(net, xte, yte)
        rec = {"phase": desc, "epoch": ep, "loss": tot_loss / len(xtr), "penalty": tot_pen / len(xtr),
               "test_accuracy": acc, "group_density": 1.0, "lam": lam}
        if groups:
            st = group_stats(net, groups.geometry)
            rec["group_density"] = st["group_density"]
            if specs is not None:
                rec["speedup"] = cycle_stats(specs, groups.geometry, st["layers"])["speedup"]
        if adapt:
            lam = raise_lambda(lam, rec["speedup"], cfg.target_speedup, cfg.lam_ceiling)
        if history is not None:
            history.append(rec)
        bar.set_postfix(acc=f"{acc:.3f}", density=f"{rec['group_density']:.2f}",
                        **({"speedup": f"{rec['speedup']:.2f}"} if "speedup" in rec else {}))
    sp = f"  speedup {rec['speedup']:.2f}x" if "speedup" in rec else ""
    log(f"  {desc:<22} {epochs:3d} epochs  test acc {acc:.4f}  tile density {rec['group_density']:.3f}{sp}"
        + (f"  lambda {lam:.3g}" if adapt else ""))
    return lam


def raise_lambda(lam: float, speedup: float, target: float, ceiling: float) -> float:
    """``--target-speedup``'s update after an epoch of the penalty phase: while the network is
    slower than the target, lambda grows by ``1 + 4 (target / speedup - 1)``, at most 4x an
    epoch and never over ``ceiling``; a lambda of 0 (the pull stopped at the target) stays 0."""
    ratio = target / speedup
    if lam <= 0 or ratio <= 1:
        return lam
    return min(ceiling, lam * min(4.0, 1 + 4 * (ratio - 1)))


def _spread_rows(kept: int, rows: int, cols: int, group: int) -> list:
    """Tiles per row of a layer keeping ``kept`` of its ``rows x cols`` tiles at the fewest
    cycles: spread over the groups of ``group`` rows first (a group without tiles still costs an
    op), then over the rows of each group."""
    order = [g0 + j for j in range(group) for g0 in range(0, rows, group) if g0 + j < rows]
    out = [0] * rows
    for i in range(kept):
        out[order[i % rows]] += 1
    return out


def threshold_speedup(groups: _Groups, specs) -> float | None:
    """The most speedup WPC's penalty can reach when its threshold caps every penalized layer
    (:meth:`model.penalty.Threshold.cap`: ``rank_index + 1`` groups for a tau ranked over all
    groups), the kept tiles placed where they cost least; None when the rule sets no cap or the
    network does not fold. The final pruning of tiles whose codes are all zero may add a little."""
    caps = [groups.threshold.cap(lay.count) if m.penalized else 0 for m, lay in zip(groups.layers, groups.layouts)]
    if specs is None or None in caps:
        return None
    geometry, n = groups.geometry, len(specs)
    rows = [np.asarray(_spread_rows(lay.count - c, lay.rows, lay.cols, rows_per_group(geometry, s, i == n - 1)))
            for i, (lay, c, s) in enumerate(zip(groups.layouts, caps, specs))]
    rows = _hw_rows(rows, specs, [lay.cols for lay in groups.layouts], geometry)
    return cycle_model(specs, geometry)["total"] / cycle_model(specs, geometry, rows)["total"]


def _augment(x: torch.Tensor, n: int, mine: slice, gen: torch.Generator) -> torch.Tensor:
    """The standard CIFAR augmentation: a random shift of up to 4 pixels (zero-padded) and a
    random horizontal flip per image. The draws are made for the whole global batch of ``n``
    (every rank draws the same), and ``mine`` picks this rank's images."""
    shifts = torch.randint(-4, 5, (n, 2), generator=gen)[mine]
    flips = (torch.rand(n, generator=gen) < 0.5)[mine]
    h, w = x.shape[2], x.shape[3]
    xp = F.pad(x, (4, 4, 4, 4))
    out = torch.stack([xp[i, :, 4 + dy:4 + dy + h, 4 + dx:4 + dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])
    out[flips.to(out.device)] = out[flips.to(out.device)].flip(3)
    return out


def float_checkpoint(cfg: TrainConfig, ds_name: str, float_cache) -> pathlib.Path:
    """Where ``train(..., float_cache=...)`` keeps the float phase of ``cfg`` on data set
    ``ds_name`` (a torch file with ``state_dict`` and ``history``)."""
    return pathlib.Path(float_cache) / f"{_float_key(cfg, ds_name)}.pt"


def _float_key(cfg: TrainConfig, ds_name: str) -> str:
    """Everything the float phase depends on (the method does not)."""
    return "-".join(str(v) for v in (ds_name, cfg.data_dir and pathlib.Path(cfg.data_dir).name, cfg.arch, cfg.width,
                                       cfg.first_last, cfg.act_bits, cfg.t, cfg.pe, cfg.epochs_float, cfg.lr, cfg.batch,
                                       cfg.augment,
                                       cfg.weight_decay, cfg.seed, torch.get_num_threads())).replace("/", "_")


def train(cfg: TrainConfig, out: str | pathlib.Path | None = None, *, log=print, dataset: Dataset | None = None,
          float_cache: str | pathlib.Path | None = None, force: bool = False):
    """Run one pipeline; write the run directory when ``out`` is given. Returns (net, metrics).

    ``out`` is checked before anything trains, and written only when the run is complete (into
    a temporary directory, then renamed over the old run): an interrupted run leaves nothing.
    ``out`` must be new, empty or a run (:mod:`ternpe.outdir`); ``force``: anything else there is
    moved aside when the run is written.
    ``float_cache``: a directory where the float phase is kept and reused by runs that differ
    only after it (the bench's methods of one seed); the result is the same as training it."""
    cfg.validate()
    if out is not None:
        out = check_out(out, force=force)
    dev = resolve_device(cfg.device)
    distributed = setup(dev)
    if cfg.threads is not None and not distributed:
        torch.set_num_threads(cfg.threads)
    if not is_main():
        log = _silent
    t0 = time.time()
    geometry = ArrayGeometry.parse(cfg.pe)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.data_dir)
    data = tuple(t.to(dev) for t in _tensors(ds))
    net = build_net(cfg.arch, ds.shape, ds.classes, act_bits=cfg.act_bits, t=cfg.t, first_last=cfg.first_last,
                    width=cfg.width).to(dev)
    model = None
    if distributed:
        net = sync_batchnorm(net).to(dev)
        model = torch.nn.parallel.DistributedDataParallel(net)
    check_array(geometry, net.specs())      # what the hardware cannot run is refused before any training
    threshold = Threshold(cfg.tau, cfg.r, cfg.rank_base, cfg.tau_over)
    groups = _Groups(net, geometry, cfg.cost, threshold)      # validates the tiling of every layer up front
    specs = net.specs() if net.folds else None      # a folding network: cycles, integer accuracy
    history: list = []
    log(_banner(cfg, ds, geometry, dev, distributed))
    cap = threshold_speedup(groups, specs) if cfg.method == "wpc" and cfg.target_speedup else None
    if cap is not None and cap < cfg.target_speedup:
        log(_cap_warning(cfg, groups, cap))
    kw = dict(groups=groups, history=history, log=log, specs=specs, model=model)

    _float_phase(net, data, cfg, ds.name, float_cache, kw)
    float_accuracy = accuracy(net, data[2], data[3])
    pipeline = PIPELINES[cfg.method]
    lam = pipeline.run(net, data, cfg, **kw)
    if not pipeline.float_model:
        groups.prune()       # final ternarization may zero more tiles; the hardware skips them too

    acc = accuracy(net, data[2], data[3])
    net = net.cpu()                 # folding, statistics and the saved run are on the CPU
    data = tuple(t.cpu() for t in data)
    metrics = {"method": cfg.method, "dataset": ds.name, "arch": cfg.arch, "pe": str(geometry), "cost": cfg.cost,
               "input_shape": list(ds.shape), "classes": ds.classes, "float_accuracy": float_accuracy, "accuracy": acc}
    stats = group_stats(net, geometry, float_model=pipeline.float_model)
    metrics.update({k: stats[k] for k in ("group_density", "min_in_group_sparsity", "compression_rate")})
    metrics["layers"] = stats["layers"]
    _cycle_metrics(metrics, specs, geometry)
    if cfg.target_speedup:
        metrics["final_lam"] = lam
        metrics["threshold_speedup"] = cap
        if specs is not None and metrics["speedup"] < cfg.target_speedup:
            log(f"  warning: target speedup {cfg.target_speedup:g}x not reached ({metrics['speedup']:.2f}x, lambda "
                f"{lam:.3g} of at most {cfg.lam_ceiling:g}); give the penalty phase more epochs (--epochs-ternary), "
                f"a higher --lam-max" + (f", or a threshold that prunes more ({_cap_hint(cfg)})"
                                          if cfg.method == "wpc" and _cap_hint(cfg) else ""))
    bias_bits = _integer_metrics(metrics, net, groups, data[0], ds, cfg.act_bits)
    _storage_metrics(metrics, net, groups, specs, bias_bits, cfg.act_bits)
    metrics["train_seconds"] = round(time.time() - t0, 2)
    metrics["threads"] = torch.get_num_threads()
    _log_summary(log, metrics)
    if distributed:
        metrics["processes"] = world_size()
    if out is not None and is_main():
        save_run(out, cfg, net, metrics, history, log=log)       # rank 0 only
    return net, metrics


def _banner(cfg: TrainConfig, ds: Dataset, geometry: ArrayGeometry, dev: str, distributed: bool) -> str:
    return (f"ternpe train: {cfg.method} on {ds.name} ({len(ds.x_train)} train / {len(ds.x_test)} test), "
            f"{cfg.arch}, PE {geometry}, lambda {cfg.lam}, cost {cfg.cost}"
            + (f", tau {_tau_text(cfg)}" if cfg.method == "wpc" else "")
            + (f", target speedup {cfg.target_speedup:g}x (lambda at most {cfg.lam_ceiling:g})"
               if cfg.target_speedup else "")
            + (f", {world_size()} processes ({'nccl' if dev == 'cuda' else 'gloo'})" if distributed else "")
            + (", on CUDA" if dev == "cuda" else ""))


def _tau_text(cfg: TrainConfig) -> str:
    r = "" if cfg.tau == "mix" else f" r {cfg.r:g}"
    base = f" base {cfg.rank_base}" if cfg.tau != "mean" else ""
    return f"{cfg.tau}{r}{base} over {cfg.tau_over} groups"


def _cap_warning(cfg: TrainConfig, groups: _Groups, cap: float) -> str:
    per = ", ".join(f"{m.spec.name} {groups.threshold.cap(lay.count)} of {lay.count}"
                    for m, lay in zip(groups.layers, groups.layouts) if m.penalized)
    return (f"  warning: --target-speedup {cfg.target_speedup:g}x is beyond what --tau {_tau_text(cfg)} can prune "
            f"(at most {per} groups: about {cap:.2f}x); lambda will rise at most to {cfg.lam_ceiling:g} (--lam-max). "
            f"{_cap_hint(cfg)} lifts the cap")


def _cap_hint(cfg: TrainConfig) -> str:
    """The switches that let WPC's threshold prune more ('' when there are none)."""
    hints = (["--tau-over live (tau over the live groups)"] if cfg.tau_over == "all" and cfg.tau != "mean" else []) + (
        ["a larger --r"] if cfg.tau != "mix" else [])
    return " or ".join(hints)


def _float_phase(net: nn.Module, data, cfg: TrainConfig, ds_name: str, float_cache, kw: dict) -> None:
    """Train the float model every pipeline starts from, or load it from ``float_cache`` (with
    its history) when a run with the same float phase kept it there."""
    history = kw["history"]
    _set_modes(net, ternary=False, quant_acts=False)
    cached = float_checkpoint(cfg, ds_name, float_cache) if float_cache else None
    if cached is not None and cached.is_file():
        blob = torch.load(cached, map_location="cpu", weights_only=False)
        net.load_state_dict(blob["state_dict"])
        history.extend(blob["history"])
        return
    _phase(net, data, cfg, cfg.epochs_float, cfg.lr, desc="float", **kw)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), "history": history}, tmp)
        tmp.replace(cached)


# The phases of each --method after the float one. Each returns the final lambda (adapted
# during the penalty phase under --target-speedup); ``kw`` are _phase's keyword arguments.

def _keep_float(net, data, cfg, **kw) -> float:
    return cfg.lam


def _ternary(net, data, cfg, **kw) -> float:
    _set_modes(net, ternary=True, quant_acts=True)
    _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc="ternary", **kw)
    return cfg.lam


def _ternary_with(penalty: str):
    """Ternarization and ``penalty`` (lasso: naive; wpc) at once, prune, fine-tune the masked network."""
    def phases(net, data, cfg, **kw) -> float:
        _set_modes(net, ternary=True, quant_acts=True)
        lam = _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc=f"ternary+{penalty}",
                     penalty=penalty, **kw)
        kw["groups"].prune()
        _phase(net, data, cfg, cfg.epochs_finetune, cfg.lr_ternary, desc="fine-tune (masked)", **kw)
        return lam
    return phases


def _lasso_then_ternary(net, data, cfg, **kw) -> float:
    """Group lasso on the float model (``epochs_ternary``), prune; then the same ternary schedule
    as the other methods on the masked network: ``epochs_ternary`` and ``epochs_finetune``."""
    lam = _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc="float+lasso", penalty="lasso", **kw)
    kw["groups"].prune()
    _set_modes(net, ternary=True, quant_acts=True)
    _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc="ternary (masked)", **kw)
    _phase(net, data, cfg, cfg.epochs_finetune, cfg.lr_ternary, desc="fine-tune (masked)", **kw)
    return lam


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """What a ``--method`` does after the float phase: ``run(net, data, cfg, **phase keywords)``
    returns the final lambda; ``float_model``: the run ends with the float model (nothing is
    pruned, every weight counts 32 bits)."""
    run: Callable[..., float]
    float_model: bool = False


PIPELINES = {
    "float": Pipeline(_keep_float, float_model=True),
    "ternary": Pipeline(_ternary),
    "naive": Pipeline(_ternary_with("lasso")),
    "lasso-then-ternary": Pipeline(_lasso_then_ternary),
    "wpc": Pipeline(_ternary_with("wpc")),
}
assert tuple(PIPELINES) == METHODS, "every --method has a pipeline"


def _cycle_metrics(metrics: dict, specs, geometry: ArrayGeometry) -> None:
    """``cycles``, ``dense_cycles`` and ``speedup``, whole and per layer (None for a network that
    does not fold: the accelerator does not run it)."""
    if specs is None:
        metrics.update({"cycles": None, "dense_cycles": None, "speedup": None})
        return
    metrics["layer_specs"] = [s.to_dict() for s in specs]
    cyc = cycle_stats(specs, geometry, metrics["layers"])
    metrics.update({k: cyc[k] for k in ("cycles", "dense_cycles", "speedup")})
    for layer, c in zip(metrics["layers"], cyc["layers"]):
        layer.update({k: c[k] for k in ("cycles", "dense_cycles", "speedup")})


def _integer_metrics(metrics: dict, net: nn.Module, groups: _Groups, x_train: torch.Tensor, ds: Dataset,
                     act_bits: int) -> list:
    """Fold a folding network (its activation clips calibrated on ``x_train`` first) and record
    its integer accuracy; returns each layer's bias bits, as the export stores them."""
    if not net.folds:
        metrics["integer_accuracy"] = None
        metrics["exportable"] = False
        return [MULT_BITS + accumulator_bits(l.spec, act_bits) for l in groups.layers]
    calibrate_activations(net, x_train)
    im = fold(net)
    metrics["integer_accuracy"] = float((im.predict(ds.x_test) == ds.y_test).mean())
    metrics["exportable"] = im.ternary
    return [rq.bias_bits() for rq in im.requants]


def _storage_metrics(metrics: dict, net: nn.Module, groups: _Groups, specs, bias_bits: list, act_bits: int) -> None:
    """The bits the export stores against the float model's: ``stored_bits``, ``float_bits``,
    ``storage_compression``."""
    geometry = groups.geometry
    layers = metrics["layers"]
    nnz = [layer["nonzero_tiles"] for layer in layers]
    stored = [l.spec for l in groups.layers]
    if specs is not None:       # as the export stores it: a classifier behind an average pool, at every pixel
        nnz = [n * (TileLayout(s, geometry).count // lay.count) for n, s, lay in zip(nnz, specs, groups.layouts)]
        stored = specs
    bits = image_bits(stored, geometry, nnz, bias_bits, act_bits=act_bits,
                      weight_bits=[layer["weight_bits"] for layer in layers])
    metrics["stored_bits"] = bits
    metrics["float_bits"] = _float_bits(net)
    metrics["storage_compression"] = metrics["float_bits"] / bits["total"]


def _log_summary(log, metrics: dict) -> None:
    ia = metrics["integer_accuracy"]
    cyc_txt = (f" | {metrics['cycles']:,} cycles, {metrics['speedup']:.2f}x fewer than dense"
               if metrics["cycles"] is not None else "")
    log(f"  float acc {metrics['float_accuracy']:.4f} | {metrics['method']} acc {metrics['accuracy']:.4f} | integer acc "
        f"{ia if ia is None else round(ia, 4)} "
        f"| tile density {metrics['group_density']:.3f} | CR {metrics['compression_rate']:.1f}x "
        f"| storage {metrics['storage_compression']:.1f}x{cyc_txt} | {metrics['train_seconds']:.0f} s")


def _silent(*args, **kwargs) -> None:
    pass


def resolve_device(name: str) -> str:
    """``--device``: auto takes CUDA when there is a GPU, else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch (this torch build or this machine has "
                         "none); use --device cpu")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def check_out(out, *, force: bool = False) -> pathlib.Path:
    """Refuse, before any training, a run directory that cannot be written: a file, a directory
    holding something other than a run (unless ``force``), a place without write permission."""
    return check_dir(out, "run", force=force, error=RunError)


def save_run(out, cfg: TrainConfig, net: nn.Module, metrics: dict, history: list, *, log=print) -> None:
    """Write the run into a temporary directory beside ``out``, then rename it into place (an
    old run there is replaced as a whole: no stale tile maps, no half-written run; anything
    else there is moved aside, :func:`ternpe.outdir.replace_dir`)."""
    def fill(tmp: pathlib.Path) -> None:
        torch.save({"config": dataclasses.asdict(cfg), "state_dict": net.state_dict(),
                    "shape": list(metrics["input_shape"]), "classes": metrics["classes"],
                    "modes": {i: m.mode for i, m in enumerate(weight_layers(net))},
                    "acts": [a.enabled for a in net.modules() if isinstance(a, ActQuant)]}, tmp / "model.pt")
        (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        (tmp / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        from .plots import plot_history, plot_tile_maps
        plot_tile_maps(metrics["layers"], tmp / "tilemaps")
        plot_history(history, tmp / "training.png", metrics.get("dense_cycles"))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    replace_dir(out, fill, "run", log=log)


class RunError(ValueError):
    pass


def load_run(run_dir) -> tuple:
    """Rebuild a trained network from a run directory. Returns ``(net, cfg, metrics)``."""
    run_dir = pathlib.Path(run_dir)
    ckpt = run_dir / "model.pt"
    if not ckpt.is_file():
        raise RunError(f"{run_dir} is not a training run: {ckpt} is missing (make one with `ternpe train --out {run_dir}`)")
    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        cfg = TrainConfig(**blob["config"])
        net = build_net(cfg.arch, tuple(blob["shape"]), blob["classes"], act_bits=cfg.act_bits, t=cfg.t,
                        first_last=cfg.first_last, width=cfg.width)
        net.load_state_dict(blob["state_dict"])
        for i, m in enumerate(weight_layers(net)):
            m.mode = blob["modes"][i]
        for a, en in zip([a for a in net.modules() if isinstance(a, ActQuant)], blob["acts"]):
            a.enabled = en
    except Exception as e:          # a truncated or foreign checkpoint: torch and pickle raise almost anything
        raise RunError(f"{ckpt} cannot be read as a ternpe run's model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}); train it again with `ternpe train "
                       f"--out {run_dir}`") from None
    net.eval()
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except (ValueError, OSError) as e:
        raise RunError(f"{metrics_path} is not readable JSON ({e}); train the run again") from None
    return net, cfg, metrics
