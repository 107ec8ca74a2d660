import numpy as np
import pytest
import torch

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
