"""Helpers of the block tests: run a block in amaranth.sim, random ternary sums."""

import numpy as np
from amaranth.sim import Simulator

RNG = np.random.default_rng(1)


def run_block(dut, bench):
    """Run testbench ``bench`` against ``dut`` in amaranth.sim (a 1 MHz clock)."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def random_sums(G, A, n, extremes=False):
    """``n`` sums of 1-3 words of ``G`` activations of ``A`` bits under random ternary codes
    (``extremes``: every lane at full scale, all +1 or all -1)."""
    out = []
    for i in range(n):
        k = int(RNG.integers(1, 4))
        if extremes:
            c = 1 if i % 2 else -1
            ws = [(np.full(G, (1 << A) - 1), np.full(G, c)) for _ in range(k)]
        else:
            ws = [(RNG.integers(0, 1 << A, G), RNG.integers(-1, 2, G)) for _ in range(k)]
        out.append(ws)
    return out
