import numpy as np
import pytest

from ternpe.contract import (ArrayGeometry, ContractError, LayerSpec, TileLayout, accumulator_bits,
                             conv_accumulate, decode_ternary, encode_ternary, maxpool2x2, pack_tile_words,
                             requant_params, requantize, signed_bits, tile_ids, tile_norms, unpack_tile_words)

RNG = np.random.default_rng(0)


def conv(cin, cout, k=3, h=6, w=6, **kw):
    return LayerSpec("l", "conv", cin, cout, in_h=h, in_w=w, k=k, pad=k // 2, **kw)


@pytest.mark.parametrize("text,P,G", [("1x16", 1, 16), ("4X8", 4, 8), (" 2 x 2 ", 2, 2)])
def test_geometry_parse(text, P, G):
    g = ArrayGeometry.parse(text)
    assert (g.P, g.G, g.lanes, g.word_bits) == (P, G, P * G, 2 * P * G)


@pytest.mark.parametrize("text", ["16", "1x", "0x16", "ax4", "1x0", "1x2000"])
def test_geometry_rejects(text):
    with pytest.raises(ContractError):
        ArrayGeometry.parse(text)


def test_paper_group_is_the_tile_with_P_1():
    """--pe 1xG is exactly W.view(Cout, Cin//g, g, k, k) of the paper."""
    g = 4
    L = conv(8, 6)
    w = RNG.normal(size=L.weight_shape)
    paper = np.sqrt((w.reshape(6, 8 // g, g, 3, 3) ** 2).sum(axis=(2, 3, 4)))
    np.testing.assert_allclose(tile_norms(w, L, ArrayGeometry(1, g)), paper)


@pytest.mark.parametrize("P,G,cin,cout,k", [(1, 4, 8, 6, 3), (2, 4, 8, 5, 3), (3, 16, 1, 7, 3), (2, 8, 3, 4, 5),
                                            (4, 4, 16, 8, 1), (1, 16, 64, 10, 1)])
def test_tile_array_round_trip_and_ids(P, G, cin, cout, k):
    L = conv(cin, cout, k=k) if k > 1 else LayerSpec("fc", "fc", cin, cout)
    geo = ArrayGeometry(P, G)
    lay = TileLayout(L, geo)
    w = RNG.integers(-1, 2, size=L.weight_shape)
    tiles = lay.tile_array(w)
    assert tiles.shape == (lay.rows, lay.cols, P, lay.words_per_tile, G)
    np.testing.assert_array_equal(lay.weights_from_tiles(tiles), w)
    # every weight's tile id points at the tile that holds it
    ids = tile_ids(L, geo)
    for tid in range(lay.count):
        r, c = divmod(tid, lay.cols)
        assert np.count_nonzero(tiles[r, c]) == np.count_nonzero(w[ids == tid])
        assert tiles[r, c].sum() == w[ids == tid].sum()


def test_tile_words_follow_kernel_positions():
    """cin == G: word j is kernel position j, lane l is channel l of the tile."""
    L = conv(8, 2)
    geo = ArrayGeometry(1, 4)
    w = np.zeros(L.weight_shape, int)
    w[1, 5, 2, 0] = 1          # filter 1, channel 5 = tile col 1 lane 1, ky=2 kx=0 -> word 6
    tiles = TileLayout(L, geo).tile_array(w)
    assert tiles[1, 1, 0, 6, 1] == 1 and np.count_nonzero(tiles) == 1


def test_narrow_layer_spreads_window_over_lanes():
    L = conv(1, 4)                      # first conv: one input channel
    lay = TileLayout(L, ArrayGeometry(1, 16))
    assert (lay.gw, lay.words_per_tile) == (1, 1)
    assert lay.lane_utilisation == pytest.approx(9 / 16)
    off = lay.window_offsets()
    assert off.shape == (1, 16, 3)
    np.testing.assert_array_equal(off[0, :9], [[ky, kx, 0] for ky in range(3) for kx in range(3)])
    assert (off[0, 9:] == -1).all()
    lay3 = TileLayout(conv(3, 4), ArrayGeometry(1, 16))     # RGB: 27 weights -> 2 words
    assert lay3.words_per_tile == 2 and lay3.lane_utilisation == pytest.approx(27 / 32)


def test_ragged_channels_rejected_with_advice():
    with pytest.raises(ContractError, match="24 input channels.*--pe"):
        TileLayout(conv(24, 4), ArrayGeometry(1, 16))


def test_codes_and_packing_round_trip():
    t = np.array([-1, 0, 1])
    np.testing.assert_array_equal(encode_ternary(t), [0b11, 0b00, 0b01])
    np.testing.assert_array_equal(decode_ternary(encode_ternary(t)), t)
    with pytest.raises(ContractError):
        decode_ternary(np.array([0b10]))
    with pytest.raises(ContractError):
        encode_ternary(np.array([2]))
    geo = ArrayGeometry(3, 5)
    tiles = RNG.integers(-1, 2, size=(4, 3, 2, 5))
    words = pack_tile_words(tiles, geo)
    assert len(words) == 8 and max(words) < (1 << geo.word_bits)
    np.testing.assert_array_equal(unpack_tile_words(words, geo, 2), tiles)
    # lane g of PE p at bits 2*(p*G+g)
    one = np.zeros((1, 3, 1, 5), int)
    one[0, 2, 0, 4] = -1
    assert pack_tile_words(one, geo) == [0b11 << (2 * (2 * 5 + 4))]


def test_accumulator_width_holds_the_extremes():
    L = conv(16, 4)
    bits = accumulator_bits(L, 8)
    fan_in = 16 * 9
    assert bits == signed_bits(-fan_in * 255, fan_in * 255) == 17
    x = np.full((1, 6, 6, 16), 255)
    for sign in (1, -1):
        acc = conv_accumulate(x, np.full(L.weight_shape, sign), L)
        assert (acc.max() if sign > 0 else acc.min()) == sign * fan_in * 255
        assert -(1 << (bits - 1)) <= acc.min() and acc.max() < (1 << (bits - 1))


def test_signed_bits():
    assert [signed_bits(-1, 0), signed_bits(-2, 1), signed_bits(0, 2), signed_bits(-129, 0)] == [1, 2, 3, 9]


def test_conv_accumulate_matches_direct_loop():
    L = LayerSpec("l", "conv", 3, 4, in_h=7, in_w=5, k=3, stride=2, pad=1)
    x = RNG.integers(0, 256, size=(2, 7, 5, 3))
    w = RNG.integers(-1, 2, size=L.weight_shape)
    acc = conv_accumulate(x, w, L)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros_like(acc)
    for n in range(2):
        for oy in range(L.conv_h):
            for ox in range(L.conv_w):
                for co in range(4):
                    for ky in range(3):
                        for kx in range(3):
                            for ci in range(3):
                                ref[n, oy, ox, co] += xp[n, 2 * oy + ky, 2 * ox + kx, ci] * w[co, ci, ky, kx]
    np.testing.assert_array_equal(acc, ref)


def test_requantize_rounds_half_up_clamps_and_relus():
    rq = requant_params(np.array([0.5, -0.25, 2.0]), np.array([0.0, 1.0, 300.0]))
    acc = np.array([[3, 4, 0], [1000, -1000, 0], [-7, 6, 1]])
    y = requantize(acc, rq, relu=True, act_bits=8)
    ref = np.clip(np.floor(acc * np.array([0.5, -0.25, 2.0]) + np.array([0, 1, 300]) + 0.5), 0, 255)
    np.testing.assert_array_equal(y, ref)
    assert (np.abs(rq.mult) < 1 << 15).all() and (np.abs(rq.mult) >= 1 << 14).all()   # 15 significant bits each
    np.testing.assert_array_equal(rq.shift, [15, 16, 13])


@pytest.mark.parametrize("seed", range(4))
def test_a_constant_channel_has_shift_0_and_does_not_widen_the_bias(seed):
    rng = np.random.default_rng(seed)
    m_real = rng.uniform(1e-4, 1e-2, 12)
    b_real = rng.normal(0, 3, 12)
    dead = rng.permutation(12)[:5]
    m_real[dead] = 0.0
    b_real[dead[:2]] = [2.5, -3.5]        # ties round half up, as a shift's offset would
    rq = requant_params(m_real, b_real)
    live_only = requant_params(np.delete(m_real, dead), np.delete(b_real, dead))
    np.testing.assert_array_equal(rq.shift[dead], 0)
    np.testing.assert_array_equal(rq.mult[dead], 0)
    np.testing.assert_array_equal(rq.bias[dead], np.floor(b_real[dead] + 0.5))
    assert rq.bias_bits() <= max(live_only.bias_bits(), 4)
    acc = rng.integers(-5000, 5000, (50, 12))
    y = requantize(acc, rq, relu=False, act_bits=8)
    np.testing.assert_array_equal(y[:, dead], np.broadcast_to(np.floor(b_real[dead] + 0.5), (50, len(dead))))
    assert y[0, dead[0]] == 3 and y[0, dead[1]] == -3


def test_requant_rejects_nan():
    with pytest.raises(ContractError, match="not finite"):
        requant_params(np.array([np.nan]), np.array([0.0]))


def test_maxpool():
    x = np.arange(16).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(maxpool2x2(x)[0, :, :, 0], [[5, 7], [13, 15]])


@pytest.mark.parametrize("kw,msg", [
    (dict(kind="pool"), "kind"), (dict(cin=0), "cin"), (dict(pool=3), "pool"),
    (dict(k=9), "does not fit"), (dict(in_h=5, in_w=5, k=1, pad=0, pool=2), "even map"),
])
def test_layer_spec_validation(kw, msg):
    base = dict(name="l", kind="conv", cin=4, cout=4, in_h=4, in_w=4, k=3, pad=0)
    with pytest.raises(ContractError, match=msg):
        LayerSpec(**{**base, **kw})
