"""Training configuration: the defaults of ``ternpe train`` (torch-free, so ``--help`` is fast)."""

from __future__ import annotations

import dataclasses
import math

from ternpe.contract import ArrayGeometry

__all__ = ["METHODS", "ARCHS", "DATASETS", "TAU_VARIANTS", "TrainConfig"]

ARCHS = ("cnn", "mlp", "resnet20")
DATASETS = ("digits", "synthetic", "mnist", "fashion-mnist", "cifar10")
TAU_VARIANTS = ("mean", "rank", "mix")
METHODS = ("float", "ternary", "naive", "lasso-then-ternary", "wpc")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    arch: str = "cnn"
    pe: str = "1x16"
    method: str = "wpc"
    lam: float = 0.05
    r: float = 0.7
    tau: str = "rank"
    t: float = 0.05
    first_last: str = "ternary"
    act_bits: int = 8
    epochs_float: int = 40
    epochs_ternary: int = 60
    epochs_finetune: int = 20
    batch: int = 64
    lr: float = 0.05
    lr_ternary: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0

    def validate(self):
        errs = []
        if self.method not in METHODS:
            errs.append(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.arch not in ARCHS:
            errs.append(f"--arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if self.dataset not in DATASETS:
            errs.append(f"--dataset must be one of {', '.join(DATASETS)}, not {self.dataset!r}")
        if self.tau not in TAU_VARIANTS:
            errs.append(f"--tau must be one of {', '.join(TAU_VARIANTS)}, not {self.tau!r}")
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
        if self.batch < 1:
            errs.append("--batch must be >= 1")
        if errs:
            raise ValueError("; ".join(errs))
        ArrayGeometry.parse(self.pe)


