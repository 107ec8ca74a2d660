"""The host-link fuzz at length: N random exchanges (noise, truncated and back-to-back requests,
stray bytes, flipped bits) between the host runtime and the simulated board (UART bit by bit,
host link, accelerator). Prints how many got the golden answer, how many a clear error, and how
many a wrong answer (must be 0), and writes them to bench/results/linkfuzz.json.

    .venv/bin/python bench/linkfuzz.py [--frames 10000] [--seed 0] [--simulator verilator] [--images 1]

The board runs a small seeded random network (4x4 input, one conv, one fc) so a frame is about
2,300 cycles. ``--simulator verilator`` (the default) runs the board's Verilog compiled by
Verilator (``ternpe.flow.vboard``; built once into build/vboard/, 15-30 s): 400-550 frames a
second, 10,000 frames in under a minute. ``--simulator amaranth`` runs it in amaranth.sim, clock
for clock the same (the same counts), at ~2 frames a second. ``--images N`` builds the board with
N image lanes: each request then carries 1 to N images (the batch filled with blank ones).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHAPE, LAYERS, DENSITY, SAMPLES = (4, 4, 1), "c16,fc4", 0.7, 8


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0, help="of the random network and of the fuzz")
    ap.add_argument("--simulator", choices=["amaranth", "verilator"], default="verilator")
    ap.add_argument("--images", type=int, default=1, help="image lanes of the board (images a request)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "linkfuzz.json"),
                    help="where to write the counts (default: %(default)s; '' for nowhere)")
    a = ap.parse_args(argv)
    from tqdm.auto import trange
    from ternpe.hw.plan import AcceleratorOptions, plan_accelerator
    from ternpe.flow.simboard import SimTransport, fuzz_link
    from ternpe.flow.host import Board
    from ternpe.link import export_id
    from ternpe.model.randnet import random_export
    with tempfile.TemporaryDirectory() as d:
        ex = random_export(d + "/e", shape=SHAPE, layers=LAYERS, density=DENSITY, samples=SAMPLES, seed=a.seed)
        t0 = time.time()
        plan = plan_accelerator(ex, AcceleratorOptions(images=a.images))
        if a.simulator == "verilator":
            from ternpe.flow.vboard import VerilatorTransport
            t = VerilatorTransport(plan, divisor=2, timeout_cycles=400, build_dir=ROOT / "build" / "vboard", log=print)
        else:
            t = SimTransport(plan, divisor=2, timeout_cycles=400)
        setup = time.time() - t0
        b = Board(t, t.core.link.format)
        t0 = time.time()
        counts = fuzz_link(ex, t, b, frames=a.frames, seed=a.seed, progress=lambda n: trange(n, desc="frames"))
        seconds = time.time() - t0
        counts.update(b.stats, frames=a.frames, seed=a.seed, simulator=a.simulator, images=a.images,
                      export=f"random {LAYERS} on {'x'.join(map(str, SHAPE))}, density {DENSITY}, seed {a.seed}",
                      export_id=f"{export_id(ex.manifest):08x}", clocks=t.clocks, setup_s=round(setup, 1),
                      seconds=round(seconds, 1), frames_per_s=round(a.frames / seconds, 1))
        t.close()
    print(json.dumps(counts))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(counts, f, indent=2)
            f.write("\n")
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
