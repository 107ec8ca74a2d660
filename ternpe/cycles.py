"""The accelerator's cycle model, in plain Python: one function for both sides.

The hardware generator (``hw/``) imports its pipeline depths from here and reports
:func:`cycle_model` for the accelerator it builds; the tests check that figure against the
simulated ``cycles`` counter with exact equality, for many networks and geometries. Training
(``model/``) uses the same function for ``metrics.json`` (``cycles``, ``dense_cycles``,
``speedup``) and :func:`tile_cycles` to weight each group's penalty by what it costs the array
(``ternpe train --cost cycles``).

What a layer costs: the controller walks output pixel (after pooling) -> tile row (``P``
output channels) -> pool position -> the row's non-zero tiles -> the tile's words, one op per
cycle. A pruned tile costs nothing; a group of rows sharing an activation word with no tile at
all costs one op (its constant outputs must still be written). After the op loop the pipeline
drains (:func:`drain_cycles`). A first layer with fewer input channels than lanes runs in
window mode: its patch is gathered while the previous pixel computes, so each pixel costs at
least :func:`gather_cycles`. Neither torch nor Amaranth is imported here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .contract import ArrayGeometry, LayerSpec, TileLayout

__all__ = ["REQUANT_LATENCY", "tree_levels", "pe_latency", "broadcast_register", "drain_cycles",
           "argmax_cycles", "patch_rows", "gather_setup", "gather_cycles", "window_mode", "rows_per_group",
           "ops_per_position", "tile_cycles", "cycle_model", "dense_row_tiles"]

#: Pipeline stages of the requantizer (partial products, their sum, bias, shift, clamp, out).
REQUANT_LATENCY = 6


def tree_levels(lanes: int) -> int:
    """Levels of a PE's adder tree over ``lanes`` terms."""
    return max(0, math.ceil(math.log2(lanes)))


def pe_latency(lanes: int) -> int:
    """Pipeline depth of a ``lanes``-lane PE: the term register, one register per tree level,
    the accumulator."""
    return 2 + tree_levels(lanes)


def broadcast_register(geometry: ArrayGeometry) -> bool:
    """Arrays of 4 PEs or more get one more register stage on the operands they all share: the
    activation word fans out to every PE, and on a wide array those PEs sit far apart."""
    return geometry.P >= 4


def drain_cycles(geometry: ArrayGeometry) -> int:
    """Cycles between a layer's last op and the next layer's first: the op and memory-data
    registers (and the broadcast register of a wide array), the PE pipeline, the requantizer,
    the tag/pool/write-back registers."""
    return 2 + broadcast_register(geometry) + pe_latency(geometry.G) + REQUANT_LATENCY + 3


def argmax_cycles(classes: int) -> int:
    """The argmax compares in two steps (high half, then low half and update): two cycles per class."""
    return 2 * classes + 1


def patch_rows(spec: LayerSpec) -> int:
    """Rows (= columns = banks) of the patch of one output pixel of a window-mode layer."""
    return spec.k + 1 if spec.pool else spec.k


def gather_setup(spec: LayerSpec) -> int:
    """Cycles from a window-mode layer's start to its first patch being ready."""
    return patch_rows(spec) + 4


def gather_cycles(spec: LayerSpec) -> int:
    """Fewest cycles between two patch hand-overs: the advance is registered, ``R`` column
    reads, the bank outputs are registered, the last column lands."""
    return patch_rows(spec) + 4


def window_mode(spec: LayerSpec, geometry: ArrayGeometry) -> bool:
    """A layer with fewer input channels than lanes reads its lanes from the input patch
    (the hardware allows it on the first layer only)."""
    return spec.cin < geometry.G


def rows_per_group(geometry: ArrayGeometry, spec: LayerSpec, last: bool) -> int:
    """Tile rows written together. The last layer (logits, kept in registers) is one group. In a
    hidden layer whose channels fill whole activation words (``cout % G == 0``), the ``G/P``
    rows of a word are a group; otherwise every row is its own group. A residual layer's rows are
    each their own group: a row without tiles still goes through the requantizer (its output
    depends on the shortcut, not only on the bias), so it costs one op."""
    if last:
        return TileLayout(spec, geometry).rows
    if spec.residual is not None:
        return 1
    return geometry.G // geometry.P if spec.cout % geometry.G == 0 else 1


def ops_per_position(row_tiles: Sequence[int], words_per_tile: int, group: int) -> int:
    """Ops of one output position: every word of every non-zero tile, plus one op for each
    group of ``group`` rows that has no tile at all."""
    rt = [int(v) for v in row_tiles]
    ops = 0
    for g0 in range(0, len(rt), group):
        n = sum(rt[g0:g0 + group])
        ops += n * words_per_tile if n else 1
    return ops


def tile_cycles(spec: LayerSpec, geometry: ArrayGeometry) -> int:
    """Cycles one non-zero tile of ``spec`` costs per inference: output pixels x pool positions
    x words per tile. This is what pruning the tile saves (outside a window-mode layer)."""
    return spec.out_h * spec.out_w * spec.pool_positions * TileLayout(spec, geometry).words_per_tile


def dense_row_tiles(spec: LayerSpec, geometry: ArrayGeometry) -> list:
    """Per tile row, the tile count of the unpruned layer."""
    lay = TileLayout(spec, geometry)
    return [lay.cols] * lay.rows


def cycle_model(specs: Sequence[LayerSpec], geometry: ArrayGeometry, row_tiles: Sequence[Sequence[int]] | None = None,
                *, drain: int | None = None, images: int = 1) -> dict:
    """Cycles per inference of a network on a ``geometry`` array.

    ``images``: image lanes, engines in lockstep that share the controller and the weights, each
    computing its own image. The layers cost what one image costs; the argmax then runs once per
    image, one after the other. ``total``, ``latency`` and ``throughput`` are then those of a
    batch of ``images`` images, and ``per_image`` is ``throughput / images``.

    ``row_tiles[i][r]`` is the number of non-zero tiles in tile row ``r`` of layer ``i``
    (``None``: every layer dense). Returns ``total`` (the accelerator's ``cycles`` counter: from
    the start of compute to the class), ``latency`` (from the first pixel accepted to the class
    leaving; one pixel per cycle in, the output always ready), ``throughput`` (cycles between
    classes of back-to-back images: the next image loads while this one computes; a lower bound
    where ``load_bound``, the input stream slower than the compute), ``load``,
    ``drain``, ``argmax`` and per layer ``name``, ``ops`` (op-loop cycles), ``cycles`` (with
    setup and drain), ``busy_ops`` (ops that carry tile words) and ``lane_use``.
    """
    specs = list(specs)
    if row_tiles is None:
        row_tiles = [dense_row_tiles(s, geometry) for s in specs]
    row_tiles = [np.asarray(r, np.int64).reshape(-1) for r in row_tiles]
    if len(row_tiles) != len(specs):
        raise ValueError(f"{len(row_tiles)} tile-row lists for {len(specs)} layers")
    drain = drain_cycles(geometry) if drain is None else drain
    layers = []
    n = len(specs)
    for i, (s, rt) in enumerate(zip(specs, row_tiles)):
        lay = TileLayout(s, geometry)
        if len(rt) != lay.rows:
            raise ValueError(f"layer {s.name}: {len(rt)} tile rows given, the layout has {lay.rows}")
        nq = s.pool_positions
        pixels = s.out_h * s.out_w
        ops_pp = nq * ops_per_position(rt, lay.words_per_tile, rows_per_group(geometry, s, i == n - 1))
        ops = pixels * ops_pp
        if i == 0 and window_mode(s, geometry):
            cycles = gather_setup(s) + (pixels - 1) * max(ops_pp, gather_cycles(s)) + ops_pp + drain
        else:
            cycles = 1 + ops + drain
        layers.append({"name": s.name, "ops": ops, "cycles": cycles,
                       "busy_ops": pixels * nq * int(rt.sum()) * lay.words_per_tile,
                       "lane_use": lay.lane_utilisation})
    if images < 1:
        raise ValueError(f"images must be at least 1, not {images}")
    classes = specs[-1].cout
    argmax = argmax_cycles(classes)
    total = sum(x["cycles"] for x in layers) + images * argmax
    s0 = specs[0]
    n_in = images * s0.in_h * s0.in_w * s0.cin
    # +2: the input FIFO, and the start cycle once the images (or the previous outputs) are
    # complete; +classes: the logits leave before the class, +2 between two images' argmaxes
    # (the class taken, the next start); with lanes +1 as the first lane's logits are registered,
    # +1 to start the lanes from a register, +1 to release them from one
    lanes = images > 1
    out = (images - 1) * (classes + 2) + classes + lanes
    # the input stream takes a byte a cycle; a window-mode input buffer stops taking while its
    # patch is gathered, so where loading is the bound (load_bound) the figure is a lower bound
    load_bound = n_in + 1 > total + out + 2 + 2 * lanes
    throughput = max(total + out + 2 + 2 * lanes, n_in + 1)
    return {"layers": layers, "argmax": argmax, "total": total, "drain": drain, "load": n_in, "images": images,
            "latency": n_in + 2 + total + out + lanes, "throughput": throughput, "per_image": throughput / images,
            "load_bound": load_bound}
