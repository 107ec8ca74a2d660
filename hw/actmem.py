"""Where activation maps live: the regions of the activation memory.

Layer ``i`` (not the last) writes its output into a region that holds no map still to be read:
the lowest free one. A sequential network alternates two regions (ping-pong); a residual
block's input stays for its shortcut, so a ResNet takes three. Both the generator and the
controller's tag layout (the width of a shortcut address) read this plan, which
:func:`plan_activations` computes once per accelerator (:mod:`ternpe.hw.plan`).

A sequential network may do better: a convolution reads its input map in raster order and
writes its output in raster order, so its output can start a few words *below* its input and
overlap it, each output pixel landing only on input words that no later output pixel reads
(:func:`overlap_limit`). The plan is then one base per map (:func:`chain_bases`), taken when it
needs fewer words than the two regions: MNIST's 14x14x16 and 7x7x32 maps take 199 words, not
294, and fit eight iCE40 block RAMs instead of sixteen.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

from ternpe.contract import LayerSpec, has_residual

__all__ = ["ActivationPlan", "plan_activations", "last_use", "slots", "overlap_limit", "chain_bases"]


def last_use(specs: Sequence[LayerSpec]) -> list:
    """Per layer ``k``: the last layer that reads ``k``'s output (the next layer, or a residual
    layer whose shortcut is that output: the input of the layer it names)."""
    n = len(specs)
    last = [k + 1 for k in range(n)]
    for i, s in enumerate(specs):
        if s.residual is not None:
            k = s.residual - 1
            if 0 <= k < n:
                last[k] = max(last[k], i)
    return last


def slots(specs: Sequence[LayerSpec]) -> list:
    """Per hidden layer, the region of the activation memory it writes: the lowest region not
    holding a map still to be read. A sequential network alternates two (ping-pong); a residual
    block keeps its input for the shortcut, so ResNet takes three."""
    last = last_use(specs)
    out = []
    for i in range(len(specs) - 1):
        busy = {out[k] for k in range(i) if last[k] >= i}
        out.append(min(set(range(i + 1)) - busy))
    return out


def _words(specs: Sequence[LayerSpec], G: int) -> list:
    return [-(-s.out_h * s.out_w * s.cout // G) for s in specs[:-1]]


def overlap_limit(specs: Sequence[LayerSpec], G: int, i: int) -> int | None:
    """The largest ``d`` such that hidden layer ``i`` (``i >= 1``) may write its output map from
    word ``d`` relative to its input map's first word: every word output pixel ``p`` writes lies
    below every input word that pixel ``p`` or any later pixel reads, so the write lands only on
    words no longer needed (a write of pixel ``p`` follows its reads, and every read of an earlier
    pixel). ``d`` is negative: the output starts below the input. ``None`` when the layer's reads
    are not a raster walk of whole words (a fully connected layer, a residual add, channels that
    are not whole activation words)."""
    s = specs[i]
    if (i == 0 or i >= len(specs) - 1 or s.kind != "conv" or s.residual is not None
            or s.cin % G or s.cout % G):
        return None
    cw, co = s.cin // G, s.cout // G
    step = (2 if s.pool else 1) * s.stride

    def first_read(py, px):                    # the lowest input word output pixel (py, px) reads
        return (max(0, py * step - s.pad) * s.in_w + max(0, px * step - s.pad)) * cw

    d = None
    for py in range(s.out_h):
        later_rows = first_read(py + 1, 0) if py + 1 < s.out_h else None
        for px in range(s.out_w):
            low = first_read(py, px) if later_rows is None else min(first_read(py, px), later_rows)
            top = (py * s.out_w + px + 1) * co - 1          # the highest word pixel p writes
            d = low - top - 1 if d is None else min(d, low - top - 1)
    return d


def chain_bases(specs: Sequence[LayerSpec], G: int, *, exhaustive_upto: int = 9) -> tuple | None:
    """``(bases, depth)`` of a network without residual blocks, every map placed relative to the
    one before it: just above it, just below it, or overlapping it from below as far as
    :func:`overlap_limit` allows; the placement of fewest words (every combination for up to
    ``exhaustive_upto`` steps, then greedily). Only the input of a layer is live while it
    runs, so only neighbouring maps constrain each other. ``None`` for a residual network."""
    if has_residual(specs):
        return None
    words = _words(specs, G)
    if len(words) <= 1:
        return [0] * len(words), max(words + [1])
    options = []
    for i in range(1, len(words)):
        opts = {words[i - 1], -words[i]}
        d = overlap_limit(specs, G, i)
        if d is not None and d > -words[i]:
            opts.add(d)
        options.append(sorted(opts))

    def span(offsets):
        b, lo, hi = 0, 0, words[0]
        bases = [0]
        for o, w in zip(offsets, words[1:]):
            b += o
            bases.append(b)
            lo, hi = min(lo, b), max(hi, b + w)
        return hi - lo, [x - lo for x in bases]

    if len(options) <= exhaustive_upto:
        depth, bases = min(span(c) for c in itertools.product(*options))
    else:
        chosen = []
        for opts in options:
            chosen.append(min(opts, key=lambda o: span(chosen + [o])[0]))
        depth, bases = span(chosen)
    return bases, depth


@dataclasses.dataclass(frozen=True)
class ActivationPlan:
    """Where every hidden layer's output lives in the activation memory.

    ``bases[i]`` is hidden layer ``i``'s first word, ``depth`` the memory's words. With regions
    (residual networks, or when no overlapping placement is smaller), ``slots[i]`` is the region
    layer ``i`` writes and ``buffers`` the words of each region; both are ``None`` for a
    :func:`chain_bases` placement."""

    bases: tuple
    depth: int
    buffers: tuple | None
    slots: tuple | None

    @property
    def layer_bases(self) -> tuple:
        """Per layer: (read base, write base); layer 0 reads the input buffer, the last writes none."""
        wb = self.bases + (0,)
        return tuple((0 if i == 0 else wb[i - 1], wb[i]) for i in range(len(wb)))


def plan_activations(specs: Sequence[LayerSpec], G: int) -> ActivationPlan:
    """The regions of the activation memory: layer ``i`` writes region ``slots[i]``
    (:func:`slots`), each region as large as the largest output written there. A network
    without residual blocks takes the :func:`chain_bases` placement instead when it needs
    fewer words."""
    specs = list(specs)
    words = _words(specs, G)
    where = slots(specs)
    n = max(where, default=0) + 1
    buf = [max([1] + [w for w, s in zip(words, where) if s == b]) for b in range(n)]
    buf += [1] * (2 - len(buf))
    start = [sum(buf[:b]) for b in range(len(buf))]
    chain = chain_bases(specs, G)
    if chain is not None and chain[1] < sum(buf):
        return ActivationPlan(tuple(chain[0]), chain[1], None, None)
    return ActivationPlan(tuple(start[s] for s in where), sum(buf), tuple(buf), tuple(where))
