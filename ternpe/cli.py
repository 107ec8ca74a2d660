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

examples:
  ternpe train                                   # the demo: digits, cnn, --pe 1x16, wpc
  ternpe train --method naive --lam 0.02 --out runs/naive
  ternpe train --dataset mnist --data-dir ~/data/mnist --epochs-float 5 --out runs/mnist
  ternpe train --arch resnet20 --dataset cifar10 --data-dir ~/data/cifar10 --first-last fp

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ternpe",
        description="Ternary, addition-only, PE-wise-sparse neural-network accelerators for open FPGAs.",
        epilog="the demo flow:\n  ternpe train --out runs/digits\n  ternpe export runs/digits --out exports/digits\n"
               "  ternpe generate exports/digits --out build/digits/rtl\n\n"
               "run `ternpe COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a ternary PE-wise-pruned network on the CPU",
                       description="Train a ternary network with PE-wise structured pruning on the CPU, "
                                   "fold it into the integer model, and report accuracy and compression.",
                       epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    import dataclasses
    from ternpe.model.config import TrainConfig
    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    t.add_argument("--dataset", default=d["dataset"], help="digits (built in), synthetic, mnist, fashion-mnist, cifar10 (default: %(default)s)")
    t.add_argument("--data-dir", default=None, help="directory with the idx files (mnist, fashion-mnist) or cifar-10-batches-py")
    t.add_argument("--arch", default=d["arch"], help="cnn (sized for an iCE40 UP5K), mlp, resnet20 (default: %(default)s)")
    t.add_argument("--pe", default=d["pe"], help="array geometry PxG: P output channels in parallel x G input lanes (default: %(default)s)")
    t.add_argument("--method", default=d["method"], help="float, ternary, naive, lasso-then-ternary, wpc (default: %(default)s)")
    t.add_argument("--lam", type=float, default=d["lam"], help="penalty weight lambda (default: %(default)s)")
    t.add_argument("--tau", default=d["tau"], help="WPC threshold: mean (r*mean norm), rank (norm at rank floor(16r)*floor(G/16)), mix (default: %(default)s)")
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
                         epilog="example:\n  ternpe generate exports/digits --out build/digits/rtl --device up5k\n\n"
                                "writes ternpe_top.v and ternpe_top.json (cycles per layer, memory bits, ports).",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("export", help="export directory written by `ternpe export`")
    gen.add_argument("--out", required=True, help="directory for the Verilog")
    gen.add_argument("--pe", default=None, help="check the array geometry PxG against the export's")
    gen.add_argument("--device", default=None, help="check the memories fit: up5k, ecp5-25f, ecp5-85f")
    return p


def _cmd_generate(a) -> int:
    from ternpe.hw.generate import generate
    generate(a.export, a.out, pe=a.pe, device=a.device)
    return 0


def _cmd_train(a) -> int:
    from ternpe.model.train import TrainConfig, train
    cfg = TrainConfig(dataset=a.dataset, data_dir=a.data_dir, arch=a.arch, pe=a.pe, method=a.method, lam=a.lam,
                      tau=a.tau, r=a.r, t=a.t, first_last=a.first_last, act_bits=a.act_bits,
                      epochs_float=a.epochs_float, epochs_ternary=a.epochs_ternary,
                      epochs_finetune=a.epochs_finetune, batch=a.batch, seed=a.seed)
    train(cfg, a.out)
    print(f"run written to {a.out} (metrics.json, tilemaps/, training.png)")
    return 0


def _cmd_export(a) -> int:
    from ternpe.model.export import export_run
    export_run(a.run, a.out, samples=a.samples)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ternpe.contract import ContractError
    try:
        return {"train": _cmd_train, "export": _cmd_export, "generate": _cmd_generate}[args.command](args)
    except (ValueError, FileNotFoundError) as err:      # ContractError, DatasetError, ExportError are ValueErrors
        msg = "\n".join(textwrap.wrap(str(err), 100, subsequent_indent="  ")) if not isinstance(err, ContractError) else str(err)
        print(f"ternpe {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
