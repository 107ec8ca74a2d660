"""The host-link fuzz at length: N random exchanges (noise, truncated and back-to-back requests,
stray bytes, flipped bits) between the host runtime and the simulated board (UART bit by bit,
host link, accelerator, in amaranth.sim). Prints how many got the golden answer, how many a
clear error, and how many a wrong answer (must be 0).

    .venv/bin/python bench/linkfuzz.py [--frames 10000] [--seed 0] [--json out.json]

The board runs a small seeded random network (4x4 input, one conv, one fc) so a frame is a few
hundred cycles; amaranth.sim runs a few thousand cycles a second, so 10,000 frames take hours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the counts to this file")
    a = ap.parse_args(argv)
    from tqdm.auto import trange
    from ternpe.flow.simboard import SimTransport, fuzz_link
    from ternpe.host import Board
    from ternpe.randnet import random_export
    with tempfile.TemporaryDirectory() as d:
        ex = random_export(d + "/e", shape=(4, 4, 1), layers="c16,fc4", density=0.7, samples=8, seed=a.seed)
        t = SimTransport(ex, divisor=2, timeout_cycles=400)
        b = Board(t, t.core.link.format)
        t0 = time.time()
        counts = fuzz_link(ex, t, b, frames=a.frames, seed=a.seed, progress=lambda n: trange(n, desc="frames"))
        counts.update(b.stats, seconds=round(time.time() - t0, 1), frames=a.frames, clocks=t.clocks)
    print(json.dumps(counts))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(counts, f, indent=2)
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
