"""The integer model computes what the float-folded network computes, layer by layer."""

import numpy as np
import pytest
import torch

from ternpe.model.data import synthetic
from ternpe.model.fold import INPUT_SCALE, fold
from ternpe.model.ternary import ActQuant


def test_every_layer_matches_the_torch_model(quick_run):
    """Each layer, fed the integer model's own input: hidden activations equal
    round(torch activation / step) up to rounding ties the folded constants move by one step;
    the logits scale back to torch's."""
    net = quick_run["net"].eval()
    im = fold(net)
    x = synthetic().x_test[:64]
    outs = im.run(x)
    steps = [1 / 255] + [b.act.step for b in net.blocks if isinstance(b.act, ActQuant)]
    prev = x
    for i, o in enumerate(outs):
        inp = torch.from_numpy(prev.astype(np.float64) * steps[i]).float()
        if inp.dim() == 4:
            inp = inp.permute(0, 3, 1, 2)
        with torch.no_grad():
            ref = net.block_forward(i, inp).double().numpy()
        ref = ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref
        if i < len(outs) - 1:
            diff = np.abs(o - np.round(ref / steps[i + 1]))
            assert diff.max() <= 1, f"layer {i} differs by {diff.max()} steps"
            assert (diff == 0).mean() > 0.99, f"layer {i}: only {(diff == 0).mean():.3f} exact"
        else:
            np.testing.assert_allclose(o * im.logit_scale, ref, atol=2 * im.logit_scale + 1e-4 * np.abs(ref).max())
            assert (np.argmax(o, 1) == ref.argmax(1)).mean() >= 0.98
        prev = o


def test_integer_accuracy_reported_beside_float(quick_run):
    m = quick_run["metrics"]
    for key in ("float_accuracy", "accuracy", "integer_accuracy", "group_density", "min_in_group_sparsity",
                "compression_rate", "storage_compression"):
        assert key in m
    assert m["integer_accuracy"] >= m["accuracy"] - 0.03
    assert m["integer_accuracy"] > 0.8      # the synthetic set is easy; a broken fold is at chance (0.25)


def test_fold_breaks_when_a_code_flips(quick_run):
    """The comparison above is sensitive: one flipped weight changes the integer output."""
    im = fold(quick_run["net"])
    x = synthetic().x_test[:32]
    before = im.run(x)[0]
    w = im.weights[0]
    idx = tuple(np.argwhere(w != 0)[0])
    w[idx] = -w[idx]
    assert not np.array_equal(im.run(x)[0], before)


def test_input_scale_is_pixel_over_255():
    assert INPUT_SCALE == pytest.approx(1 / 255)


def test_a_collapsed_layer_folds_to_zeros(quick_run):
    """A layer whose every output was 0 in calibration (clip 0: a penalty that pruned it away)
    folds to a requantizer that emits 0, and the logits still follow torch's."""
    import copy
    net = copy.deepcopy(quick_run["net"]).eval()
    hidden = [b for b in net.blocks if isinstance(b.act, ActQuant)]
    lin, act = hidden[0].lin, hidden[0].act
    with torch.no_grad():
        lin.mask.zero_()
        hidden[0].bn.bias.fill_(-1.0)      # relu(bias) = 0 with no weights: the layer is dead
        act.clip.zero_()
    im = fold(net)
    x = synthetic().x_test[:32]
    outs = im.run(x)
    assert not outs[0].any()
    assert not im.weights[0].any() and not im.requants[0].mult.any()
    with torch.no_grad():
        ref = net(torch.from_numpy(x.astype(np.float64) / 255).float().permute(0, 3, 1, 2)).double().numpy()
    np.testing.assert_allclose(outs[-1] * im.logit_scale, ref, atol=2 * im.logit_scale + 1e-4 * np.abs(ref).max())
