"""Group norms, WPC's thresholds, its tie rule and its proximal step, against values worked out
by hand on small tensors (docs/method.md has the formulas)."""

import pytest
import torch

from ternpe.contract import ArrayGeometry, LayerSpec, tile_ids
from ternpe.model.penalty import (Threshold, group_lasso, group_norms, rank_index, shrink_factors, wpc_penalty,
                                  wpc_pull, wpc_tau)

ONE_TO_32 = torch.arange(1.0, 33.0)           # 32 groups, norms 1..32: sorted position i holds i + 1


def _layer_and_ids():
    spec = LayerSpec("c", "conv", 16, 8, in_h=4, in_w=4, k=3, pad=1)     # 8 x 4 = 32 tiles
    ids = torch.from_numpy(tile_ids(spec, ArrayGeometry(1, 4)))
    return spec, ids


def test_group_norms_match_tiles():
    spec, ids = _layer_and_ids()
    w = torch.randn(spec.weight_shape, dtype=torch.float64)
    n = group_norms(w, ids, 32)
    ref = w.reshape(8, 4, 4, 3, 3).pow(2).sum(dim=(2, 3, 4)).sqrt().reshape(-1)
    torch.testing.assert_close(n, ref)


@pytest.mark.parametrize("n, r, base0, base1", [
    (32, 0.7, 22, 21), (64, 0.7, 44, 43), (80, 0.7, 55, 54),   # floor(16r) * n / 16 = 11 n / 16
    (8, 0.7, 5, 4), (5, 0.7, 3, 2), (2, 0.7, 1, 0), (1, 0.7, 0, 0),
    (32, 5 / 16, 10, 9), (8, 5 / 16, 2, 1), (5, 5 / 16, 1, 0),  # the mix quantile
    (32, 1.0, 31, 31), (32, 0.05, 0, 0),                        # clamped to [0, n - 1]
])
def test_rank_index_both_readings(n, r, base0, base1):
    assert rank_index(n, r) == rank_index(n, r, 0) == base0
    assert rank_index(n, r, 1) == base1
    with pytest.raises(ValueError, match="base"):
        rank_index(n, r, 2)


def test_rank_index_is_the_papers_for_multiples_of_16():
    for n in (16, 32, 48, 64, 512):
        for r in (0.5, 0.7, 0.9):
            assert rank_index(n, r) == int(16 * r) * (n // 16)


def test_each_threshold_on_32_groups():
    a = ONE_TO_32                                     # mean 16.5
    assert float(wpc_tau(a, "mean", 0.5)) == 8.25
    assert float(wpc_tau(a, "rank", 0.7)) == 23.0     # position 22
    assert float(wpc_tau(a, "rank", 0.7, rank_base=1)) == 22.0
    # the authors' mix: min(mean, the 5/16 quantile at position 10); r plays no part
    assert float(wpc_tau(a, "mix", 0.7)) == 11.0
    assert float(wpc_tau(a, "mix", 0.25)) == 11.0
    assert float(wpc_tau(a, "mix", 0.7, rank_base=1)) == 10.0
    # mix-r: min(mean, the rank threshold at r)
    assert float(wpc_tau(a, "mix-r", 0.7)) == 16.5    # the mean is smaller than 23
    assert float(wpc_tau(a, "mix-r", 0.25)) == 9.0    # position floor(4 x 32 / 16) = 8
    with pytest.raises(ValueError, match="variant"):
        wpc_tau(a, "median", 0.7)


def test_mix_takes_the_mean_when_it_is_smaller():
    a = torch.tensor([0.1] * 5 + [1.0] * 11)          # mean 11.5 / 16; the 5/16 quantile (position 5) is 1.0
    assert float(wpc_tau(a, "mix", 0.7)) == pytest.approx(11.5 / 16)


def test_fewer_than_16_groups():
    a = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0])       # sorted 1 2 3 4 5, mean 3
    assert float(wpc_tau(a, "rank", 0.7)) == 4.0      # position 11 x 5 // 16 = 3
    assert float(wpc_tau(a, "rank", 0.7, rank_base=1)) == 3.0
    assert float(wpc_tau(a, "mix", 0.7)) == 2.0       # position 5 x 5 // 16 = 1
    assert float(wpc_tau(a, "mix", 0.7, rank_base=1)) == 1.0
    assert float(wpc_tau(a, "mix-r", 0.7)) == 3.0     # min(mean 3, 4)
    assert float(wpc_tau(a, "mean", 0.7)) == pytest.approx(2.1)


def test_tie_gets_half_the_pull_as_torch_minimum():
    a = torch.tensor([1.0, 2.0, 2.0, 2.0, 5.0], requires_grad=True)
    tau = wpc_tau(a, "rank", 0.7)                      # position 3: a tie of three groups at 2
    assert float(tau) == 2.0
    pen = wpc_penalty(a, "rank", 0.7)
    assert float(pen.detach()) == 1 + 2 + 2 + 2 + 2
    pen.backward()
    assert a.grad.tolist() == [1.0, 0.5, 0.5, 0.5, 0.0]
    ref = torch.tensor([1.0, 2.0, 2.0, 2.0, 5.0], requires_grad=True)
    torch.minimum(ref, tau).sum().backward()
    assert a.grad.tolist() == ref.grad.tolist()
    assert wpc_pull(a, tau).tolist() == [1.0, 0.5, 0.5, 0.5, 0.0]
    # the proximal step moves each group by step x its pull: 1 - 0.4 / 1, 1 - 0.2 / 2, untouched
    f = shrink_factors(a, "wpc", 0.4, "rank", 0.7)
    torch.testing.assert_close(f, torch.tensor([0.6, 0.9, 0.9, 0.9, 1.0]))


def test_the_ranked_group_is_always_a_tie():
    """The rank threshold is one of the norms: that group gets half the pull, those under it all of it."""
    a = ONE_TO_32.clone().requires_grad_(True)
    wpc_penalty(a, "rank", 0.7).backward()
    assert a.grad[:22].eq(1.0).all() and a.grad[22] == 0.5 and a.grad[23:].eq(0.0).all()


PRUNED = torch.tensor([1e-6, 1e-6, 1e-6, 1.0, 2.0, 3.0, 4.0, 5.0])     # three pruned groups (norm sqrt(eps))
LIVE = torch.tensor([False] * 3 + [True] * 5)


@pytest.mark.parametrize("variant, r, over_all, over_live", [
    ("rank", 0.7, 3.0, 4.0),           # all: position 11 x 8 // 16 = 5; live: 11 x 5 // 16 = 3 of 1..5
    ("mean", 0.5, 0.5 * (15 + 3e-6) / 8, 1.5),
    ("mix", 0.7, 1e-6, 2.0),           # all: position 2 is a pruned group, so nothing live is pulled
    ("mix-r", 0.7, 15.000003 / 8, 3.0),
])
def test_tau_over_all_or_live_groups(variant, r, over_all, over_live):
    assert float(wpc_tau(PRUNED, variant, r)) == pytest.approx(over_all)
    assert float(wpc_tau(PRUNED, variant, r, live=LIVE)) == pytest.approx(over_live)


def test_no_live_group_pulls_nothing():
    a = torch.full((4,), 1e-6)
    assert float(wpc_tau(a, "rank", 0.7, live=torch.zeros(4, dtype=torch.bool))) == 0.0
    assert shrink_factors(a, "wpc", 0.1, "rank", 0.7, live=torch.zeros(4, dtype=torch.bool)).eq(1.0).all()


def test_wpc_value_and_lasso():
    norms = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert float(wpc_penalty(norms, "mean", 0.5)) == pytest.approx(1.0 + 1.5 * 3)
    assert float(group_lasso(norms)) == 12.0


@pytest.mark.parametrize("variant", ["mean", "rank", "mix", "mix-r"])
def test_wpc_gradient_spares_groups_above_tau(variant):
    spec, ids = _layer_and_ids()
    torch.manual_seed(0)
    w = torch.randn(spec.weight_shape, dtype=torch.float64)
    w = w * torch.linspace(0.1, 2.0, 8, dtype=torch.float64).reshape(8, 1, 1, 1)   # spread the norms
    w.requires_grad_(True)
    norms = group_norms(w, ids, 32)
    tau = wpc_tau(norms, variant, 0.7)
    wpc_penalty(norms, variant, 0.7).backward()
    pull = wpc_pull(norms, tau)
    assert (pull == 0).any() and (pull == 1).any()
    for t in range(32):      # d||w||/dw = w / ||w||, times the pull: 1 under tau, 1/2 at it, 0 over it
        torch.testing.assert_close(w.grad[ids == t], pull[t] * w.detach()[ids == t] / norms.detach()[t])


def test_tau_follows_the_current_norms():
    """Self-adapting: tau is recomputed from the norms it is given, never frozen."""
    for variant in ("mean", "rank", "mix", "mix-r"):
        assert float(wpc_tau(ONE_TO_32 * 2, variant, 0.7)) == 2 * float(wpc_tau(ONE_TO_32, variant, 0.7))


def test_shrink_prunes_exactly_and_spares_groups_over_tau():
    a = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    f = shrink_factors(a, "wpc", 0.1, "rank", 0.7)
    tau = float(wpc_tau(a, "rank", 0.7))                  # position 5: 4.0
    assert tau == 4.0
    assert f[0] == 0.0                                     # smaller than the step: exactly zero
    assert f[1] == pytest.approx(0.5)
    assert f[5] == pytest.approx(1 - 0.05 / 4.0)           # the tie: half the step
    assert bool((f[a > tau] == 1).all()) and bool((f[a < tau] < 1).all())
    assert bool((shrink_factors(a, "lasso", 0.1) < 1).all())


def _prune_to_the_end(n: int, threshold: Threshold, steps: int = 400) -> int:
    """Proximal steps of a large constant size on ``n`` groups of 4 weights, norms 1..n, with the
    masks ``model.train`` keeps; returns how many groups end pruned."""
    ids = torch.arange(n).repeat_interleave(4)
    w = torch.arange(1.0, n + 1.0).repeat_interleave(4) / 2       # group i has norm i + 1
    mask = torch.ones_like(w)
    for _ in range(steps):
        norms = group_norms(w * mask, ids, n)
        live = torch.zeros(n).index_add_(0, ids, mask) > 0
        f = shrink_factors(norms, "wpc", 0.5, threshold.variant, threshold.r, **threshold.kwargs(live))
        w = w * f[ids]
        mask = mask * (f > 0).float()[ids]
    return int(n - (torch.zeros(n).index_add_(0, ids, mask) > 0).sum())


@pytest.mark.parametrize("threshold, n, cap", [
    (Threshold("rank", 0.7), 32, 23), (Threshold("rank", 0.7, rank_base=1), 32, 22),
    (Threshold("rank", 0.7), 8, 6), (Threshold("mix"), 32, 11), (Threshold("mix-r", 0.7), 32, 23),
])
def test_a_threshold_over_all_groups_caps_the_pruning(threshold, n, cap):
    assert threshold.cap(n) == cap
    assert _prune_to_the_end(n, threshold) <= cap


def test_rank_prunes_exactly_its_cap_and_live_groups_lift_it():
    assert _prune_to_the_end(32, Threshold("rank", 0.7)) == 23
    live = Threshold("rank", 0.7, over="live")
    assert live.cap(32) is None and Threshold("mean").cap(32) is None
    assert _prune_to_the_end(32, live) > 23


def test_threshold_checks_its_fields():
    with pytest.raises(ValueError, match="variant"):
        Threshold("median")
    with pytest.raises(ValueError, match="base"):
        Threshold(rank_base=2)
    with pytest.raises(ValueError, match="over"):
        Threshold(over="some")
