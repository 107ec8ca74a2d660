"""Training configuration: the defaults of ``ternpe train`` (torch-free, so ``--help`` is fast)."""

from __future__ import annotations

import dataclasses
import math
import re

from ternpe.contract import ArrayGeometry

__all__ = ["METHODS", "ARCHS", "DATASETS", "FILE_DATASETS", "TAU_VARIANTS", "TAU_OVER", "RANK_BASES", "COSTS", "LAM_MAX_FACTOR",
           "PENALTIES", "PRESETS", "TrainConfig", "is_layer_spec"]

ARCHS = ("cnn", "mlp", "resnet20")
DATASETS = ("digits", "synthetic", "synthetic-rgb32", "mnist", "fashion-mnist", "cifar10")
#: The data sets read from files (``--data-dir``; mnist without it is the sample built in).
FILE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
#: WPC's threshold rules (docs/method.md): r x mean, the rank at r, the authors' min(mean, 5/16
#: quantile), and min(mean, the rank at r).
TAU_VARIANTS = ("mean", "rank", "mix", "mix-r")
#: The groups tau is taken over: all of a layer's, pruned ones included (the paper), or the live ones.
TAU_OVER = ("all", "live")
#: How the rank threshold's index counts: from 0 (a Python index) or from 1.
RANK_BASES = (0, 1)
#: ``--target-speedup`` raises lambda up to this many times ``--lam`` unless ``--lam-max`` says otherwise.
LAM_MAX_FACTOR = 10.0
METHODS = ("float", "ternary", "naive", "lasso-then-ternary", "wpc")
#: What a pruning penalty weighs a group by: the cycles the accelerator spends on it, or 1 (the paper).
COSTS = ("cycles", "groups")
#: How the penalty acts: a proximal step after each optimizer step (ours: a pulled group reaches
#: exactly zero and is pruned for good), or a term of the loss whose gradient the optimizer
#: follows (the paper: loss = CE + lambda x sum of the layers' penalties; a group is pruned at
#: the end when its ternary codes are all zero).
PENALTIES = ("proximal", "gradient")
#: ``--preset``: settings that go together. ``paper``: the paper's setting on CIFAR-sized networks
#: (shared/PAPER.md): the penalty as a gradient term, every group weighted alike, tau = 0.7 x the
#: mean group norm, lambda 2.5e-3 (the authors' CIFAR value), first and last layers at full
#: precision and unpenalized. An option given on the command line wins over its preset.
PRESETS = {"paper": {"penalty": "gradient", "cost": "groups", "tau": "mean", "r": 0.7, "lam": 2.5e-3,
                     "first_last": "fp"}}


def is_layer_spec(arch: str) -> bool:
    """``--arch`` names a network (cnn, mlp, resnet20) or spells one out (``c16,p,c32,fc10``)."""
    return arch not in ARCHS and bool(re.fullmatch(r"[\s\w,]+", arch)) and any(ch.isdigit() for ch in arch)


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "mnist"          # the built-in 5,000-digit sample: what make demo trains
    data_dir: str | None = None
    arch: str = "cnn"
    width: int | None = None
    pe: str = "1x16"
    method: str = "wpc"
    lam: float = 1.0
    cost: str = "cycles"
    target_speedup: float | None = None
    lam_max: float | None = None
    r: float = 0.7
    tau: str = "rank"
    rank_base: int = 0
    tau_over: str = "all"
    t: float = 0.05
    first_last: str = "ternary"
    penalty: str = "proximal"
    act_bits: int = 8
    epochs_float: int = 40
    epochs_ternary: int = 60
    epochs_finetune: int = 20
    batch: int = 64
    lr: float = 0.05
    lr_ternary: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    augment: bool = False
    #: the board the array (``pe``) was chosen for (``ternpe train --board``); recorded, and the
    #: export's default board
    board: str | None = None
    #: torch's intra-op threads (None: torch's default, one a core). A run's numbers depend on it,
    #: since sums are reduced in another order: the same seed and threads give identical metrics
    threads: int | None = None

    def validate(self):
        errs = []
        if self.threads is not None and not 1 <= self.threads <= 256:
            errs.append(f"--threads must be between 1 and 256, not {self.threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            errs.append(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if self.method not in METHODS:
            errs.append(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.arch not in ARCHS and not is_layer_spec(self.arch):
            errs.append(f"--arch must be one of {', '.join(ARCHS)} or a layer spec such as c16,p,c32,p,c32,fc10, "
                        f"not {self.arch!r}")
        if self.width is not None and not 1 <= self.width <= 4096:
            errs.append(f"--width must be between 1 and 4096, not {self.width}")
        if self.cost not in COSTS:
            errs.append(f"--cost must be one of {', '.join(COSTS)}, not {self.cost!r}")
        if self.target_speedup is not None:
            if not (math.isfinite(self.target_speedup) and self.target_speedup > 1):
                errs.append(f"--target-speedup must be a number > 1 (cycles of the dense network / cycles "
                            f"wanted), not {self.target_speedup}")
            elif self.method not in ("naive", "wpc", "lasso-then-ternary"):
                errs.append(f"--target-speedup needs a pruning method (wpc, naive, lasso-then-ternary), "
                            f"not --method {self.method}")
            elif self.epochs_ternary == 0:
                errs.append("--target-speedup adapts lambda during the penalty phase: --epochs-ternary must be > 0")
            elif not self.lam > 0:
                errs.append("--target-speedup raises lambda by factors: --lam must be > 0")
        if self.lam_max is not None and self.target_speedup is None:
            errs.append("--lam-max is the ceiling of --target-speedup's lambda; give --target-speedup too, or leave "
                        "--lam-max out")
        if self.data_dir is not None and self.dataset not in FILE_DATASETS:
            errs.append(f"--data-dir applies to {', '.join(FILE_DATASETS)} (read from files); --dataset "
                        f"{self.dataset} is built in or generated: leave --data-dir out")
        if self.lam_max is not None and not (math.isfinite(self.lam_max) and self.lam_max >= self.lam):
            errs.append(f"--lam-max must be a number >= --lam ({self.lam}), not {self.lam_max}")
        if self.dataset not in DATASETS:
            errs.append(f"--dataset must be one of {', '.join(DATASETS)}, not {self.dataset!r}")
        if self.tau not in TAU_VARIANTS:
            errs.append(f"--tau must be one of {', '.join(TAU_VARIANTS)}, not {self.tau!r}")
        if self.rank_base not in RANK_BASES:
            errs.append(f"--rank-base must be 0 or 1, not {self.rank_base!r}")
        if self.tau_over not in TAU_OVER:
            errs.append(f"--tau-over must be one of {', '.join(TAU_OVER)}, not {self.tau_over!r}")
        if self.penalty not in PENALTIES:
            errs.append(f"--penalty must be one of {', '.join(PENALTIES)}, not {self.penalty!r}")
        elif self.penalty == "gradient" and self.target_speedup is not None:
            errs.append("--target-speedup watches the masks, which only --penalty proximal changes while training "
                        "(a gradient penalty prunes at the end): use --penalty proximal, or sweep --lam")
        if self.first_last not in ("ternary", "fp"):
            errs.append(f"--first-last must be 'ternary' or 'fp', not {self.first_last!r}")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            errs.append(f"--lam must be a finite number >= 0, not {self.lam}")
        if not 0 < self.r <= 1:
            errs.append(f"--r must be in (0, 1], not {self.r}")
        if not 0 < self.t < 1:
            errs.append(f"--t must be in (0, 1), not {self.t}")
        if not 2 <= self.act_bits <= 16:
            errs.append(f"--act-bits must be between 2 and 16, not {self.act_bits}")
        for f in ("epochs_float", "epochs_ternary", "epochs_finetune"):
            if getattr(self, f) < 0:
                errs.append(f"--{f.replace('_', '-')} must be >= 0")
        if self.epochs_float + self.epochs_ternary + self.epochs_finetune == 0:
            errs.append("--epochs-float, --epochs-ternary and --epochs-finetune are all 0: nothing would be trained")
        if self.batch < 1:
            errs.append("--batch must be >= 1")
        for f in ("lr", "lr_ternary"):
            if not (getattr(self, f) > 0 and math.isfinite(getattr(self, f))):
                errs.append(f"--{f.replace('_', '-')} must be a number > 0, not {getattr(self, f)}")
        if errs:
            raise ValueError("; ".join(errs))
        ArrayGeometry.parse(self.pe)      # the hardware's rule (check_array) once the network is built

    @property
    def lam_ceiling(self) -> float:
        """The most ``--target-speedup`` may raise lambda to: ``--lam-max``, else ``LAM_MAX_FACTOR`` x ``--lam``."""
        return self.lam_max if self.lam_max is not None else LAM_MAX_FACTOR * self.lam


