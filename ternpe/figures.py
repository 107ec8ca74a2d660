"""The figures of a run, drawn with matplotlib (Agg): the training curves, a layer's tile map, the
cycles per layer (dense against pruned) and the resources against the device. Each function
returns a matplotlib Figure; :func:`png` turns one into PNG bytes (``model/plots.py`` saves
them beside a run, ``ternpe report`` embeds them in its page). matplotlib is imported when a
figure is drawn, not with this module."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["pyplot", "png", "history_figure", "tile_map_figure", "layer_cycles_figure", "resources_figure",
           "KEPT", "PRUNED"]

#: The tile map's key: a kept (non-zero) tile is black, a pruned one white.
KEPT, PRUNED = "kept tile (black)", "pruned tile (white)"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, its box fitted to what is drawn (no label clipped); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    pyplot().close(fig)
    return buf.getvalue()


def _phases(ax, history: list) -> None:
    """A grey line and the phase's name where each training phase starts."""
    for i, h in enumerate(history):
        if i == 0 or h["phase"] != history[i - 1]["phase"]:
            ax.axvline(i, color="grey", lw=0.5)
            ax.text(i + 0.3, 0.02, h["phase"], fontsize=7, rotation=90, va="bottom", transform=ax.get_xaxis_transform())


def history_figure(history: list, dense_cycles: int | None = None) -> tuple:
    """Test accuracy and tile density per epoch (left panel) beside the speedup over dense in
    cycles (right panel: what the pruning buys on the trained array; a density that barely moves
    may still be a large speedup when the pruned tiles are where the cycles are), with the cycles
    per inference on its right axis when ``dense_cycles`` is known. A run without groups (no
    speedup recorded) has the left panel only. Returns ``(figure, curve labels)``."""
    plt = pyplot()
    x = np.arange(len(history))
    speedup = np.array([h.get("speedup", np.nan) for h in history], float)   # the float phase: every tile
    has_speedup = bool(np.isfinite(speedup).any())
    fig, axes = plt.subplots(1, 2 if has_speedup else 1, figsize=(11 if has_speedup else 6.5, 3.4), squeeze=False)
    ax = axes[0][0]
    lines = ax.plot(x, [h["test_accuracy"] for h in history], label="test accuracy")
    lines += ax.plot(x, [h["group_density"] for h in history], label="tile density")
    ax.set(xlabel="epoch (all phases)", ylim=(0, 1.02), title="accuracy and tile density")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=8)
    _phases(ax, history)
    if has_speedup:
        ax = axes[0][1]
        lines += ax.plot(x, speedup, color="tab:red", marker=".", ms=3, label="speedup vs dense (cycles)")
        ax.set(xlabel="epoch (all phases)", ylabel="fewer cycles than dense (x)", title="speedup over dense",
               ylim=(0.9, max(1.1, np.nanmax(speedup) * 1.1)))
        ax.grid(alpha=0.3)
        if dense_cycles:
            f = lambda v: dense_cycles / np.maximum(v, 1e-9)    # noqa: E731 (speedup <-> cycles, its own inverse)
            ax.secondary_yaxis("right", functions=(f, f)).set_ylabel("cycles per inference")
        _phases(ax, history)
    fig.tight_layout()
    return fig, [ln.get_label() for ln in lines]


def _cell_inches(rows: int, cols: int) -> tuple:
    """(width, height) of one tile in inches: square up to 0.3 in, the map at most 6.5 in wide and
    4 in tall, a cell at most 3x as wide as tall or as tall as wide (so a 10 x 98 fully connected
    map and a 32 x 1 first layer both stay readable)."""
    w, h = min(0.3, 6.5 / cols), min(0.3, 4.0 / rows)
    return min(w, 3 * h), min(h, 3 * w)


def tile_map_figure(tile_map, title: str):
    """A layer's tile map: rows = groups of P output channels (tile rows), columns = groups of G
    input lanes (tile columns); black = kept, white = pruned, with that key beside it. The cells
    are drawn at a fixed size, so a 10 x 98 map is as readable as a 16 x 1 one."""
    plt = pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    tmap = np.atleast_2d(np.asarray(tile_map, float))
    rows, cols = tmap.shape
    cw, ch = _cell_inches(rows, cols)
    aw, ah = cw * cols, ch * rows
    left, bottom, top = 0.9, 0.6, 0.45
    fig = plt.figure(figsize=(left + aw + 0.2, bottom + ah + top))
    ax = fig.add_axes([left / fig.get_figwidth(), bottom / fig.get_figheight(),
                       aw / fig.get_figwidth(), ah / fig.get_figheight()])
    ax.imshow(tmap, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
              extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True, nbins="auto", min_n_ticks=1))
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("tile column (input group)", fontsize=8)
    ax.set_ylabel("tile row (output group)", fontsize=8)
    ax.legend(handles=[Patch(facecolor="black", edgecolor="grey", label=KEPT),
                       Patch(facecolor="white", edgecolor="grey", label=PRUNED)],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, borderaxespad=0)
    return fig


def layer_cycles_figure(names: list, dense: list, pruned: list):
    """Cycles per inference of each layer, dense against pruned, side by side (log scale when the
    layers differ by more than 30x, so the small ones still show)."""
    plt = pyplot()
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(names) + 2.5), 3.4))
    ax.bar(x - 0.2, dense, 0.4, label="dense (no tile pruned)", color="tab:grey")
    ax.bar(x + 0.2, pruned, 0.4, label="pruned (this export)", color="tab:blue")
    for xi, d, p in zip(x, dense, pruned):
        ax.annotate(f"{d / p:.2f}x" if p else "", (xi + 0.2, p), ha="center", va="bottom", fontsize=7)
    if max(dense) > 30 * max(1, min(pruned)):
        ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center")
    ax.set(ylabel="cycles per inference", title="cycles per layer (label: speedup over dense)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def resources_figure(used: dict, available: dict, title: str):
    """Each resource's use in percent of the device's (bars), with used / available as labels."""
    plt = pyplot()
    names = [k for k in used if available.get(k)]
    pct = [100.0 * used[k] / available[k] for k in names]
    fig, ax = plt.subplots(figsize=(6.0, 0.42 * len(names) + 0.9))
    ax.barh(names, pct, color=["tab:red" if p > 100 else "tab:green" for p in pct])
    for i, k in enumerate(names):
        ax.text(pct[i] + 1, i, f"{used[k]:,} / {available[k]:,}", va="center", fontsize=8)
    ax.set_xlim(0, max(110.0, max(pct, default=0) * 1.25))
    ax.invert_yaxis()
    ax.set(xlabel="% of the device", title=title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
