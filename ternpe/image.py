"""The export format: what ``ternpe export`` writes and what the hardware generator reads.

An export directory holds

* ``manifest.json``: format version, array geometry, number formats, input shape, the layers
  (a :class:`~ternpe.contract.LayerSpec` each, with its tiling, accumulator width,
  requantization shift and file names), the golden file, and a SHA-256 of every file;
* per layer, ``$readmemh`` text files (one hex word per line, no ``@`` addresses):

  - ``<layer>.weights.hex``: the non-zero tiles only, tile after tile in row-major
    (row, column) order, ``words_per_tile`` words each, ``2*P*G`` bits a word
    (:func:`~ternpe.contract.pack_tile_words`);
  - ``<layer>.rowptr.hex``: CSR row pointers, ``rows + 1`` entries: the non-zero tiles of row
    ``r`` are entries ``rowptr[r] .. rowptr[r+1]-1`` of the column list;
  - ``<layer>.cols.hex``: the tile column of each non-zero tile;
  - ``<layer>.mult.hex`` / ``<layer>.bias.hex`` / ``<layer>.shift.hex``: per output channel
    (``rows*P`` entries, padded channels zero), two's complement in ``MULT_BITS`` /
    ``bias_bits``, unsigned ``SHIFT_BITS``;

* ``golden.npz``: ``inputs`` (uint8 ``[N,H,W,C]``), ``labels``, ``layer<i>`` (every layer's
  integer output, channels last), ``logits`` and ``classes``.

:func:`load_export` checks all of it and refuses an export that is corrupt or inconsistent.
Only numpy is used: the hardware side imports this module, never torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import zipfile
import zlib

import numpy as np

from .cycles import cycle_model, rows_per_group
from .contract import (ArrayGeometry, ContractError, LayerSpec, has_residual, MAX_SHIFT, MULT_BITS, SHIFT_BITS, RequantParams, TileLayout,
                       accumulator_bits, pack_tile_words, run_integer_network,
                       unpack_tile_words, unsigned_bits)

__all__ = ["FORMAT_VERSION", "manifest_digest", "write_manifest", "ExportError", "ExportedLayer", "Export", "write_export", "golden_vectors", "rewrite_export",
           "with_tile_density", "load_export", "widen", "densified", "group_channels", "channel_orders",
           "reorder_golden",
           "read_hex", "write_hex"]

FORMAT_VERSION = 2


class ExportError(ContractError):
    """An export directory that cannot be used, and why."""


def write_hex(path: pathlib.Path, values, bits: int) -> None:
    digits = max(1, -(-bits // 4))
    mask = (1 << bits) - 1
    path.write_text("".join(f"{int(v) & mask:0{digits}x}\n" for v in values))


def read_hex(path: pathlib.Path, bits: int, *, signed: bool = False) -> list:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("//")[0].strip()
        if not line:
            continue
        try:
            v = int(line, 16)
        except ValueError:
            raise ExportError(f"{path.name} line {n}: {line!r} is not a hex word") from None
        if v >> bits:
            raise ExportError(f"{path.name} line {n}: {line} is wider than {bits} bits")
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


@dataclasses.dataclass
class ExportedLayer:
    spec: LayerSpec
    layout: TileLayout
    tiles: np.ndarray        # [nnz, P, words, G] of {-1,0,1}
    rowptr: np.ndarray       # [rows + 1]
    cols: np.ndarray         # [nnz]
    requant: RequantParams   # per padded channel (rows * P)
    acc_bits: int
    bias_bits: int

    @property
    def nonzero_tiles(self) -> int:
        return len(self.cols)

    def dense_weights(self) -> np.ndarray:
        """The layer's integer weights in torch layout, rebuilt from the sparse image."""
        lay = self.layout
        full = np.zeros((lay.rows, lay.cols, lay.geometry.P, lay.words_per_tile, lay.geometry.G), np.int64)
        rows = np.repeat(np.arange(lay.rows), np.diff(self.rowptr))
        full[rows, self.cols] = self.tiles
        return lay.weights_from_tiles(full)

    def channel_requant(self) -> RequantParams:
        c, rq = self.spec.cout, self.requant
        return RequantParams(rq.mult[:c], rq.bias[:c], rq.shift[:c], None if rq.res_mult is None else rq.res_mult[:c])


@dataclasses.dataclass
class Export:
    path: pathlib.Path
    manifest: dict
    geometry: ArrayGeometry
    act_bits: int
    layers: list
    golden: dict

    @property
    def input_shape(self) -> tuple:
        return tuple(self.manifest["input"]["shape"])

    @property
    def has_residual(self) -> bool:
        return has_residual(l.spec for l in self.layers)

    def run(self, x: np.ndarray) -> list:
        """The integer model rebuilt from the image (what the hardware must reproduce)."""
        return run_integer_network(x, [l.spec for l in self.layers], [l.dense_weights() for l in self.layers],
                                   [l.channel_requant() for l in self.layers], act_bits=self.act_bits)


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csr(tiles: np.ndarray) -> tuple:
    """``[rows, cols, P, words, G]`` tiles -> (the non-zero tiles in row-major order, CSR row
    pointers, their columns): the layout of the tile index."""
    nz = (tiles != 0).any(axis=(2, 3, 4))
    rows, cols = np.nonzero(nz)
    return tiles[rows, cols], np.concatenate([[0], np.cumsum(nz.sum(axis=1))]), cols


def _refilled(layout: TileLayout, w: np.ndarray) -> np.ndarray:
    """The tiles of weights ``w`` with every all-zero (pruned) tile refilled with +1 codes."""
    tiles = layout.tile_array(w)
    dead = ~(tiles != 0).any(axis=(2, 3, 4))
    tiles[dead] = layout.tile_array(np.ones_like(w))[dead]
    return tiles


def write_export(out, *, geometry: ArrayGeometry, act_bits: int, specs, weights, requants,
                 golden: dict, logit_scale: float, meta: dict | None = None) -> pathlib.Path:
    """Write an export directory from integer weights (torch layout) and requantizers."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, layers_json = {}, []
    for spec, w, rq in zip(specs, weights, requants, strict=True):
        if not spec.ternary:
            raise ExportError(f"layer {spec.name} has {spec.weight_bits}-bit weights: the hardware runs "
                              f"ternary layers only; train with --first-last ternary")
        lay = TileLayout(spec, geometry)
        kept, rowptr, cols = _csr(lay.tile_array(np.asarray(w, np.int64)))
        n_ch = lay.rows * geometry.P
        mult = np.zeros(n_ch, np.int64)
        bias = np.zeros(n_ch, np.int64)
        shift = np.zeros(n_ch, np.int64)
        mult[:spec.cout], bias[:spec.cout], shift[:spec.cout] = rq.mult, rq.bias, rq.shift
        acc_bits = accumulator_bits(spec, act_bits)
        bias_bits = RequantParams(mult, bias, shift).bias_bits()
        names = {k: f"{spec.name}.{k}.hex" for k in ("weights", "rowptr", "cols", "mult", "bias", "shift")}
        if spec.residual is not None:
            if rq.res_mult is None:
                raise ExportError(f"layer {spec.name}: a residual layer needs the shortcut's multiplier (res_mult)")
            res = np.zeros(n_ch, np.int64)
            res[:spec.cout] = rq.res_mult
            names["res_mult"] = f"{spec.name}.res_mult.hex"
            write_hex(out / names["res_mult"], res, MULT_BITS)
        write_hex(out / names["weights"], pack_tile_words(kept, geometry), geometry.word_bits)
        write_hex(out / names["rowptr"], rowptr, unsigned_bits(lay.count))
        write_hex(out / names["cols"], cols, unsigned_bits(lay.cols - 1))
        write_hex(out / names["mult"], mult, MULT_BITS)
        write_hex(out / names["bias"], bias, bias_bits)
        write_hex(out / names["shift"], shift, SHIFT_BITS)
        for n in names.values():
            files[n] = _sha256(out / n)
        layers_json.append({
            **spec.to_dict(), "out_h": spec.out_h, "out_w": spec.out_w,
            "tiles": {"rows": lay.rows, "cols": lay.cols, "count": lay.count, "nonzero": len(cols),
                      "words_per_tile": lay.words_per_tile, "channels_per_tile": lay.gw},
            "acc_bits": acc_bits, "mult_bits": MULT_BITS, "bias_bits": bias_bits, "shift_bits": SHIFT_BITS,
            "files": names,
        })
    g = {k: np.asarray(v) for k, v in golden.items()}
    np.savez_compressed(out / "golden.npz", **g)
    files["golden.npz"] = _sha256(out / "golden.npz")
    manifest = {
        "format": "ternpe-export", "version": FORMAT_VERSION,
        "geometry": {"P": geometry.P, "G": geometry.G, "word_bits": geometry.word_bits},
        "formats": {"act_bits": act_bits, "weight_code": {"0": "00", "+1": "01", "-1": "11"},
                    "mult_bits": MULT_BITS,
                    "requant": "y = clamp((acc * mult + bias [+ shortcut * res_mult]) >>> shift, 0, 2**act_bits - 1); "
                               "last layer unclamped",
                    "logit_scale": logit_scale},
        "input": {"shape": list(g["inputs"].shape[1:]), "dtype": "uint8", "layout": "HWC"},
        "layers": layers_json,
        "golden": {"file": "golden.npz", "samples": int(len(g["inputs"]))},
        "files": files,
        "meta": meta or {},
    }
    write_manifest(out, manifest)
    return out


def write_manifest(out, manifest: dict) -> None:
    """Write ``manifest.json`` sealed with its own digest (what a tool that edits an export on
    purpose, such as a test making a corrupt image, must call)."""
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (pathlib.Path(out) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest body (every field but this digest, keys sorted): the manifest's
    own integrity, as the per-file digests are the files'."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def golden_vectors(inputs, labels, outs: list) -> dict:
    """The golden arrays of an export: the inputs, their labels, every layer's integer output
    (``outs``, as :func:`run_integer_network` gives them), the logits and the classes."""
    return {"inputs": inputs, "labels": labels, "logits": outs[-1], "classes": np.argmax(outs[-1], axis=1),
            **{f"layer{k}": o for k, o in enumerate(outs)}}


def rewrite_export(src, dst, weights) -> "Export":
    """A copy of export ``src`` at ``dst`` with other integer weights (torch layout, one array
    per layer; the requantizers are kept) and golden outputs recomputed by the integer model.
    Used to make denser or sparser variants of one network (benchmarks, tests)."""
    ex = load_export(src)
    specs = [l.spec for l in ex.layers]
    requants = [l.channel_requant() for l in ex.layers]
    outs = run_integer_network(ex.golden["inputs"], specs, weights, requants, act_bits=ex.act_bits)
    golden = golden_vectors(ex.golden["inputs"], ex.golden["labels"], outs)
    write_export(dst, geometry=ex.geometry, act_bits=ex.act_bits, specs=specs, weights=weights, requants=requants,
                 golden=golden, logit_scale=ex.manifest["formats"]["logit_scale"],
                 meta={**ex.manifest.get("meta", {}), "rewritten_from": str(src)})
    return load_export(dst)


def with_tile_density(src, dst, density: float) -> "Export":
    """A copy of export ``src`` at ``dst`` with ``density`` of every layer's tiles non-zero: pruned tiles are
    refilled (+1 codes) or the smallest-L1 tiles are zeroed until the count is reached."""
    ex = load_export(src)
    weights = []
    for l in ex.layers:
        tiles = _refilled(l.layout, l.dense_weights())
        norms = np.abs(tiles).sum(axis=(2, 3, 4)).reshape(-1)
        keep = max(1, round(density * norms.size))
        order = np.argsort(norms, kind="stable")      # smallest first
        flat = tiles.reshape(-1, *tiles.shape[2:])
        flat[order[:norms.size - keep]] = 0
        weights.append(l.layout.weights_from_tiles(flat.reshape(tiles.shape)))
    return rewrite_export(src, dst, weights)


def _channel_masks(spec: LayerSpec, w: np.ndarray, G: int) -> np.ndarray:
    """``[cout, cols]``: which columns (activation words) each output channel has weights in."""
    tiles = TileLayout(spec, ArrayGeometry(1, G)).tile_array(w)      # [cout, cols, 1, words, G]
    return (tiles != 0).any(axis=(2, 3, 4))[:spec.cout]


def _cycles(ex: Export, geometry: ArrayGeometry, ws: list) -> int:
    """Cycles of the network with weights ``ws`` on ``geometry`` (the cycle model's total)."""
    specs = [l.spec for l in ex.layers]
    rows = [(TileLayout(sp, geometry).tile_array(w) != 0).any(axis=(2, 3, 4)).sum(axis=1) for sp, w in zip(specs, ws)]
    return cycle_model(specs, geometry, rows)["total"]


def group_channels(masks: np.ndarray, P: int, per_word: int = 1) -> np.ndarray:
    """An order of the output channels that puts channels with the same live columns in one
    ``P``-row tile: greedy, each tile started from the channel with the most live columns left and
    filled with those that add the fewest columns to its union (ties: the fuller channel, then the
    lower index); channels with no weights come last.

    ``per_word``: tile rows that share an activation word (``G / P`` in a layer whose channels
    fill whole words). A word whose rows have no tile at all still costs an op per output position
    (its constant outputs are written), so the live tiles are then dealt to the words in turn:
    every word gets one while there are enough."""
    left = list(range(len(masks)))
    weight = masks.sum(axis=1)
    tiles = []
    while left:
        first = max(left, key=lambda c: (weight[c], -c))
        left.remove(first)
        group, union = [first], masks[first].copy()
        while len(group) < P and left:
            cand = np.asarray(left)
            grow = (masks[cand] | union).sum(axis=1)
            best = int(cand[np.lexsort((cand, -weight[cand], grow))[0]])
            left.remove(best)
            group.append(best)
            union |= masks[best]
        tiles.append(group)
    if per_word > 1 and len(masks) % (P * per_word) == 0:
        words = [[] for _ in range(len(tiles) // per_word)]
        live = [t for t in tiles if masks[t].any()]
        for k, t in enumerate(live):
            words[k % len(words)].append(t)
        dead = iter(t for t in tiles if not masks[t].any())
        for w in words:
            w += [next(dead) for _ in range(per_word - len(w))]
        tiles = [t for w in words for t in w]
    return np.asarray([c for t in tiles for c in t], np.int64)


def _order_classes(ex: Export) -> tuple:
    """The activation maps that must share one channel order, and how they are linked.

    Map ``t`` is layer ``t``'s output. A residual layer adds the input of layer ``r`` (map
    ``r - 1``) to its output channel by channel, so with an identity shortcut both maps are one
    class; a pad shortcut (ResNet option A) puts the source's channel ``c`` on the layer's
    channel ``c + off``, so the layer's class (the child) holds its parent's order shifted by
    ``off`` there and orders only its zero-padded channels freely. Returns ``(classes, parent,
    fixed)``: the classes (sorted lists of maps, by first map), per class ``(parent class, off)``
    or None, and the classes that keep the trained order (the logits; a shortcut from the
    network's input; more than one parent)."""
    L = len(ex.layers)
    root = list(range(L))

    def find(t):
        while root[t] != t:
            root[t] = root[root[t]]
            t = root[t]
        return t
    pads, fixed_maps = [], {L - 1}
    for j, l in enumerate(ex.layers):
        r = l.spec.residual
        if r is None:
            continue
        if r == 0:
            fixed_maps.add(j)
        elif l.spec.shortcut == "pad":
            pads.append((r - 1, j, l.spec.shortcut_offset(ex.layers[r - 1].spec.cout)))
        else:
            root[find(j)] = find(r - 1)
    groups = {}
    for t in range(L):
        groups.setdefault(find(t), []).append(t)
    classes = sorted(groups.values())
    of = {t: k for k, c in enumerate(classes) for t in c}
    parent, fixed = [None] * len(classes), {of[t] for t in fixed_maps}
    for src, dst, off in pads:
        k = of[dst]
        if parent[k] is not None and parent[k] != (of[src], off):
            fixed.add(k)
        parent[k] = (of[src], off)
    changed = True
    while changed:                  # a parent and its child move together: one fixed fixes both
        changed = False
        for k, pk in enumerate(parent):
            if pk is not None and (pk[0] in fixed) != (k in fixed):
                fixed |= {k, pk[0]}
                changed = True
    return classes, parent, fixed


def _class_masks(ex: Export, ws: list, classes: list, parent: list, children: dict, k: int, G: int) -> np.ndarray:
    """``[C, cols]``: per channel of class ``k``, its live columns in every layer of the class
    and, through pad links, in every descendant class (where the channel lands shifted)."""
    parts = [_channel_masks(ex.layers[t].spec, ws[t], G) for t in classes[k]]
    for d in children[k]:
        off = parent[d][1]
        parts.append(_class_masks(ex, ws, classes, parent, children, d, G)[off:off + len(parts[0])])
    return np.concatenate(parts, axis=1)


def _class_order(ex: Export, ws: list, classes, parent, children, orders: list, k: int, geometry) -> np.ndarray:
    """Class ``k``'s order: grouped (:func:`group_channels`) where it is free; a child class
    holds its parent's (current) order shifted by the pad offset, and groups its zero-padded
    channels among themselves into the slots before and after."""
    t0 = classes[k][0]
    spec = ex.layers[t0].spec
    masks = _class_masks(ex, ws, classes, parent, children, k, geometry.G)
    if parent[k] is None:
        per_word = min(rows_per_group(geometry, ex.layers[t].spec, last=False) for t in classes[k])
        return group_channels(masks, geometry.P, per_word)
    pk, off = parent[k]
    src = ex.layers[classes[pk][0]].spec.cout
    mid = (np.arange(src) if orders[classes[pk][0]] is None else np.asarray(orders[classes[pk][0]])) + off
    free = np.asarray([c for c in range(spec.cout) if not off <= c < off + src], np.int64)
    grouped = free[group_channels(masks[free], geometry.P)] if len(free) else free
    return np.concatenate([grouped[:off], mid, grouped[off:]]).astype(np.int64)


def channel_orders(ex: Export, geometry: ArrayGeometry) -> list:
    """Per layer, the order of its output channels on the ``P' x G`` array ``geometry`` (None: as
    trained). A wide tile is skipped only when all its ``P'`` channels are pruned in its column, so
    channels pruned alike are placed side by side (:func:`group_channels`). The next layer reads
    its input in that order, which moves its weights between its own columns when the map has more
    than ``G`` channels; so an order is kept only where the cycle model's total (all layers
    counted) falls. Maps joined by a shortcut share one order (:func:`_order_classes`): a
    residual block's input and output, a stage of ResNet; a pad shortcut carries the order into
    the next stage's middle channels. As trained: the logits (their order is the classes'), and
    a map joined to the network's input."""
    L = len(ex.layers)
    orders = [None] * L
    if geometry.P == ex.geometry.P:
        return orders
    classes, parent, fixed = _order_classes(ex)
    children = {k: [d for d, pd in enumerate(parent) if pd is not None and pd[0] == k] for k in range(len(classes))}

    def with_class(base: list, k: int, ws: list) -> list:
        """``base`` with class ``k`` (and its descendants, which follow it) ordered afresh."""
        out = list(base)
        order = _class_order(ex, ws, classes, parent, children, out, k, geometry)
        for t in classes[k]:
            out[t] = order
        for d in children[k]:
            out = with_class(out, d, ws)
        return out
    ws = _reordered_weights(ex, orders)
    best = _cycles(ex, geometry, ws)
    for k in range(len(classes)):
        if k in fixed:
            continue
        trial = with_class(orders, k, ws)
        trial_ws = _reordered_weights(ex, trial)
        cycles = _cycles(ex, geometry, trial_ws)
        if cycles < best:
            orders, ws, best = trial, trial_ws, cycles
    return orders


def reorder_golden(golden: dict, orders: list) -> dict:
    """``golden`` with each layer's outputs in the channel order ``orders`` gives (the logits and
    classes are unchanged)."""
    out = dict(golden)
    for i, order in enumerate(orders):
        if order is not None:
            out[f"layer{i}"] = np.asarray(golden[f"layer{i}"])[..., order]
    return out


def _reordered_weights(ex: Export, orders: list) -> list:
    """Every layer's weights with its output channels, and the next layer's input, in ``orders``."""
    ws = [l.dense_weights() for l in ex.layers]
    for i, order in enumerate(orders):
        if order is None:
            continue
        ws[i] = ws[i][order]
        nxt = ws[i + 1]
        if nxt.ndim == 4:                                   # a conv reads channels on its axis 1
            ws[i + 1] = nxt[:, order]
        else:                                               # an fc reads the map flattened (h, w, c)
            c = len(order)
            ws[i + 1] = nxt.reshape(nxt.shape[0], -1, c)[:, :, order].reshape(nxt.shape)
    return ws


def widen(ex: Export, geometry: ArrayGeometry) -> Export:
    """The export ``ex`` on a wider array ``P' x G`` (``P'`` a multiple of the trained ``P``).

    A wider tile is the union of ``P'`` trained rows: it is non-zero (and costs cycles) when any of
    its parts is. The output channels are first grouped so that rows pruned alike share a wide
    tile (:func:`channel_orders`; the next layer's input follows, and the golden outputs of the
    hidden layers are reordered with them). The network computes the same logits, so the export
    id stays valid; only the tiling (and so the cycle count) changes. ``manifest["channel_orders"]``
    records the orders.
    """
    g0 = ex.geometry
    if geometry == g0:
        return ex
    if geometry.G != g0.G:
        raise ExportError(f"--pe {geometry}: G is fixed by training (the tile's {g0.G} input channels); "
                          f"use --pe {geometry.P}x{g0.G}, or retrain with --pe {geometry}")
    if geometry.P % g0.P:
        raise ExportError(f"--pe {geometry}: P'={geometry.P} must be a multiple of the trained P={g0.P} "
                          f"(a wider tile is a union of trained tiles), e.g. --pe {2 * g0.P}x{g0.G}")
    orders = channel_orders(ex, geometry)
    layers = []
    for l, w, order in zip(ex.layers, _reordered_weights(ex, orders), orders):
        lay = TileLayout(l.spec, geometry)
        kept, rowptr, cols = _csr(lay.tile_array(w))
        n_ch = lay.rows * geometry.P
        rq = l.channel_requant()
        idx = np.arange(l.spec.cout) if order is None else order
        pad = [None if v is None else np.concatenate([v[idx], np.zeros(n_ch - len(v), np.int64)])
               for v in (rq.mult, rq.bias, rq.shift, rq.res_mult)]
        layers.append(ExportedLayer(l.spec, lay, kept, rowptr, cols, RequantParams(*pad), l.acc_bits, l.bias_bits))
    manifest = {**ex.manifest, "geometry": {"P": geometry.P, "G": geometry.G, "word_bits": geometry.word_bits},
                "trained_geometry": {"P": g0.P, "G": g0.G},
                "channel_orders": [None if o is None else [int(v) for v in o] for o in orders]}
    return Export(ex.path, manifest, geometry, ex.act_bits, layers, reorder_golden(ex.golden, orders))


def densified(ex: Export) -> Export:
    """``ex`` with every tile non-zero (+1 codes where it was pruned): the dense network of the
    same shape, whose cycles are the baseline of the speedup that pruning buys."""
    layers = []
    for l in ex.layers:
        kept, rowptr, cols = _csr(_refilled(l.layout, l.dense_weights()))
        layers.append(dataclasses.replace(l, tiles=kept, rowptr=rowptr, cols=cols))
    return dataclasses.replace(ex, layers=layers)


def load_export(path, *, check_golden: bool = True) -> Export:
    """Load and validate an export. Raises :class:`ExportError` saying what is wrong."""
    path = pathlib.Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise ExportError(f"{path} is not an export: {mpath.name} is missing (make one with `ternpe export RUN --out {path}`)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{mpath} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "ternpe-export":
        raise ExportError(f"{mpath} is not a ternpe export manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ExportError(f"{mpath}: format version {manifest.get('version')}, this ternpe reads {FORMAT_VERSION} "
                          f"(export the run again with `ternpe export`)")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise ExportError(f"{mpath} does not match its own checksum (manifest_sha256): it was edited or is "
                          f"corrupt; export the run again with `ternpe export`")
    try:
        return _load_checked(path, manifest, check_golden)
    except (KeyError, TypeError, IndexError) as e:
        raise ExportError(f"{mpath}: a field is missing or malformed ({type(e).__name__}: {e}); export the run "
                          f"again with `ternpe export`") from None


def _derived(name: str, field: str, stored, computed) -> None:
    if stored != computed:
        raise ExportError(f"layer {name}: {field} is {stored} in the manifest, the contract gives {computed} "
                          f"(an edited manifest, or one written by another version)")


def _check_files(path: pathlib.Path, manifest: dict) -> None:
    """Every file the manifest lists lies inside the export and matches its checksum; every file a
    layer or the golden vectors name is one of them (nothing else is read)."""
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ExportError(f"{path / 'manifest.json'}: 'files' is not a table of file names and checksums; export "
                          f"the run again with `ternpe export`")
    named = [manifest["golden"]["file"]] + [n for lj in manifest["layers"] for n in lj["files"].values()]
    for name in named:
        if not isinstance(name, str) or name not in files:
            raise ExportError(f"{path}: the manifest names {name!r}, which its checksum list (files) does not cover; "
                              f"export the run again with `ternpe export`")
    root = path.resolve()
    for name, digest in files.items():
        f = path / name
        rel = pathlib.PurePath(name)
        if rel.is_absolute() or ".." in rel.parts or not f.resolve().is_relative_to(root):
            raise ExportError(f"{path}: the manifest names {name!r}, outside the export; an export reads only its "
                              f"own files (export the run again with `ternpe export`)")
        if not f.is_file():
            raise ExportError(f"{path}: file {name} named in the manifest is missing")
        if _sha256(f) != digest:
            raise ExportError(f"{path}: {name} does not match its checksum in the manifest (corrupt or edited)")


def _layer_spec(lj: dict, n_before: int, prev_shape: tuple, geo: ArrayGeometry, act_bits: int) -> tuple:
    """A manifest layer's spec and tile layout, every derived field checked against the contract."""
    fields = {k: lj[k] for k in ("name", "kind", "cin", "cout", "in_h", "in_w", "k", "stride", "pad",
                                 "pool", "relu", "weight_bits")}
    fields.update({k: lj[k] for k in ("residual", "shortcut") if k in lj})
    spec = LayerSpec(**fields)
    if spec.residual is not None and not spec.residual < n_before:
        raise ExportError(f"layer {spec.name}: residual {spec.residual} is not an earlier layer")
    lay = TileLayout(spec, geo)
    expect_in = (spec.in_h, spec.in_w, spec.cin) if spec.kind == "conv" else (spec.cin,)
    got_in = prev_shape if spec.kind == "conv" else (int(np.prod(prev_shape)),)
    if tuple(got_in) != expect_in:
        raise ExportError(f"layer {spec.name}: expects input {expect_in}, the previous layer gives {tuple(got_in)}")
    t = lj["tiles"]
    if (t["rows"], t["cols"], t["words_per_tile"]) != (lay.rows, lay.cols, lay.words_per_tile):
        raise ExportError(f"layer {spec.name}: manifest tiling {t['rows']}x{t['cols']}x{t['words_per_tile']} "
                          f"does not match the contract's {lay.rows}x{lay.cols}x{lay.words_per_tile} "
                          f"for PE {geo}")
    # every derived field is recomputed from the contract; a manifest that disagrees is refused
    _derived(spec.name, "tiles.count", t["count"], lay.count)
    _derived(spec.name, "tiles.channels_per_tile", t["channels_per_tile"], lay.gw)
    _derived(spec.name, "out_h x out_w", (lj["out_h"], lj["out_w"]), (spec.out_h, spec.out_w))
    _derived(spec.name, "acc_bits", lj["acc_bits"], accumulator_bits(spec, act_bits))
    _derived(spec.name, "mult_bits", lj["mult_bits"], MULT_BITS)
    _derived(spec.name, "shift_bits", lj["shift_bits"], SHIFT_BITS)
    return spec, lay


def _layer_tiles(path: pathlib.Path, lj: dict, spec: LayerSpec, lay: TileLayout, geo: ArrayGeometry) -> tuple:
    """A layer's tile index (CSR) and non-zero tiles, read from its files and checked."""
    f, t = lj["files"], lj["tiles"]
    rowptr = np.array(read_hex(path / f["rowptr"], unsigned_bits(lay.count)), np.int64)
    cols = np.array(read_hex(path / f["cols"], unsigned_bits(lay.cols - 1)), np.int64)
    words = read_hex(path / f["weights"], geo.word_bits)
    if len(rowptr) != lay.rows + 1 or rowptr[0] != 0 or (np.diff(rowptr) < 0).any() or rowptr[-1] != len(cols):
        raise ExportError(f"layer {spec.name}: tile index is inconsistent (rowptr {len(rowptr)} entries, "
                          f"ends at {rowptr[-1] if len(rowptr) else None}, {len(cols)} columns)")
    if len(cols) != t["nonzero"] or (cols >= lay.cols).any():
        raise ExportError(f"layer {spec.name}: {len(cols)} tile columns, manifest says {t['nonzero']} "
                          f"(or a column is out of range)")
    for r in range(lay.rows):
        if (np.diff(cols[rowptr[r]:rowptr[r + 1]]) <= 0).any():
            raise ExportError(f"layer {spec.name}: tile row {r} lists its columns out of order or twice")
    if len(words) != len(cols) * lay.words_per_tile:
        raise ExportError(f"layer {spec.name}: {len(words)} weight words for {len(cols)} non-zero tiles "
                          f"of {lay.words_per_tile} words")
    return unpack_tile_words(words, geo, lay.words_per_tile), rowptr, cols


def _layer_requant(path: pathlib.Path, lj: dict, spec: LayerSpec, channels: int) -> RequantParams:
    """A layer's requantizer constants (and shortcut multipliers), read from its files and checked."""
    f = lj["files"]
    mult = np.array(read_hex(path / f["mult"], MULT_BITS, signed=True), np.int64)
    bias = np.array(read_hex(path / f["bias"], lj["bias_bits"], signed=True), np.int64)
    shift = np.array(read_hex(path / f["shift"], SHIFT_BITS), np.int64)
    if not len(mult) == len(bias) == len(shift) == channels:
        raise ExportError(f"layer {spec.name}: {len(mult)} multipliers / {len(bias)} biases / {len(shift)} "
                          f"shifts for {channels} channels")
    res = None
    if spec.residual is not None:
        if "res_mult" not in f:
            raise ExportError(f"layer {spec.name}: a residual layer without its res_mult file")
        res = np.array(read_hex(path / f["res_mult"], MULT_BITS, signed=True), np.int64)
        if len(res) != len(mult):
            raise ExportError(f"layer {spec.name}: {len(res)} shortcut multipliers for {len(mult)} channels")
    rq = RequantParams(mult, bias, shift, res)
    _derived(spec.name, "bias_bits", lj["bias_bits"], rq.bias_bits())
    if (shift > MAX_SHIFT).any():
        raise ExportError(f"layer {spec.name}: a requantizer shift is over {MAX_SHIFT}")
    return rq


def _check_reproduces_golden(ex: "Export") -> None:
    golden = ex.golden
    outs = ex.run(golden["inputs"])
    for i, (o, l) in enumerate(zip(outs, ex.layers)):
        ref = golden[f"layer{i}"]
        if o.shape != ref.shape or not np.array_equal(o, ref):
            bad = np.argwhere(o != ref)[0] if o.shape == ref.shape else None
            raise ExportError(f"layer {l.spec.name}: the image does not reproduce the golden output "
                              f"(first difference at {None if bad is None else tuple(int(b) for b in bad)})")
    if not np.array_equal(np.argmax(outs[-1], axis=1), golden["classes"]):
        raise ExportError("golden classes do not match the argmax of the golden logits")


def _load_checked(path: pathlib.Path, manifest: dict, check_golden: bool) -> "Export":
    _check_files(path, manifest)
    geo = ArrayGeometry(manifest["geometry"]["P"], manifest["geometry"]["G"])
    if manifest["geometry"].get("word_bits") != geo.word_bits:
        raise ExportError(f"geometry: word_bits {manifest['geometry'].get('word_bits')}, the contract gives "
                          f"{geo.word_bits} for PE {geo}")
    act_bits = int(manifest["formats"]["act_bits"])
    if not 2 <= act_bits <= 16 or manifest["formats"].get("mult_bits") != MULT_BITS:
        raise ExportError(f"formats: act_bits {act_bits} / mult_bits {manifest['formats'].get('mult_bits')} "
                          f"are not what this ternpe computes with (2..16 / {MULT_BITS})")
    layers = []
    prev_shape = tuple(manifest["input"]["shape"])
    for lj in manifest["layers"]:
        spec, lay = _layer_spec(lj, len(layers), prev_shape, geo, act_bits)
        prev_shape = (spec.out_h, spec.out_w, spec.cout) if spec.kind == "conv" else (spec.cout,)
        tiles, rowptr, cols = _layer_tiles(path, lj, spec, lay, geo)
        rq = _layer_requant(path, lj, spec, lay.rows * geo.P)
        layers.append(ExportedLayer(spec, lay, tiles, rowptr, cols, rq, int(lj["acc_bits"]), int(lj["bias_bits"])))
    golden = _read_golden(path / manifest["golden"]["file"])
    _check_golden_shapes(golden, manifest, layers)
    ex = Export(path, manifest, geo, act_bits, layers, golden)
    if check_golden:
        _check_reproduces_golden(ex)
    return ex


def _read_golden(f: pathlib.Path) -> dict:
    """The golden arrays; a file that is no .npz of plain arrays is refused by name."""
    try:
        with open(f, "rb") as fh:            # closed here whatever np.load raises
            z = np.load(fh, allow_pickle=False)
            if not hasattr(z, "files"):
                raise ValueError("one array, not an .npz archive of them")
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ExportError(f"{f} is not a readable golden.npz ({type(e).__name__}: {e}); export the run again "
                          f"with `ternpe export`") from None


def _check_golden_shapes(golden: dict, manifest: dict, layers: list) -> None:
    """Every golden array has the shape and an integer dtype the manifest implies."""
    n = manifest["golden"]["samples"]
    shape_in = tuple(manifest["input"]["shape"])
    want = {"inputs": (n, *shape_in), "labels": (n,), "classes": (n,), "logits": (n, layers[-1].spec.cout)}
    for i, l in enumerate(layers):
        s = l.spec
        want[f"layer{i}"] = (n, s.out_h, s.out_w, s.cout) if s.kind == "conv" else (n, s.cout)
    for key, shape in want.items():
        if key not in golden:
            raise ExportError(f"golden.npz has no '{key}' array (expected shape {shape}); export the run again")
        a = golden[key]
        if a.shape != shape:
            raise ExportError(f"golden.npz: '{key}' has shape {a.shape}, the manifest implies {shape}")
        if a.dtype.kind not in "iu" or (key == "inputs" and a.dtype != np.uint8):
            raise ExportError(f"golden.npz: '{key}' has dtype {a.dtype}, expected "
                              f"{'uint8' if key == 'inputs' else 'an integer type'}")
