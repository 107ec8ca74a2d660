"""Run the accelerator in amaranth.sim: images in through the input stream, logits out."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

__all__ = ["simulate"]


def simulate(acc, images: np.ndarray, *, vcd: str | None = None, overlap: bool = False) -> dict:
    """Returns ``{"logits": [n, classes], "classes": [n], "cycles": [n], "clocks": total clock
    cycles simulated}``.

    With image lanes (``acc.plan.images`` = N) the images go in batches of N (the last filled with
    blank images); ``cycles`` of an image is its batch's (the counter at the batch's last class).

    ``overlap=False`` sends an image, then reads its results. ``overlap=True`` streams every
    image back to back (one pixel per cycle whenever the input is ready) while the output is
    read with ready held high, and adds ``done_at``: per image, the clock edges from the edge that
    took the first pixel of the first image to the edge that took the class.
    """
    res = {"logits": [], "classes": [], "cycles": []}
    clocks = [0]
    n_out = acc.plan.classes + 1
    N = acc.plan.images
    flats = [np.asarray(img).reshape(-1) for img in images]
    n_real = len(flats)
    # image lanes take a batch of N images: the last batch is filled with blank images
    flats += [np.zeros_like(flats[0])] * (-n_real % N)

    async def feed(ctx):
        edge, first = 0, None
        for k, flat in enumerate(flats):
            for v in flat:
                ctx.set(acc.input.payload, int(v))
                ctx.set(acc.input.valid, 1)
                while True:
                    *_, ready = await ctx.tick().sample(acc.input.ready)   # (clk, rst, ready)
                    edge += 1
                    if ready:
                        first = edge if first is None else first
                        break
            if not overlap and k % N == N - 1:
                ctx.set(acc.input.valid, 0)
                for _ in range(N):
                    await collect_one(ctx)
                _batch_cycles(res, N)
        ctx.set(acc.input.valid, 0)
        res["first_edge"] = first

    async def collect_one(ctx):
        ctx.set(acc.output.ready, 1)
        outs = []
        while len(outs) < n_out:
            *_, valid, payload = await ctx.tick().sample(acc.output.valid, acc.output.payload)
            clocks[0] += 1
            if valid:
                outs.append(payload)
        ctx.set(acc.output.ready, 0)
        res["logits"].append(outs[:-1])
        res["classes"].append(outs[-1])
        res["cycles"].append(ctx.get(acc.cycles))

    async def collect(ctx):
        edge, outs, done = 0, [], []
        ctx.set(acc.output.ready, 1)
        while len(res["classes"]) < len(flats):
            *_, valid, payload = await ctx.tick().sample(acc.output.valid, acc.output.payload)
            edge += 1
            if valid:
                outs.append(payload)
                if len(outs) == n_out:
                    res["logits"].append(outs[:-1])
                    res["classes"].append(outs[-1])
                    res["cycles"].append(ctx.get(acc.cycles))
                    done.append(edge)
                    outs = []
                    if len(res["classes"]) % N == 0:
                        _batch_cycles(res, N)
        clocks[0] = edge
        res["done_edges"] = done

    sim = Simulator(acc)
    sim.add_clock(1e-7)
    sim.add_testbench(feed)
    if overlap:
        sim.add_testbench(collect)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    out = {k: np.asarray(v[:n_real]) for k, v in res.items() if k in ("logits", "classes", "cycles")}
    if overlap:
        out["done_at"] = (np.asarray(res["done_edges"]) - res["first_edge"])[:n_real]
    return {**out, "clocks": clocks[0]}


def _batch_cycles(res, N: int) -> None:
    """The cycles of a batch of ``N`` images (the counter at its last class) for each of them."""
    res["cycles"][-N:] = [res["cycles"][-1]] * N
