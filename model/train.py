"""Training pipelines: float, ternary, naive, lasso-then-ternary and WPC.

Every pipeline starts from a float model trained here (the paper's runs start from a trained
float model too), then:

* ``ternary``: ternary fine-tuning, no pruning;
* ``naive``: ternarization and plain PE-wise group lasso at the same time;
* ``lasso-then-ternary``: group lasso on the float model, prune, then ternarize;
* ``wpc``: ternarization and Weight Penalty Clipping at the same time.

The pruning methods end with hard pruning (a tile is pruned when all its ternary weights are
zero) and a fine-tuning phase that keeps the mask.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ternpe.contract import ArrayGeometry, MULT_BITS, TileLayout, accumulator_bits, image_bits, tile_ids
from .config import TrainConfig
from .data import Dataset, load_dataset
from .fold import calibrate_activations, fold
from .nets import SeqNet, build_net
from .penalty import group_lasso, group_norms, wpc_penalty
from .ternary import ActQuant, ternary_codes, weight_layers

__all__ = ["TrainConfig", "train", "load_run", "group_stats"]

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
    """Tile ids of every weight layer on the chosen array (from the contract)."""

    def __init__(self, net: nn.Module, geometry: ArrayGeometry):
        self.layers = weight_layers(net)
        self.geometry = geometry
        self.ids, self.layouts = [], []
        for m in self.layers:
            self.ids.append(torch.from_numpy(tile_ids(m.spec, geometry)))
            self.layouts.append(TileLayout(m.spec, geometry))

    def penalty(self, kind: str, tau: str, r: float) -> torch.Tensor:
        total = 0.0
        for m, ids, lay in zip(self.layers, self.ids, self.layouts):
            if not m.penalized:
                continue
            norms = group_norms(m.weight * m.mask, ids, lay.count)
            total = total + (group_lasso(norms) if kind == "lasso" else wpc_penalty(norms, tau, r))
        return total

    def ternary_weights(self, m):
        """Integer weights as the hardware would hold them, for density statistics."""
        if m.spec.ternary:
            codes, _, _ = ternary_codes(m.weight.detach(), m.mask, m.t)
            return codes
        return m.weight.detach() * m.mask

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


def group_stats(net: nn.Module, geometry: ArrayGeometry) -> dict:
    """Per-layer tile density and the paper's compression rate over the penalized layers."""
    g = _Groups(net, geometry)
    layers, kept_total, groups_total, s_min = [], 0, 0, 1.0
    for m, ids, lay in zip(g.layers, g.ids, g.layouts):
        w = g.ternary_weights(m)
        nz = torch.zeros(lay.count).index_add_(0, ids.reshape(-1), (w != 0).float().reshape(-1))
        size = torch.zeros(lay.count).index_add_(0, ids.reshape(-1), torch.ones(ids.numel()))
        kept = nz > 0
        layers.append({"name": m.spec.name, "penalized": m.penalized, "ternary": m.spec.ternary,
                       "tiles": lay.count, "nonzero_tiles": int(kept.sum()),
                       "tile_density": float(kept.float().mean()),
                       "tile_map": kept.reshape(lay.rows, lay.cols).int().tolist()})
        if m.penalized:
            kept_total += int(kept.sum())
            groups_total += lay.count
            if kept.any():
                s_min = min(s_min, float((1 - nz[kept] / size[kept]).min()))
    rho = kept_total / groups_total if groups_total else 1.0
    s_min = s_min if kept_total else 0.0
    cr = 16.0 / (rho * (1 - s_min)) if rho > 0 and s_min < 1 else float("inf")
    return {"layers": layers, "group_density": rho, "min_in_group_sparsity": s_min, "compression_rate": cr}


def _float_bits(net: nn.Module) -> int:
    skip = ("mask", "clip", "num_batches_tracked")
    return 32 * sum(v.numel() for k, v in net.state_dict().items() if not k.endswith(skip))


def _set_modes(net: nn.Module, ternary: bool, quant_acts: bool) -> None:
    for m in weight_layers(net):
        m.mode = "ternary" if ternary and m.spec.ternary else "float"
    for a in net.modules():
        if isinstance(a, ActQuant):
            a.enabled = quant_acts


def _phase(net, data, cfg, epochs, lr, *, penalty=None, groups=None, desc="", history=None, log=print):
    if epochs == 0:
        return
    xtr, ytr, xte, yte = data
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps = epochs * math.ceil(len(xtr) / cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1,
                                                anneal_strategy="cos")
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + len(history or []))
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=None)
    for ep in bar:
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot_loss = tot_pen = 0.0
        for i in range(0, len(xtr), cfg.batch):
            idx = perm[i:i + cfg.batch]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            pen = groups.penalty(penalty, cfg.tau, cfg.r) if penalty else torch.zeros(())
            opt.zero_grad()
            (loss + cfg.lam * pen).backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            tot_pen += float(pen.detach()) * len(idx)
        acc = accuracy(net, xte, yte)
        dens = group_stats(net, groups.geometry)["group_density"] if groups else 1.0
        rec = {"phase": desc, "epoch": ep, "loss": tot_loss / len(xtr), "penalty": tot_pen / len(xtr),
               "test_accuracy": acc, "group_density": dens}
        if history is not None:
            history.append(rec)
        bar.set_postfix(acc=f"{acc:.3f}", density=f"{dens:.2f}")
    log(f"  {desc:<22} {epochs:3d} epochs  test acc {acc:.4f}  tile density {dens:.3f}")


def train(cfg: TrainConfig, out: str | pathlib.Path | None = None, *, log=print, dataset: Dataset | None = None):
    """Run one pipeline; write the run directory when ``out`` is given. Returns (net, metrics)."""
    cfg.validate()
    t0 = time.time()
    geometry = ArrayGeometry.parse(cfg.pe)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.data_dir)
    data = _tensors(ds)
    net = build_net(cfg.arch, ds.shape, ds.classes, act_bits=cfg.act_bits, t=cfg.t, first_last=cfg.first_last)
    groups = _Groups(net, geometry)      # validates the tiling of every layer up front
    history: list = []
    log(f"ternpe train: {cfg.method} on {ds.name} ({len(ds.x_train)} train / {len(ds.x_test)} test), "
        f"{cfg.arch}, PE {geometry}, lambda {cfg.lam}")
    kw = dict(groups=groups, history=history, log=log)

    _set_modes(net, ternary=False, quant_acts=False)
    _phase(net, data, cfg, cfg.epochs_float, cfg.lr, desc="float", **kw)
    float_accuracy = accuracy(net, data[2], data[3])

    m = cfg.method
    if m == "ternary":
        _set_modes(net, ternary=True, quant_acts=True)
        _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc="ternary", **kw)
    elif m in ("naive", "wpc"):
        _set_modes(net, ternary=True, quant_acts=True)
        _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc=f"ternary+{'lasso' if m == 'naive' else 'wpc'}",
               penalty="lasso" if m == "naive" else "wpc", **kw)
        groups.prune()
        _phase(net, data, cfg, cfg.epochs_finetune, cfg.lr_ternary, desc="fine-tune (masked)", **kw)
    elif m == "lasso-then-ternary":
        _phase(net, data, cfg, cfg.epochs_ternary, cfg.lr_ternary, desc="float+lasso", penalty="lasso", **kw)
        groups.prune()
        _set_modes(net, ternary=True, quant_acts=True)
        _phase(net, data, cfg, cfg.epochs_finetune, cfg.lr_ternary, desc="ternary (masked)", **kw)
    if m != "float":
        groups.prune()       # final ternarization may zero more tiles; the hardware skips them too

    acc = accuracy(net, data[2], data[3])
    metrics = {"method": m, "dataset": ds.name, "arch": cfg.arch, "pe": str(geometry),
               "input_shape": list(ds.shape), "classes": ds.classes, "float_accuracy": float_accuracy, "accuracy": acc}
    stats = group_stats(net, geometry)
    metrics.update({k: stats[k] for k in ("group_density", "min_in_group_sparsity", "compression_rate")})
    metrics["layers"] = stats["layers"]
    if isinstance(net, SeqNet):
        calibrate_activations(net, data[0])
        im = fold(net)
        metrics["integer_accuracy"] = float((im.predict(ds.x_test) == ds.y_test).mean())
        metrics["exportable"] = im.ternary
        bias_bits = [rq.bias_bits() for rq in im.requants]
    else:
        metrics["integer_accuracy"] = None
        metrics["exportable"] = False
        bias_bits = [MULT_BITS + accumulator_bits(l.spec, cfg.act_bits) for l in groups.layers]
    specs = [l.spec for l in groups.layers]
    nnz = [layer["nonzero_tiles"] for layer in stats["layers"]]
    bits = image_bits(specs, geometry, nnz, bias_bits, act_bits=cfg.act_bits)
    metrics["stored_bits"] = bits
    metrics["float_bits"] = _float_bits(net)
    metrics["storage_compression"] = metrics["float_bits"] / bits["total"]
    metrics["train_seconds"] = round(time.time() - t0, 2)
    log(f"  float acc {float_accuracy:.4f} | {m} acc {acc:.4f} | integer acc "
        f"{metrics['integer_accuracy'] if metrics['integer_accuracy'] is None else round(metrics['integer_accuracy'], 4)} "
        f"| tile density {stats['group_density']:.3f} | CR {stats['compression_rate']:.1f}x "
        f"| storage {metrics['storage_compression']:.1f}x | {metrics['train_seconds']:.0f} s")
    if out is not None:
        save_run(out, cfg, net, metrics, history)
    return net, metrics


def save_run(out, cfg: TrainConfig, net: nn.Module, metrics: dict, history: list) -> None:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dataclasses.asdict(cfg), "state_dict": net.state_dict(),
                "shape": list(metrics["input_shape"]), "classes": metrics["classes"],
                "modes": {i: m.mode for i, m in enumerate(weight_layers(net))},
                "acts": [a.enabled for a in net.modules() if isinstance(a, ActQuant)]}, out / "model.pt")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    from .plots import plot_history, plot_tile_maps
    plot_tile_maps(metrics["layers"], out / "tilemaps")
    plot_history(history, out / "training.png")


class RunError(ValueError):
    pass


def load_run(run_dir) -> tuple:
    """Rebuild a trained network from a run directory. Returns ``(net, cfg, metrics)``."""
    run_dir = pathlib.Path(run_dir)
    ckpt = run_dir / "model.pt"
    if not ckpt.is_file():
        raise RunError(f"{run_dir} is not a training run: {ckpt} is missing (make one with `ternpe train --out {run_dir}`)")
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**blob["config"])
    net = build_net(cfg.arch, tuple(blob["shape"]), blob["classes"], act_bits=cfg.act_bits, t=cfg.t, first_last=cfg.first_last)
    net.load_state_dict(blob["state_dict"])
    for i, m in enumerate(weight_layers(net)):
        m.mode = blob["modes"][i]
    for a, en in zip([a for a in net.modules() if isinstance(a, ActQuant)], blob["acts"]):
        a.enabled = en
    net.eval()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return net, cfg, metrics
