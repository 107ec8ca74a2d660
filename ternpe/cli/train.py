"""``ternpe train``: train a ternary PE-wise-pruned network, on one process or several."""

from __future__ import annotations

import argparse
import sys
import textwrap

NAME = "train"
HELP = "train a ternary PE-wise-pruned network (CPU, or CUDA when there is a GPU)"
#: What an interrupted `ternpe train --workers N` leaves behind (one process has its own message).
INTERRUPTED = "nothing was written to --out (a run is written only when whole)"
DESCRIPTION = ("Train a ternary network with PE-wise structured pruning (on the CPU, or on CUDA GPUs; one "
               "process or several), fold it into the integer model, and report accuracy and compression.")

_EPILOG = """\
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

--board B trains for a board: before training, the resource model picks the array P x G
(and image lanes) with the most inferences/s whose accelerator, every tile kept, fits B's
FPGA (what `--pe auto` would pick for it), and training uses that array as its --pe:
the tile is then P filters wide, a pruned tile is a pass that array skips, and --cost cycles
weighs each tile by what it costs there. The run and its export record the board, and
`ternpe generate`/`sim` default to its device, `ternpe build` to the board.

--arch as a layer spec:
  LAYER_SPEC

examples:
  ternpe train                                   # the MNIST demo: cnn, --pe 1x16, wpc (lambda 1, --cost cycles)
  ternpe train --dataset digits --lam 0.3 --out runs/digits   # the quick 8x8 digits run (make demo DATASET=digits)
  ternpe train --method naive --lam 2 --out runs/naive
  ternpe train --dataset mnist --out runs/mnist            # the 5,000 MNIST digits built in
  ternpe train --dataset mnist --board ulx3s --out runs/mnist-ulx3s   # the array chosen for the ULX3S
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


def _epilog() -> str:
    from ternpe.contract import LAYER_SPEC_HELP
    return _EPILOG.replace("LAYER_SPEC", "\n  ".join(textwrap.wrap(LAYER_SPEC_HELP, 86)))


def add_parser(sub) -> None:
    t = sub.add_parser(NAME, help=HELP, allow_abbrev=False, description=DESCRIPTION,
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    import dataclasses
    from ternpe.model.config import (COSTS, LAM_MAX_FACTOR, METHODS, PENALTIES, PRESETS, RANK_BASES, TAU_OVER,
                                     TAU_VARIANTS, TrainConfig)
    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    t.add_argument("--dataset", default=d["dataset"], help="digits (built in), synthetic, synthetic-rgb32 (CIFAR-shaped, generated), mnist (a 5,000-digit sample built in; full MNIST with --data-dir), fashion-mnist, cifar10 (default: %(default)s)")
    t.add_argument("--data-dir", default=None, help="directory with the idx files (full mnist, fashion-mnist) or cifar-10-batches-py")
    t.add_argument("--arch", default=d["arch"], help="cnn (sized for an iCE40 UP5K), mlp, resnet20, or a layer spec "
                   "of your own, e.g. c16,p,c32,p,c32,fc10 (see below) (default: %(default)s)")
    t.add_argument("--width", type=int, default=None, help="filters of the cnn's first conv (default 16; the second "
                   "has twice as many) or units of the mlp's first hidden layer (default 64)")
    t.add_argument("--pe", default=d["pe"], help="array geometry PxG: P output channels in parallel x G input lanes (default: %(default)s)")
    t.add_argument("--board", default=None, help="train for this board: the array (P of --pe's G) chosen for its FPGA "
                                                 "by the resource model before training (see below)")
    t.add_argument("--method", default=d["method"], help=f"{', '.join(METHODS)} (default: %(default)s)")
    t.add_argument("--lam", type=float, default=d["lam"],
                   help="penalty weight lambda: each step shrinks a group the penalty pulls by lr x lambda x its "
                        "--cost weight x its layer's mean live group norm (default: %(default)s)")
    t.add_argument("--cost", default=d["cost"], choices=COSTS,
                   help="what a group's penalty is weighted by: the cycles the accelerator spends on its tile, "
                        "so pruning lands where the time goes, or 1 per group as in the paper (default: %(default)s)")
    t.add_argument("--target-speedup", type=float, default=None, metavar="S",
                   help="raise lambda after each epoch of the penalty phase (at most 4x an epoch, up to --lam-max) "
                        "while the network is slower than dense/S cycles; stop the pull when it gets there. Says "
                        "at the start when the WPC threshold cannot prune that much")
    t.add_argument("--lam-max", type=float, default=None, metavar="LAM",
                   help=f"the most --target-speedup raises lambda to (default: {LAM_MAX_FACTOR:g} x --lam)")
    t.add_argument("--tau", default=d["tau"], metavar="{" + ",".join(TAU_VARIANTS) + "}",
                   help="WPC threshold over a layer's n group norms a (docs/method.md): mean = r x mean(a); rank = "
                        "the sorted norm at k = floor(floor(16r) x n/16); mix = min(mean(a), the norm at "
                        "floor(5n/16)) as the authors' code has it (r unused); mix-r = min(mean(a), the rank "
                        "threshold) (default: %(default)s)")
    t.add_argument("--rank-base", type=int, default=d["rank_base"], choices=RANK_BASES,
                   help="how rank and mix count the index k: 0 takes the (k+1)-th smallest norm (a Python index), "
                        "1 the k-th; the paper's formula does not say (default: %(default)s)")
    t.add_argument("--tau-over", default=d["tau_over"], choices=TAU_OVER,
                   help="take tau over all of a layer's groups, pruned ones included (the paper; a ranked tau then "
                        "prunes at most k+1 groups of a layer), or over the live ones only (no such cap) "
                        "(default: %(default)s)")
    t.add_argument("--r", type=float, default=d["r"], help="WPC threshold ratio r of mean, rank and mix-r "
                   "(default: %(default)s)")
    t.add_argument("--t", type=float, default=d["t"], help="ternarizer threshold factor: delta = t*max|W| (default: %(default)s)")
    t.add_argument("--first-last", default=d["first_last"], choices=("ternary", "fp"),
                   help="first and last layer ternary (hardware) or full precision and unpenalized (the paper's "
                        "setting; 8-bit in the integer model; not exportable) (default: %(default)s)")
    t.add_argument("--penalty", default=d["penalty"], choices=PENALTIES,
                   help="how the pruning penalty acts: proximal (a step after each optimizer step; a pulled group "
                        "reaches zero and is pruned for good) or gradient (the paper: loss = CE + lambda x penalty; "
                        "groups whose ternary codes are all zero are pruned at the end; its lambda is on the paper's "
                        "scale, about 1e-3 to 1e-1) (default: %(default)s)")
    t.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="settings that go together; paper: " + ", ".join(
                       f"--{k.replace('_', '-')} {v}" for k, v in PRESETS["paper"].items())
                   + " (the paper's CIFAR setting; an option you give wins over its preset)")
    t.add_argument("--act-bits", type=int, default=d["act_bits"], help="unsigned activation width (default: %(default)s)")
    t.add_argument("--epochs-float", type=int, default=d["epochs_float"], help="float pretraining epochs (default: %(default)s)")
    t.add_argument("--epochs-ternary", type=int, default=d["epochs_ternary"], help="ternary/penalty epochs; lasso-then-ternary: its float lasso phase, then as many ternary ones "
                   "(default: %(default)s)")
    t.add_argument("--epochs-finetune", type=int, default=d["epochs_finetune"], help="masked fine-tuning epochs (default: %(default)s)")
    t.add_argument("--batch", type=int, default=d["batch"], help="batch size (default: %(default)s)")
    t.add_argument("--seed", type=int, default=d["seed"], help="random seed; the same seed and --threads give identical metrics (default: %(default)s)")
    t.add_argument("--lr", type=float, default=d["lr"], help="learning rate of the float phase (default: %(default)s)")
    t.add_argument("--lr-ternary", type=float, default=d["lr_ternary"],
                   help="learning rate of the ternary, penalty and fine-tune phases (default: %(default)s)")
    t.add_argument("--augment", action="store_true",
                   help="random 4-pixel shifts and horizontal flips (the standard CIFAR-10 augmentation)")
    t.add_argument("--threads", type=int, default=None,
                   help="torch's threads (default: one a core). A run's numbers depend on it (sums are reduced "
                        "in another order): the same --seed and --threads give identical metrics.json figures; "
                        "metrics.json records the count used")
    t.add_argument("--device", default=d["device"], choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when torch sees a GPU, else the CPU (default: %(default)s)")
    t.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train on N processes with torch DistributedDataParallel, launched through torchrun "
                        "(gloo on the CPU, nccl on CUDA; default: %(default)s)")
    t.add_argument("--out", default="runs/mnist", help="run directory (default: %(default)s)")
    from .force import add_force_option
    add_force_option(t, "--out")


def run(a) -> int:
    from ternpe.model.train import TrainConfig, train
    if a.workers < 1:
        raise ValueError(f"--workers must be >= 1, not {a.workers}")
    cfg = config_from_args(a)
    if a.board is not None:
        cfg = _for_board(cfg, a.board)
    if a.workers > 1:
        _check_workers(a, cfg)
        return _launch_workers(a.workers, a.argv)
    from ternpe.model.distributed import is_main, teardown
    try:
        train(cfg, a.out, force=a.force)
    except KeyboardInterrupt:
        print(f"ternpe train: interrupted; nothing was written to {a.out}", file=sys.stderr)
        return 130
    finally:
        main_rank = is_main()
        teardown()
    if main_rank:
        print(f"run written to {a.out} (metrics.json, tilemaps/, training.png)")
    return 0


def config_from_args(a):
    """The :class:`TrainConfig` of parsed arguments ``a``: ``--preset``'s settings, then every option
    given on the command line (``a.argv``) over them."""
    from ternpe.model.config import PRESETS, TrainConfig
    kw = dict(dataset=a.dataset, data_dir=a.data_dir, arch=a.arch, width=a.width, pe=a.pe, method=a.method,
              lam=a.lam, cost=a.cost, target_speedup=a.target_speedup, lam_max=a.lam_max, tau=a.tau,
              rank_base=a.rank_base, tau_over=a.tau_over, r=a.r, t=a.t, first_last=a.first_last, penalty=a.penalty,
              act_bits=a.act_bits, epochs_float=a.epochs_float, epochs_ternary=a.epochs_ternary,
              epochs_finetune=a.epochs_finetune, batch=a.batch, seed=a.seed, threads=a.threads, device=a.device, lr=a.lr,
              lr_ternary=a.lr_ternary, augment=a.augment)
    if a.preset is not None:
        given = {tok.split("=", 1)[0] for tok in getattr(a, "argv", []) if tok.startswith("--")}
        kw.update({k: v for k, v in PRESETS[a.preset].items() if f"--{k.replace('_', '-')}" not in given})
    return TrainConfig(**kw)


def _for_board(cfg, board_name: str):
    """``cfg`` with the array chosen for ``board_name``'s FPGA (the resource model, every tile kept)."""
    import dataclasses
    from ternpe.contract import ArrayGeometry
    from ternpe.flow.resources import array_for_device
    from ternpe.model.data import load_dataset
    from ternpe.model.nets import build_net
    from .boards import board as board_named
    board = board_named(board_name)
    cfg.validate()
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    net = build_net(cfg.arch, ds.shape, ds.classes, act_bits=cfg.act_bits, t=cfg.t, first_last=cfg.first_last,
                    width=cfg.width)
    G = ArrayGeometry.parse(cfg.pe).G
    geometry, lanes, limit = array_for_device(net.specs(), ds.shape, board.device, G=G, act_bits=cfg.act_bits)
    print(f"ternpe train: --board {board_name} ({board.device}): array {geometry} (with {lanes} image lane(s) when "
          f"built dense), limited by {limit}", flush=True)
    return dataclasses.replace(cfg, pe=str(geometry), board=board_name)


def _check_workers(a, cfg) -> None:
    """Everything ``--workers N`` can be refused for, refused before any process starts."""
    import os
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--workers inside a torchrun process: launch either torchrun or --workers, not both")
    from ternpe.model.train import check_out, resolve_device
    cfg.validate()
    check_out(a.out, force=a.force)
    if resolve_device(cfg.device) == "cuda":
        from ternpe.model.distributed import cuda_devices
        if a.workers > cuda_devices():
            raise ValueError(f"--workers {a.workers} with --device cuda: torch sees {cuda_devices()} GPU(s)")


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
