"""Seeded random integer networks written as exports, without training.

The hardware is tested over many shapes (input sizes, channel counts, kernels, strides, pools,
1x1 convolutions, hidden fc layers, tile densities) with these; a trained network is only one
case. Requantizers are chosen from the accumulators of the random inputs so that activations
spread over their range (neither all zero nor all saturated), which is what exercises the
arithmetic.
"""

from __future__ import annotations

import re

import numpy as np

from ternpe.contract import (ArrayGeometry, TileLayout, conv_accumulate, maxpool2x2, parse_layers, requant_params, requantize,
                       run_integer_network, shortcut_map)
from ternpe.image import golden_vectors, load_export, write_export

__all__ = ["parse_layers", "random_export", "random_export_of", "random_specs"]


def random_specs(rng: np.random.Generator, G: int, *, residual: bool = False) -> tuple:
    """A random small network the hardware admits: ``(shape, spec text)``. Hidden widths are
    multiples of ``G`` (a hidden layer's input channels must fill whole words). ``residual``:
    usually one residual block (identity or option A) before the classifier."""
    size = int(rng.choice([6, 8, 10, 12]))
    cin = int(rng.choice([1, 2, 3]))
    width = lambda: int(rng.choice([G, 2 * G]))
    parts = [f"c{width()}{'k5' if rng.random() < 0.3 else ''}"]
    if rng.random() < 0.7:
        parts.append("p")
    if rng.random() < 0.6:
        parts.append(f"c{width()}{rng.choice(['', 'k1'])}{'s2' if rng.random() < 0.3 else ''}")
    if residual:
        # a residual block: identity, or option A after a stride-2 conv that doubles the channels
        c = int(re.findall(r"c(\d+)", ",".join(parts))[-1])
        parts += [f"c{c}", f"c{c}r"] if rng.random() < 0.5 or size < 8 else [f"c{2 * c}s2", f"c{2 * c}r"]
    if rng.random() < 0.5:
        parts.append(f"fc{width()}")
    parts.append(f"fc{int(rng.choice([3, 5, 10]))}")
    return (size, size, cin), ",".join(parts)


def random_export(out, *, shape, layers: str, pe: str = "1x16", density: float = 0.6, samples: int = 2,
                  seed: int = 0, act_bits: int = 8):
    """Write a random ternary network of ``layers`` (see :func:`parse_layers`) over ``shape``
    with about ``density`` of its tiles non-zero, and its golden outputs; returns the loaded export."""
    classes = int(re.findall(r"fc(\d+)", layers)[-1])
    return random_export_of(out, parse_layers(layers, shape, classes), shape=shape, pe=pe, density=density,
                            samples=samples, seed=seed, act_bits=act_bits,
                            meta={"random": {"layers": layers, "seed": seed, "density": density}})


def random_export_of(out, specs, *, shape, pe: str = "1x16", density: float = 0.6, samples: int = 2, seed: int = 0,
                     act_bits: int = 8, meta: dict | None = None):
    """:func:`random_export` of given layer specs (a trained network's shapes: ``density=1`` is
    the dense network, what ``ternpe train --board`` sizes the array with)."""
    rng = np.random.default_rng(seed)
    geometry = ArrayGeometry.parse(pe)
    x = rng.integers(0, 1 << act_bits, (samples, *shape))
    a = x.astype(np.int64)
    weights, requants, inputs = [], [], []
    for spec in specs:
        inputs.append(a)
        lay = TileLayout(spec, geometry)
        w = rng.choice([-1, 0, 1], size=spec.weight_shape, p=[0.35, 0.3, 0.35]).astype(np.int64)
        tiles = lay.tile_array(w)
        dead = rng.random((lay.rows, lay.cols)) > density
        dead.flat[rng.integers(dead.size)] = False         # at least one tile stays
        tiles[dead] = 0
        w = lay.weights_from_tiles(tiles)
        acc = conv_accumulate(a, w, spec)
        flat = acc.reshape(-1, spec.cout).astype(np.float64)
        spread = flat.std(axis=0) + 1.0
        top = (1 << act_bits) - 1
        m_real = (top / 4) / spread * rng.uniform(0.5, 1.5, spec.cout)
        b_real = (top / 3) - flat.mean(axis=0) * m_real
        sc = r_real = None
        if spec.residual is not None:
            sc = shortcut_map(inputs[spec.residual], spec)
            r_real = rng.uniform(0.3, 0.8, spec.cout)
            b_real = b_real - sc.reshape(-1, spec.cout).mean(axis=0) * r_real
        rq = requant_params(m_real, b_real, res_real=r_real)
        weights.append(w)
        requants.append(rq)
        a = requantize(acc, rq, relu=spec.relu, act_bits=act_bits, shortcut=sc)
        if spec.pool:
            a = maxpool2x2(a)
    outs = run_integer_network(x, specs, weights, requants, act_bits=act_bits)
    golden = golden_vectors(x.astype(np.uint8), np.zeros(samples, np.int64), outs)
    write_export(out, geometry=geometry, act_bits=act_bits, specs=specs, weights=weights, requants=requants,
                 golden=golden, logit_scale=1.0, meta=meta or {"random": {"seed": seed, "density": density}})
    return load_export(out)
