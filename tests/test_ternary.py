import numpy as np
import pytest
import torch

from ternpe.contract import ArrayGeometry, LayerSpec, tile_ids
from ternpe.model.penalty import group_lasso, group_norms, wpc_penalty, wpc_tau
from ternpe.model.ternary import ActQuant, TernaryConv2d, ternarize, ternary_codes


def test_ternarizer_threshold_scale_and_codes():
    w = torch.tensor([0.02, -0.5, 1.0, 0.3, -0.04, 0.049])
    mask = torch.ones_like(w)
    out = ternarize(w, mask, 0.05)
    delta = 0.05 * 1.0
    alpha = float(np.mean([0.5, 1.0, 0.3]))       # |w| >= delta
    np.testing.assert_allclose(out.numpy(), alpha * np.array([0, -1, 1, 1, 0, 0]), rtol=1e-6)
    codes, a, d = ternary_codes(w, mask, 0.05)
    assert float(d) == pytest.approx(delta) and float(a) == pytest.approx(alpha)


def test_ternarizer_uses_unpruned_weights_only():
    w = torch.tensor([3.0, 0.5, -0.4, 0.01])
    mask = torch.tensor([0.0, 1.0, 1.0, 1.0])          # the 3.0 is pruned
    codes, alpha, delta = ternary_codes(w, mask, 0.05)
    assert float(delta) == pytest.approx(0.05 * 0.5)
    assert float(alpha) == pytest.approx(0.45)
    np.testing.assert_array_equal(codes.numpy(), [0, 1, -1, 0])


def test_ternarizer_ste_gradient():
    w = torch.tensor([0.5, -1.5, 0.01, 0.8], requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    ternarize(w, mask, 0.05).sum().backward()
    # straight through, zero where |w| >= 1 and on pruned weights
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 0.0, 1.0, 0.0])


def test_all_pruned_layer_is_zero():
    w = torch.randn(5)
    assert not ternarize(w, torch.zeros(5), 0.05).any()


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


@pytest.mark.parametrize("variant", ["mean", "rank", "mix"])
def test_wpc_gradient_spares_groups_above_tau(variant):
    spec, ids = _layer_and_ids()
    torch.manual_seed(0)
    w = torch.randn(spec.weight_shape, dtype=torch.float64)
    w = w * torch.linspace(0.1, 2.0, 8, dtype=torch.float64).reshape(8, 1, 1, 1)   # spread the norms
    w.requires_grad_(True)
    norms = group_norms(w, ids, 32)
    tau = wpc_tau(norms, variant, 0.7)
    wpc_penalty(norms, variant, 0.7).backward()
    g = w.grad
    above = (norms.detach() > tau)
    assert above.any() and (~above).any()
    for t in range(32):
        sel = ids == t
        if above[t]:
            assert torch.all(g[sel] == 0), "a group above tau must not be shrunk"
        else:   # d||w||/dw = w / ||w||: pulled towards zero
            torch.testing.assert_close(g[sel], w.detach()[sel] / norms.detach()[t])


def test_wpc_value_and_lasso():
    norms = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert float(wpc_tau(norms, "mean", 0.5)) == pytest.approx(1.5)
    assert float(wpc_penalty(norms, "mean", 0.5)) == pytest.approx(1.0 + 1.5 * 3)
    assert float(group_lasso(norms)) == 12.0
    many = torch.arange(1.0, 33.0)              # 32 groups: rank floor(16*0.7)*floor(32/16) = 22
    assert float(wpc_tau(many, "rank", 0.7)) == 23.0
    assert float(wpc_tau(many, "mix", 0.7)) == 16.5                       # the mean is smaller
    assert float(wpc_tau(many, "mix", 0.25)) == 9.0                      # the rank is smaller: mix follows r
    assert float(wpc_tau(many, "mix", 0.25)) != float(torch.quantile(many, 5 / 16))
    with pytest.raises(ValueError):
        wpc_tau(norms, "median", 0.7)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 15, 16, 32, 80])
def test_rank_threshold_penalizes_small_layers(n):
    """A layer with fewer than 16 groups still has groups under tau (the paper's index was 0
    there); for multiples of 16 the index is the paper's."""
    from ternpe.model.penalty import rank_index
    k = rank_index(n, 0.7)
    if n % 16 == 0:
        assert k == 11 * (n // 16)
    if n >= 2:
        assert k >= 1
    a = torch.arange(1.0, n + 1.0)
    assert float(wpc_tau(a, "rank", 0.7)) == float(a[k])


def test_tau_follows_the_current_norms():
    """Self-adapting: tau is recomputed from the norms it is given, never frozen."""
    a = torch.arange(1.0, 33.0)
    assert float(wpc_tau(a * 2, "rank", 0.7)) == 2 * float(wpc_tau(a, "rank", 0.7))
    assert float(wpc_tau(a * 2, "mean", 0.7)) == 2 * float(wpc_tau(a, "mean", 0.7))


def test_the_group_at_tau_is_pulled():
    a = torch.arange(1.0, 33.0, requires_grad=True)
    tau = float(wpc_tau(a, "rank", 0.7))
    wpc_penalty(a, "rank", 0.7).backward()
    assert a.grad[int(tau) - 1] == 1.0 and a.grad[int(tau)] == 0.0


def test_act_quant_rounds_half_up_and_passes_gradient_inside_range():
    q = ActQuant(2)
    q.enabled = True
    q.clip.fill_(3.0)
    q.eval()
    x = torch.tensor([-1.0, 0.49, 0.5, 1.5, 2.6, 9.0], requires_grad=True)
    y = q(x)
    np.testing.assert_array_equal(y.detach().numpy(), [0, 0, 1, 2, 3, 3])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(6))


def test_masked_layer_gets_no_gradient():
    m = TernaryConv2d(4, 2, 3, padding=1, bias=False)
    m.mode = "ternary"
    m.mask[0] = 0
    m(torch.randn(1, 4, 5, 5)).sum().backward()
    assert not m.weight.grad[0].any() and m.weight.grad[1].any()
