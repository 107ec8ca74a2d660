"""Pictures of a run: each layer's tile map (kept / pruned) and the training curves."""

from __future__ import annotations

import pathlib

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_tile_maps", "plot_history"]


def plot_tile_maps(layers: list, out_dir) -> list:
    """One PNG per layer: rows = groups of P output channels, columns = groups of G inputs."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer in layers:
        tmap = np.asarray(layer["tile_map"])
        fig, ax = plt.subplots(figsize=(max(2.5, 0.25 * tmap.shape[1] + 1.5), max(2.5, 0.12 * tmap.shape[0] + 1.2)))
        ax.imshow(tmap, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{layer['name']}: {layer['nonzero_tiles']}/{layer['tiles']} tiles kept", fontsize=9)
        ax.set_xlabel("input-channel group (tile column)")
        ax.set_ylabel("output-channel group (tile row)")
        fig.tight_layout()
        path = out_dir / f"{layer['name']}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_history(history: list, path) -> list:
    """Test accuracy and tile density per epoch (left axis) beside the speedup over dense in cycles
    (right axis: what the pruning buys on the trained array; a density that barely moves may
    still be a large speedup, when the pruned tiles are where the cycles are). Phases are marked.
    Returns the curves' labels."""
    if not history:
        return []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(history))
    lines = ax.plot(x, [h["test_accuracy"] for h in history], label="test accuracy")
    lines += ax.plot(x, [h["group_density"] for h in history], label="tile density")
    starts = [i for i, h in enumerate(history) if i == 0 or h["phase"] != history[i - 1]["phase"]]
    for i in starts:
        ax.axvline(i, color="grey", lw=0.5)
        ax.text(i, 0.02, history[i]["phase"], fontsize=7, rotation=90, va="bottom")
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylim(0, 1.02)
    speedup = [h.get("speedup", np.nan) for h in history]     # the float phase computes with every tile
    if not all(np.isnan(speedup)):
        ax2 = ax.twinx()
        lines += ax2.plot(x, speedup, color="tab:red", ls="--", marker=".", ms=3, label="speedup vs dense (cycles)")
        ax2.set_ylabel("fewer cycles than dense (x)")
        ax2.set_ylim(0.9, max(1.1, np.nanmax(speedup) * 1.1))
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [ln.get_label() for ln in lines]
