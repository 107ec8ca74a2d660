"""Pictures of a run: each layer's tile map (kept / pruned) and the training curves, saved as PNGs
beside it. The figures themselves are drawn by :mod:`ternpe.figures` (``ternpe report`` embeds
the same ones in its page)."""

from __future__ import annotations

import pathlib

from ternpe.figures import history_figure, png, tile_map_figure

__all__ = ["plot_tile_maps", "plot_history"]


def plot_tile_maps(layers: list, out_dir) -> list:
    """One PNG per layer: rows = groups of P output channels, columns = groups of G inputs;
    black = kept, white = pruned (the key is drawn beside the map)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for layer in layers:
        fig = tile_map_figure(layer["tile_map"], f"{layer['name']}: {layer['nonzero_tiles']}/{layer['tiles']} "
                                                 f"tiles kept")
        path = out_dir / f"{layer['name']}.png"
        path.write_bytes(png(fig))
        paths.append(path)
    return paths


def plot_history(history: list, path, dense_cycles: int | None = None) -> list:
    """Test accuracy and tile density per epoch beside the speedup over dense in cycles (and the
    cycles per inference, given ``dense_cycles``); phases are marked. Returns the curves' labels."""
    if not history:
        return []
    fig, labels = history_figure(history, dense_cycles)
    pathlib.Path(path).write_bytes(png(fig))
    return labels
