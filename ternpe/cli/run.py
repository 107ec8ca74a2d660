"""``ternpe run``: classify images on a board, or on the simulated board, over the UART host link."""

from __future__ import annotations

import argparse
import time

NAME = "run"
HELP = "classify images on a board (or on the simulated board)"
#: What an interrupted `ternpe run` leaves behind (said after Ctrl-C).
INTERRUPTED = "nothing was written"
DESCRIPTION = ("Send images to a board over the UART host link and print the class and the logits of each. "
               "With --sim the same host code talks to the simulated board (the board's Verilog on Verilator, "
               "or amaranth.sim; a bit-level UART).")

_EPILOG = """\
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


def add_parser(sub) -> None:
    from .boards import board_names
    rn = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rn.add_argument("--export", required=True, help="the export the bitstream was built from")
    rn.add_argument("--board", default=None, help=board_names() + " (sets the baud rate)")
    rn.add_argument("--port", default=None, help="serial port of the board, e.g. /dev/ttyUSB1")
    rn.add_argument("--baud", type=int, default=None,
                    help="UART rate, when the bitstream was built for another clock than the board's (its build "
                         "report's \"baud\"; default: the board's rate)")
    rn.add_argument("--sim", action="store_true", help="talk to the simulated board instead of a serial port")
    rn.add_argument("--images", nargs="*", default=[],
                    help="image files (PNG, JPEG, BMP, TIFF, ...) read by their format: 8-bit values as they are, "
                         "16-bit / 257, floating point 0.0 black to 1.0 white; a transparent one composited on "
                         "black (the data sets' digits are white on black); colour made grey (the mean of R, G, B) "
                         "or grey copied to R, G, B and the size made the network's, each said")
    rn.add_argument("--golden", type=int, default=0, help="also run the first N golden inputs and compare")
    rn.add_argument("--eval", type=int, nargs="?", const=0, default=None, metavar="N",
                    help="stream the first N test images (all when N is left out); report accuracy, inferences/s "
                         "and disagreements with the integer model")
    rn.add_argument("--data-dir", default=None, help="with --eval: where the data set's files are (full MNIST, "
                                                     "CIFAR-10); the built-in ones need none")
    from .array import add_array_options
    add_array_options(rn, what="with --sim: ")
    rn.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                    help="with --sim: Verilator (fast; compiles the board once, cached) or amaranth.sim "
                         "(default: %(default)s)")


def run(a) -> int:
    from ternpe.flow.host import Board, load_images
    from ternpe.image import load_export
    from ternpe.link import LinkFormat
    from ternpe.flow.generate import prepare
    ex = load_export(a.export)
    if (a.pe is not None or a.image_lanes is not None) and not a.sim:
        raise ValueError("--pe and --image-lanes set the array of the simulated board (--sim); a real board runs "
                         "the array of its bitstream")
    # the simulated board is the one --board builds: its array and its device's options
    plan = prepare(ex, pe=a.pe, device=_device(a) if a.sim else None, images=a.image_lanes)[0]
    fmt = LinkFormat.of_plan(plan)
    n_golden = len(ex.golden["inputs"])
    if not 0 <= a.golden <= n_golden:
        raise ValueError(f"--golden {a.golden}: the export holds {n_golden} golden inputs (0..{n_golden})")
    if not a.images and not a.golden and a.eval is None:
        raise ValueError("nothing to run: give --images FILE..., --golden N or --eval [N]")
    if a.data_dir is not None and a.eval is None:
        raise ValueError("--data-dir is where --eval reads the test split; give --eval, or leave --data-dir out")
    if a.sim and a.port is not None:
        raise ValueError("--port is a real board's serial port; --sim runs the simulated board: give one of them")
    # images (and the test set) are read before the board is touched: a bad file fails at once
    images = load_images(a.images, tuple(ex.manifest["input"]["shape"]), log=print) if a.images else []
    if a.eval is not None:
        evx, evy, source = _eval_set(ex, a.eval, a.data_dir)
    t, where = _transport(a, plan)
    b = Board(t, fmt)
    b.check()
    todo = [(p, img) for p, img in zip(a.images, images)]
    todo += [(f"golden {k}", ex.golden["inputs"][k]) for k in range(a.golden)]
    bad = _infer_each(b, todo, ex)
    if todo:
        print(f"ternpe run: {len(todo)} images on {where}" + (f", {bad} differ from golden" if a.golden else ""))
    if a.eval is not None:
        bad += _evaluate(b, ex, evx, evy, f"{source} on {where}")
    return 1 if bad else 0


def _device(a) -> str | None:
    """The device of ``--board`` (None without one)."""
    from .boards import board
    return None if a.board is None else board(a.board).device


def _transport(a, plan) -> tuple:
    """The link to the board: the simulated board (``--sim``) or the serial port. Returns
    ``(transport, description)``."""
    if a.sim:
        if a.simulator == "verilator":
            from ternpe.flow.vboard import VerilatorTransport as Transport
        else:
            from ternpe.flow.simboard import SimTransport as Transport
        t = Transport(plan, **({"log": print} if a.simulator == "verilator" else {}))
        board = f" as built for {a.board}" if a.board else ""
        return t, f"the simulated board{board} (PE {plan.geometry}, {a.simulator})"
    from ternpe.flow.host import SerialTransport
    from .boards import board
    if a.board is not None:
        board(a.board)               # a known board, before the port is asked for
    if not a.port or a.board is None:
        raise ValueError("give --board and --port (e.g. --board icebreaker --port /dev/ttyUSB1), or --sim")
    baud = a.baud or board(a.board).baud
    return SerialTransport(a.port, baud), f"{a.board} on {a.port} at {baud / 1e6:g} Mbaud"


def _infer_each(b, todo: list, ex) -> int:
    """Classify each ``(name, image)``, printing class and logits; a golden input's logits are
    compared with the export's. Returns how many golden inputs differ."""
    bad = 0
    for name, img in todo:
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
    return bad


def _evaluate(b, ex, evx, evy, what: str) -> int:
    """``--eval``: stream the images, print accuracy, speed and every disagreement with the integer
    model; returns the disagreements and link errors."""
    from tqdm import tqdm
    from ternpe.flow.host import evaluate
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
    print(f"ternpe run --eval: {r['images']} images of {what}: {acc}"
          f"{r['inferences_per_s']:,.1f} inferences/s as the host sees them, {len(r['disagreements'])} "
          f"disagreement(s) with the integer model, {len(r['errors'])} link error(s); "
          f"{b.stats['retries']} retries")
    return len(r["disagreements"]) + len(r["errors"])


def _eval_set(ex, n: int, data_dir):
    """The images ``--eval`` streams: the export's test split (its data set, recorded in the
    manifest), else its golden inputs. Returns ``(images, labels or None, description)``."""
    if n < 0:
        raise ValueError(f"--eval {n}: give a number of images >= 1, or no number (or 0) for all")
    shape = tuple(ex.manifest["input"]["shape"])
    name = ex.manifest.get("meta", {}).get("dataset")
    if name:
        from ternpe.model.data import load_dataset
        from ternpe.model.config import FILE_DATASETS
        if name in FILE_DATASETS and ex.manifest["meta"].get("data_dir") and data_dir is None:
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
