import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A short WPC run on the synthetic set, written to disk, and its export."""
    import torch
    torch.set_num_threads(1)
    from ternpe.model.train import TrainConfig, train
    from ternpe.model.export import export_run
    root = tmp_path_factory.mktemp("quick")
    cfg = TrainConfig(dataset="synthetic", method="wpc", lam=1.0, epochs_float=4, epochs_ternary=6,
                      epochs_finetune=2, seed=3)
    net, metrics = train(cfg, root / "run", log=lambda *a: None)
    export_run(root / "run", root / "export", samples=16, log=lambda *a: None)
    return {"root": root, "run": root / "run", "export": root / "export", "net": net, "metrics": metrics, "cfg": cfg}
