"""Run the accelerator in amaranth.sim: images in through the input stream, logits out."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

__all__ = ["simulate"]


def simulate(acc, images: np.ndarray, *, vcd: str | None = None) -> dict:
    """Returns ``{"logits": [N, classes], "classes": [N], "cycles": [N], "clocks": total clock
    cycles simulated}``."""
    res = {"logits": [], "classes": [], "cycles": []}
    clocks = [0]

    async def bench(ctx):
        for img in images:
            flat = np.asarray(img).reshape(-1)
            ctx.set(acc.output.ready, 0)
            for v in flat:
                ctx.set(acc.input.payload, int(v))
                ctx.set(acc.input.valid, 1)
                while True:
                    *_, ready = await ctx.tick().sample(acc.input.ready)   # (clk, rst, ready)
                    clocks[0] += 1
                    if ready:
                        break
            ctx.set(acc.input.valid, 0)
            ctx.set(acc.output.ready, 1)
            outs = []
            while len(outs) < acc.classes + 1:
                *_, valid, payload = await ctx.tick().sample(acc.output.valid, acc.output.payload)
                clocks[0] += 1
                if valid:
                    outs.append(payload)
            ctx.set(acc.output.ready, 0)
            res["logits"].append(outs[:-1])
            res["classes"].append(outs[-1])
            res["cycles"].append(ctx.get(acc.cycles))

    sim = Simulator(acc)
    sim.add_clock(1e-7)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return {**{k: np.asarray(v) for k, v in res.items()}, "clocks": clocks[0]}
