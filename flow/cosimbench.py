"""cocotb testbench of the generated accelerator top (``ternpe_top``), run by ``ternpe.flow.cosim``
inside the simulator's process (``ternpe sim`` and the co-simulation tests).

Its settings come as JSON in ``TERNPE_COSIM``: ``export`` (the export the Verilog was generated
from), ``golden`` (the export whose golden.npz is the reference; normally the same), ``samples``,
``valid_gap`` / ``ready_gap`` (probability of a stall cycle on the input / output stream),
``seed``, ``images`` (the image lanes: images go in batches of that many, the last filled with
blank images) and ``results`` (a JSON file this bench writes: per sample and layer, pass or the
first differing element; cycles of its batch; wall time).

Every activation write is watched on the top's debug taps, so a mismatch names the first layer
that differs, and where.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from ternpe.contract import ArrayGeometry
from ternpe.image import load_export, reorder_golden, widen


def _cfg() -> dict:
    return json.loads(os.environ["TERNPE_COSIM"])


def _load(cfg) -> tuple:
    """The export the Verilog was generated from (on the array ``pe``: its hidden layers' channels
    in the order :func:`~ternpe.image.widen` gives them), and the golden vectors to compare with."""
    ex = load_export(cfg["export"], check_golden=False)
    if cfg.get("pe"):
        ex = widen(ex, ArrayGeometry.parse(cfg["pe"]))
    if cfg["golden"] == cfg["export"]:
        return ex, ex.golden
    orders = ex.manifest.get("channel_orders") or []
    return ex, reorder_golden(load_export(cfg["golden"], check_golden=False).golden, orders)


class Top:
    """Drives the streams of ``ternpe_top`` and records its debug taps."""

    def __init__(self, dut, ex, *, valid_gap=0.0, ready_gap=0.0, seed=0, max_cycles=10**6, images=1):
        self.dut, self.ex, self.images = dut, ex, images
        self.G, self.A = ex.geometry.G, ex.act_bits
        self.valid_gap, self.ready_gap = valid_gap, ready_gap
        self.rng = random.Random(seed)
        self.sizes = [l.spec.out_h * l.spec.out_w * l.spec.cout for l in ex.layers]
        self.maps = None
        self.classes = ex.layers[-1].spec.cout
        self.max_cycles = max_cycles        # a stream that stalls longer than this fails the test

    async def start(self, taps=True):
        d = self.dut
        d.rst.value = 1
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.input__valid.value = 0
        d.input__payload.value = 0
        d.output__ready.value = 0
        await self.reset()
        if taps:
            cocotb.start_soon(self._watch_taps())

    async def reset(self, cycles=3):
        d = self.dut
        await FallingEdge(d.clk)
        d.rst.value = 1
        d.input__valid.value = 0
        d.output__ready.value = 0
        await ClockCycles(d.clk, cycles)
        await FallingEdge(d.clk)
        d.rst.value = 0

    def clear_maps(self):
        """``maps[e][layer]``: image lane ``e``'s output map of ``layer`` as the taps saw it."""
        self.maps = [[np.full(n, -1, np.int64) for n in self.sizes[:-1]] for _ in range(self.images)]

    async def _watch_taps(self):
        d, G, A = self.dut, self.G, self.A
        mask_all = (1 << A) - 1
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            if self.maps is None or not int(d.tap_valid.value):
                continue
            layer, addr = int(d.tap_layer.value), int(d.tap_addr.value)
            mask, data = int(d.tap_mask.value), int(d.tap_data.value)
            for e, maps in enumerate(self.maps):
                for lane in range(G):
                    if mask >> (e * G + lane) & 1:
                        idx = addr * G + lane
                        if idx < len(maps[layer]):
                            maps[layer][idx] = data >> ((e * G + lane) * A) & mask_all

    async def send(self, pixels):
        d, i = self.dut, 0
        flat = [int(v) for v in np.asarray(pixels).reshape(-1)]
        waited = 0
        while i < len(flat):
            await FallingEdge(d.clk)
            waited += 1
            assert waited < self.max_cycles, f"input stream: pixel {i} not taken after {waited} cycles"
            stall = self.valid_gap and self.rng.random() < self.valid_gap
            d.input__valid.value = 0 if stall else 1
            d.input__payload.value = flat[i]
            await ReadOnly()
            if not stall and int(d.input__ready.value):
                i += 1
        await FallingEdge(d.clk)
        d.input__valid.value = 0

    async def receive(self, n):
        d, out = self.dut, []
        waited = 0
        while len(out) < n:
            await FallingEdge(d.clk)
            waited += 1
            assert waited < self.max_cycles, (f"output stream: {len(out)} of {n} results after {waited} cycles "
                                              f"(busy={d.busy.value}, cycles={d.cycles.value})")
            stall = self.ready_gap and self.rng.random() < self.ready_gap
            d.output__ready.value = 0 if stall else 1
            await ReadOnly()
            if not stall and int(d.output__valid.value):
                out.append(d.output__payload.value.to_signed())
        await FallingEdge(d.clk)
        d.output__ready.value = 0
        return out

    async def infer(self, images):
        """A batch of up to ``self.images`` images (filled with blank ones): per image (logits,
        class), and the batch's cycles."""
        self.clear_maps()
        images = list(images)
        images += [np.zeros_like(np.asarray(images[0]))] * (self.images - len(images))
        for img in images:
            await self.send(img)
        out = await self.receive(self.images * (self.classes + 1))
        k = self.classes + 1
        return [(out[i * k:(i + 1) * k - 1], out[(i + 1) * k - 1]) for i in range(self.images)], int(self.dut.cycles.value)


def compare(ex, golden, n, logits, cls, maps) -> dict:
    """Per layer: ``ok`` or the first differing element, flattened (h, w, c) and as indices."""
    layers = []
    for i, l in enumerate(ex.layers):
        if maps is None and i < len(ex.layers) - 1:       # taps not watched: logits and class only
            continue
        if i < len(ex.layers) - 1:
            want = np.asarray(golden[f"layer{i}"][n]).reshape(-1)
            got = maps[i]
        else:
            want = np.asarray(golden["logits"][n]).reshape(-1)
            got = np.asarray(logits, np.int64)
        bad = np.nonzero(got != want)[0]
        entry = {"layer": l.spec.name, "ok": not len(bad), "elements": int(want.size), "mismatches": int(len(bad))}
        if len(bad):
            k = int(bad[0])
            shape = (l.spec.out_h, l.spec.out_w, l.spec.cout)
            entry.update(first=k, at=[int(v) for v in np.unravel_index(k, shape)] if i < len(ex.layers) - 1 else [k],
                         got=int(got[k]), want=int(want[k]))
        layers.append(entry)
    return {"sample": n, "layers": layers, "class": int(cls), "want_class": int(golden["classes"][n]),
            "ok": all(x["ok"] for x in layers) and int(cls) == int(golden["classes"][n])}


def _message(res) -> str:
    for r in res:
        if not r["ok"]:
            bad = next((x for x in r["layers"] if not x["ok"]), None)
            if bad is None:
                return f"sample {r['sample']}: class {r['class']} != golden {r['want_class']}"
            return (f"sample {r['sample']}: layer {bad['layer']} is the first that differs: {bad['mismatches']} of "
                    f"{bad['elements']} elements, first at (h, w, c) {tuple(bad['at'])}: got {bad['got']}, "
                    f"golden {bad['want']}")
    return ""


async def _run_batches(top, golden, n: int, taps: bool) -> tuple:
    """The first ``n`` golden inputs in batches of ``top.images``: per sample the comparison
    (every layer from the taps where ``taps``), and the cycles of its batch."""
    res, cycles = [], []
    for k0 in range(0, n, top.images):
        outs, c = await top.infer(golden["inputs"][k0:min(n, k0 + top.images)])
        for e, (logits, cls) in enumerate(outs[:n - k0]):
            res.append(compare(top.ex, golden, k0 + e, logits, cls, top.maps[e] if taps else None))
            cycles.append(c)
    return res, cycles


def _write(cfg, payload):
    with open(cfg["results"], "w") as f:
        json.dump(payload, f, indent=1)


@cocotb.test()
async def network(dut):
    """The golden inputs through the input stream; every layer and every logit and class exact."""
    cfg = _cfg()
    ex, golden = _load(cfg)
    N = cfg.get("images", 1)
    top = Top(dut, ex, valid_gap=cfg.get("valid_gap", 0.0), ready_gap=cfg.get("ready_gap", 0.0),
              seed=cfg.get("seed", 0), max_cycles=cfg.get("max_cycles", 10**6), images=N)
    taps = cfg.get("taps", True)
    await top.start(taps=taps)
    n = min(cfg.get("samples") or len(golden["inputs"]), len(golden["inputs"]))
    t0, ns0 = time.perf_counter(), get_sim_time("ns")
    res, cycles = await _run_batches(top, golden, n, taps)
    wall = time.perf_counter() - t0
    clocks = int((get_sim_time("ns") - ns0) // 10)      # every clock: loading, computing, output
    _write(cfg, {"results": res, "cycles": cycles, "wall_s": wall, "clocks": clocks})
    msg = _message(res)
    assert not msg, msg


@cocotb.test()
async def reset_mid_inference(dut):
    """A reset while an image loads and another while the network computes; the next inference is exact."""
    cfg = _cfg()
    ex, golden = _load(cfg)
    N = cfg.get("images", 1)
    top = Top(dut, ex, seed=cfg.get("seed", 0), max_cycles=cfg.get("max_cycles", 10**6), images=N)
    await top.start()
    d = dut
    img = golden["inputs"][0]
    # 1) reset half-way through loading the image
    half = np.asarray(img).reshape(-1)[: np.asarray(img).size // 2]
    await top.send(half)
    await top.reset()
    # 2) a whole batch in, reset while the layers run
    for _ in range(N):
        await top.send(img)
    for _ in range(100):
        await RisingEdge(d.clk)
    await ReadOnly()
    assert int(d.busy.value), "the accelerator should be computing 100 cycles after its input"
    await top.reset()
    res, _ = await _run_batches(top, golden, min(2, len(golden["inputs"])), True)
    _write(cfg, {"results": res, "cycles": [], "wall_s": 0.0, "clocks": 0})
    msg = _message(res)
    assert not msg, "after reset: " + msg
