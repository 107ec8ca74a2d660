"""The contract between the model (PyTorch) and the hardware (Amaranth).

Everything both sides must agree on is defined here, once, in plain Python and numpy:

* the array geometry: ``P`` output channels computed in parallel x ``G`` input lanes per PE pass;
* the tile: ``P`` filters x ``min(G, Cin)`` input channels x ``k`` x ``k`` weights. The tile is
  the pruning group *and* the unit of work the hardware skips. With ``P = 1`` it is exactly the
  paper's PE-wise group;
* how a tile's weights are laid out in the words the array consumes (one word per cycle);
* the number formats: activation width, ternary code, accumulator width derived from the worst
  case, the requantization arithmetic;
* the integer reference arithmetic of every layer kind (:func:`conv_accumulate`,
  :func:`requantize`, :func:`maxpool2x2`, :func:`run_integer_network`).

Neither torch nor Amaranth is imported here.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "CODE_ZERO", "CODE_PLUS", "CODE_MINUS", "ACT_BITS_DEFAULT", "MULT_BITS", "SHIFT_BITS", "MAX_SHIFT",
    "ContractError", "ArrayGeometry", "check_array", "LayerSpec", "TileLayout", "conv_out", "has_residual",
    "encode_ternary", "decode_ternary", "pack_tile_words", "unpack_tile_words",
    "tile_ids", "tile_norms", "nonzero_tiles", "accumulator_bits", "signed_bits",
    "RequantParams", "requant_params", "requantize", "conv_accumulate", "maxpool2x2",
    "run_integer_network", "shortcut_map", "gap_fc_weights", "image_bits", "parse_layers", "LAYER_SPEC_HELP",
]

#: 2-bit ternary weight codes: two's complement of the weight, ``0b10`` is never used.
CODE_ZERO = 0b00
CODE_PLUS = 0b01
CODE_MINUS = 0b11
#: Default width of the unsigned activations between layers (and of the input pixels).
ACT_BITS_DEFAULT = 8
#: Width of the signed per-channel requantization multiplier (one iCE40 SB_MAC16 operand).
MULT_BITS = 16
#: Largest right shift of the requantizer, and the width of a stored shift.
MAX_SHIFT = 31
SHIFT_BITS = 5


class ContractError(ValueError):
    """A parameter, a layer or an image that the contract does not admit."""


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's complement width that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def unsigned_bits(hi: int) -> int:
    """Smallest unsigned width that holds ``[0, hi]`` (at least 1)."""
    return max(1, int(hi).bit_length())


@dataclasses.dataclass(frozen=True)
class ArrayGeometry:
    """``P`` PEs (output channels in parallel), each consuming ``G`` input lanes per cycle.

    Parameters
    ----------
    P : int
        Output channels computed in parallel (PEs in the array), >= 1.
    G : int
        Input lanes of one PE (the paper's PE size ``g``), >= 1.
    """

    P: int
    G: int

    def __post_init__(self):
        for name in ("P", "G"):
            value = getattr(self, name)
            try:
                value = operator.index(value)
            except TypeError:
                raise ContractError(f"array geometry {name} must be an integer, not {value!r}") from None
            if not 1 <= value <= 1024:
                raise ContractError(f"array geometry {name} must be between 1 and 1024, not {value}")
            object.__setattr__(self, name, value)

    @classmethod
    def parse(cls, text: str) -> "ArrayGeometry":
        """Parse ``"PxG"`` (as given to ``--pe``), e.g. ``"1x16"``."""
        m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
        if m is None:
            raise ContractError(
                f"--pe must be PxG (output channels x input lanes per PE), e.g. 1x16, not {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def lanes(self) -> int:
        """Weight lanes of the whole array: ``P * G``."""
        return self.P * self.G

    @property
    def word_bits(self) -> int:
        """Bits of one weight word (one cycle of the array): 2 bits per lane."""
        return 2 * self.P * self.G

    def __str__(self):
        return f"{self.P}x{self.G}"


def _pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _array_fault(geometry: ArrayGeometry, layers: Sequence["LayerSpec"]) -> str | None:
    """Why the hardware cannot run ``layers`` on ``geometry`` (the first reason), or None."""
    P, G = geometry.P, geometry.G
    if not (_pow2(P) and _pow2(G) and P <= G):
        return f"array {geometry}: the hardware needs P and G powers of two with P <= G"
    last = len(layers) - 1
    for i, s in enumerate(layers):
        try:
            TileLayout(s, geometry)
        except ContractError as e:
            return str(e)
        if s.cin < G and i > 0:         # window mode: the lanes read the input patch (first layer only)
            return (f"layer {s.name}: {s.cin} input channels < G={G}; window mode runs only on the first layer "
                    f"(widen the layer or choose a smaller G)")
        if s.cin < G and s.stride != 1:
            return f"layer {s.name}: window mode (cin < G) needs stride 1, not {s.stride}"
        if i < last and s.cout % P:
            return f"layer {s.name}: {s.cout} output channels is not a multiple of P={P}"
    return None


def check_array(geometry: ArrayGeometry, layers: Sequence["LayerSpec"] = ()) -> None:
    """The arrays the hardware builds, and the layers they run: ``P`` and ``G`` powers of two with
    ``P <= G`` (a tile row's ``P`` outputs lie in one ``G``-lane activation word); every layer
    fewer than ``G`` input channels or a multiple of ``G``, fewer only on the first layer (window
    mode, stride 1); every hidden layer a multiple of ``P`` output channels. Raises
    :class:`ContractError` with the first rule broken and the nearest array that keeps them all."""
    fault = _array_fault(geometry, layers)
    if fault is None:
        return
    sizes = [1 << e for e in range(11)]
    ok = [ArrayGeometry(p, g) for g in sizes for p in sizes if p <= g
          and _array_fault(ArrayGeometry(p, g), layers) is None]
    if ok:
        def distance(a):
            return (abs(a.G.bit_length() - geometry.G.bit_length()), abs(a.P.bit_length() - geometry.P.bit_length()),
                    -a.lanes)
        fault += f"; --pe {min(ok, key=distance)} suits {'this network' if layers else 'the hardware'}"
    raise ContractError(fault)


def conv_out(size: int, k: int, stride: int, pad: int) -> int:
    """Output rows (or columns) of a ``k``-wide convolution over ``size`` with ``pad`` zeros each side."""
    return (size + 2 * pad - k) // stride + 1


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer as the hardware runs it.

    ``kind`` is ``"conv"`` (k x k, stride, zero padding, channels-last activations) or ``"fc"``
    (a fully connected layer; its input is the previous activation map flattened in
    ``(h, w, c)`` order, so it is a 1 x 1 convolution over a 1 x 1 map with ``cin = h*w*c``).
    Every layer but the last ends in ReLU and requantization to unsigned ``act_bits``;
    the last yields signed logits. ``pool`` is 2 for a 2 x 2 / stride 2 max-pool after it.

    ``residual`` (a residual block's second conv) names the layer whose *input* map is added
    before the ReLU: the add happens inside the requantizer, ``(acc * mult + bias + sc *
    res_mult) >> shift`` (see :class:`RequantParams`), so both branches meet at the output's
    scale in integer arithmetic and are clamped once. ``shortcut`` says how that map becomes
    ``sc``: ``"identity"`` (same shape), or ``"pad"`` (ResNet option A: every second row and
    column, and the channels zero-padded equally before and after up to ``cout``).
    """

    name: str
    kind: str
    cin: int
    cout: int
    in_h: int = 1
    in_w: int = 1
    k: int = 1
    stride: int = 1
    pad: int = 0
    pool: int = 0
    relu: bool = True
    weight_bits: int = 2
    residual: int | None = None
    shortcut: str = "identity"

    def __post_init__(self):
        if self.kind not in ("conv", "fc"):
            raise ContractError(f"layer {self.name}: kind must be 'conv' or 'fc', not {self.kind!r}")
        for f in ("cin", "cout", "in_h", "in_w", "k", "stride"):
            if operator.index(getattr(self, f)) < 1:
                raise ContractError(f"layer {self.name}: {f} must be >= 1, not {getattr(self, f)}")
        if self.pad < 0:
            raise ContractError(f"layer {self.name}: pad must be >= 0, not {self.pad}")
        if self.pool not in (0, 2):
            raise ContractError(f"layer {self.name}: pool must be 0 or 2, not {self.pool}")
        if self.weight_bits not in (2, 8):
            raise ContractError(f"layer {self.name}: weight_bits must be 2 (ternary) or 8")
        if self.kind == "fc" and (self.k, self.in_h, self.in_w, self.stride, self.pad) != (1, 1, 1, 1, 0):
            raise ContractError(f"layer {self.name}: an fc layer is a 1x1 layer over a 1x1 map")
        if self.conv_h < 1 or self.conv_w < 1:
            raise ContractError(f"layer {self.name}: a {self.k}x{self.k} kernel does not fit a "
                                f"{self.in_h}x{self.in_w} map with padding {self.pad}")
        if self.shortcut not in ("identity", "pad"):
            raise ContractError(f"layer {self.name}: shortcut must be 'identity' or 'pad', not {self.shortcut!r}")
        if self.residual is not None:
            if operator.index(self.residual) < 0:
                raise ContractError(f"layer {self.name}: residual must name an earlier layer (>= 0)")
            if self.kind != "conv" or not self.relu or self.pool:
                raise ContractError(f"layer {self.name}: a residual add ends a conv layer with ReLU and no pool")
        if self.pool and (self.conv_h % 2 or self.conv_w % 2):
            raise ContractError(f"layer {self.name}: 2x2 max-pool needs an even map, "
                                f"got {self.conv_h}x{self.conv_w}")

    @property
    def conv_h(self) -> int:
        return conv_out(self.in_h, self.k, self.stride, self.pad)

    @property
    def conv_w(self) -> int:
        return conv_out(self.in_w, self.k, self.stride, self.pad)

    @property
    def out_h(self) -> int:
        return self.conv_h // 2 if self.pool else self.conv_h

    @property
    def out_w(self) -> int:
        return self.conv_w // 2 if self.pool else self.conv_w

    @property
    def pool_positions(self) -> int:
        """Conv outputs behind one output pixel: 4 under a 2 x 2 max-pool, else 1."""
        return 4 if self.pool else 1

    def shortcut_offset(self, src_channels: int) -> int:
        """The first output channel a residual layer's shortcut of ``src_channels`` channels lands
        on: a pad shortcut (option A) zero-pads its channels equally before and after."""
        return (self.cout - src_channels) // 2 if self.shortcut == "pad" else 0

    @property
    def weight_shape(self) -> tuple:
        """Shape of the weight as torch holds it: ``(cout, cin, k, k)`` or ``(cout, cin)``."""
        return (self.cout, self.cin, self.k, self.k) if self.kind == "conv" else (self.cout, self.cin)

    @property
    def ternary(self) -> bool:
        return self.weight_bits == 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ContractError(f"layer description has unknown fields {sorted(unknown)}")
        return cls(**d)


def has_residual(specs: Iterable[LayerSpec]) -> bool:
    """Some layer of the network adds a shortcut (a residual network)."""
    return any(s.residual is not None for s in specs)


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """How one layer's weights split into tiles on a given array.

    A tile is ``P`` consecutive filters x ``gw = min(G, cin)`` consecutive input channels x the
    whole ``k`` x ``k`` kernel. Its weights, per PE, are flattened in ``(ky, kx, c)`` order and
    cut into words of ``G`` lanes: when ``gw == G`` word ``j`` is kernel position ``j`` and lane
    ``l`` is channel ``l``; when ``cin < G`` the kernel window is spread over the lanes
    (``ceil(k*k*cin / G)`` words), so narrow layers keep the lanes busy too.
    """

    layer: LayerSpec
    geometry: ArrayGeometry

    def __post_init__(self):
        G, cin = self.geometry.G, self.layer.cin
        if cin > G and cin % G:
            raise ContractError(
                f"layer {self.layer.name} has {cin} input channels: with G={G} lanes a layer needs "
                f"fewer than G input channels or a multiple of G; choose another --pe "
                f"(a G that divides {cin}) or change the layer width")

    @property
    def gw(self) -> int:
        """Input channels per tile."""
        return min(self.geometry.G, self.layer.cin)

    @property
    def rows(self) -> int:
        """Tile rows: groups of ``P`` output channels (the last one padded with zero filters)."""
        return -(-self.layer.cout // self.geometry.P)

    @property
    def cols(self) -> int:
        """Tile columns: groups of ``gw`` input channels."""
        return self.layer.cin // self.gw

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def elems_per_pe(self) -> int:
        return self.layer.k * self.layer.k * self.gw

    @property
    def words_per_tile(self) -> int:
        return -(-self.elems_per_pe // self.geometry.G)

    @property
    def lane_utilisation(self) -> float:
        """Fraction of lane slots of a tile's words that hold weights (1.0 when cin % G == 0)."""
        return self.elems_per_pe / (self.words_per_tile * self.geometry.G)

    def tile_array(self, w: np.ndarray) -> np.ndarray:
        """Weights ``w`` (torch layout) -> ``[rows, cols, P, words, G]``, zero padded."""
        L, g = self.layer, self.geometry
        w = np.asarray(w)
        if w.shape != L.weight_shape:
            raise ContractError(f"layer {L.name}: weight shape {w.shape} != expected {L.weight_shape}")
        k = L.k
        w4 = w.reshape(L.cout, L.cin, k, k)
        full = np.zeros((self.rows * g.P, L.cin, k, k), dtype=w.dtype)
        full[:L.cout] = w4
        # [rows, P, cols, gw, ky, kx] -> [rows, cols, P, ky, kx, gw] -> flatten per PE
        t = full.reshape(self.rows, g.P, self.cols, self.gw, k, k).transpose(0, 2, 1, 4, 5, 3)
        t = t.reshape(self.rows, self.cols, g.P, self.elems_per_pe)
        out = np.zeros((self.rows, self.cols, g.P, self.words_per_tile * g.G), dtype=w.dtype)
        out[..., :self.elems_per_pe] = t
        return out.reshape(self.rows, self.cols, g.P, self.words_per_tile, g.G)

    def weights_from_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`tile_array` (padding dropped)."""
        L, g = self.layer, self.geometry
        k = L.k
        t = np.asarray(tiles).reshape(self.rows, self.cols, g.P, -1)[..., :self.elems_per_pe]
        t = t.reshape(self.rows, self.cols, g.P, k, k, self.gw).transpose(0, 2, 1, 5, 3, 4)
        full = t.reshape(self.rows * g.P, L.cin, k, k)[:L.cout]
        return full.reshape(L.weight_shape)

    def window_offsets(self) -> np.ndarray:
        """For each (word, lane): the ``(ky, kx, c_local)`` it reads, or -1 for an unused lane.

        Shape ``[words, G, 3]``. This is the activation addressing the hardware must follow.
        """
        L, g = self.layer, self.geometry
        e = np.arange(self.words_per_tile * g.G)
        ky, rem = np.divmod(e, L.k * self.gw)
        kx, c = np.divmod(rem, self.gw)
        out = np.stack([ky, kx, c], axis=-1)
        out[e >= self.elems_per_pe] = -1
        return out.reshape(self.words_per_tile, g.G, 3)


def tile_ids(layer: LayerSpec, geometry: ArrayGeometry) -> np.ndarray:
    """Tile id (``row * cols + col``) of every weight of ``layer``, in torch weight layout.

    The model side uses it to compute group norms with one scatter-add; ids are dense in
    ``[0, TileLayout.count)``.
    """
    lay = TileLayout(layer, geometry)
    co = np.arange(layer.cout) // geometry.P
    ci = np.arange(layer.cin) // lay.gw
    ids = co[:, None] * lay.cols + ci[None, :]
    if layer.kind == "conv":
        ids = np.broadcast_to(ids[:, :, None, None], layer.weight_shape)
    return np.ascontiguousarray(ids).astype(np.int64)


def tile_norms(w: np.ndarray, layer: LayerSpec, geometry: ArrayGeometry) -> np.ndarray:
    """L2 norm of every tile, shape ``[rows, cols]``."""
    lay = TileLayout(layer, geometry)
    sq = np.bincount(tile_ids(layer, geometry).ravel(), weights=np.asarray(w, np.float64).ravel() ** 2,
                     minlength=lay.count)
    return np.sqrt(sq).reshape(lay.rows, lay.cols)


def nonzero_tiles(w: np.ndarray, layer: LayerSpec, geometry: ArrayGeometry) -> np.ndarray:
    """Boolean ``[rows, cols]``: True where the tile holds a non-zero weight."""
    return tile_norms(w, layer, geometry) > 0


# --- ternary codes ---------------------------------------------------------------------------

def encode_ternary(t: np.ndarray) -> np.ndarray:
    """{-1, 0, +1} -> 2-bit codes (``CODE_MINUS``, ``CODE_ZERO``, ``CODE_PLUS``)."""
    t = np.asarray(t)
    if not np.isin(t, (-1, 0, 1)).all():
        raise ContractError("ternary weights must be -1, 0 or +1")
    return (t.astype(np.int64) & 0b11).astype(np.uint8)


def decode_ternary(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes).astype(np.int64)
    if (codes == 0b10).any() or (codes < 0).any() or (codes > 3).any():
        raise ContractError("invalid ternary code 0b10 (or out of range) in a weight word")
    return np.where(codes == CODE_MINUS, -1, codes).astype(np.int8)


def pack_tile_words(tiles: np.ndarray, geometry: ArrayGeometry) -> list:
    """``[..., P, words, G]`` ternary tiles -> list of Python ints, one per word.

    Word order: tile by tile (leading axes in C order), then word ``j``. Inside a word, lane
    ``g`` of PE ``p`` sits at bits ``[2*(p*G + g) + 1 : 2*(p*G + g)]``.
    """
    P, G = geometry.P, geometry.G
    t = np.asarray(tiles)
    words = t.shape[-2]
    t = t.reshape(-1, P, words, G).transpose(0, 2, 1, 3).reshape(-1, P * G)
    codes = encode_ternary(t).astype(object)
    shifts = [2 * i for i in range(P * G)]
    return [sum(int(c) << s for c, s in zip(row, shifts)) for row in codes]


def unpack_tile_words(words: Sequence[int], geometry: ArrayGeometry, words_per_tile: int) -> np.ndarray:
    """Inverse of :func:`pack_tile_words`: -> ``[tiles, P, words_per_tile, G]`` of {-1,0,1}."""
    P, G = geometry.P, geometry.G
    n = len(words)
    if n % words_per_tile:
        raise ContractError(f"{n} weight words is not a whole number of {words_per_tile}-word tiles")
    codes = np.array([[(int(w) >> (2 * i)) & 3 for i in range(P * G)] for w in words],
                     dtype=np.int64).reshape(n // words_per_tile, words_per_tile, P, G)
    return decode_ternary(codes).transpose(0, 2, 1, 3)


# --- number formats and integer arithmetic ---------------------------------------------------

def accumulator_bits(layer: LayerSpec, act_bits: int, weight_max: int = 1) -> int:
    """Signed accumulator width that can never overflow for ``layer``.

    Worst case: every one of the ``cin*k*k`` products at ``+-weight_max * (2**act_bits - 1)``.
    """
    fan_in = layer.cin * layer.k * layer.k
    bound = fan_in * weight_max * ((1 << act_bits) - 1)
    return signed_bits(-bound, bound)


@dataclasses.dataclass(frozen=True)
class RequantParams:
    """``y = clamp((acc * mult + bias) >> shift, 0, 2**act_bits - 1)`` per output channel.

    ``>>`` is an arithmetic shift (floor division by ``2**shift``); the round-half-up offset is
    folded into ``bias``. ``mult``, ``bias`` and ``shift`` are per channel: one shift per layer
    would leave channels with a small scale only a few significant bits of multiplier. For the
    logits layer (``relu=False``) there is no clamp. A residual layer adds ``sc * res_mult``
    (``sc`` the unsigned shortcut activation) before the shift: the two branches meet at the
    output's scale.
    """

    mult: np.ndarray   # int64 [cout], fits MULT_BITS signed
    bias: np.ndarray   # int64 [cout]
    shift: np.ndarray  # int64 [cout], 0..MAX_SHIFT
    res_mult: np.ndarray | None = None   # int64 [cout], fits MULT_BITS signed: the shortcut's weight

    def bias_bits(self) -> int:
        return signed_bits(min(int(self.bias.min()), 0), max(int(self.bias.max()), 0))


def requant_params(m_real: np.ndarray, b_real: np.ndarray, *, mult_bits: int = MULT_BITS,
                   res_real=None) -> RequantParams:
    """Integer constants for ``y = m_real * acc + b_real`` (then round, ReLU, clamp), and with
    ``res_real`` for ``y = m_real * acc + b_real + res_real * sc`` (a residual add).

    Each channel's shift is the largest that keeps its ``|mult|`` (and ``|res_mult|``) within
    ``mult_bits`` signed bits (and at most ``MAX_SHIFT``), so the larger multiplier keeps
    ``mult_bits - 1`` significant bits. A constant channel (both scales 0: a pruned filter) has
    shift 0 and its bias rounded half up, ``floor(b_real + 0.5)``: the value a shift would give,
    without a bias ``MAX_SHIFT`` bits wider than the live channels' (which would widen the
    layer's bias in the image and every requantizer's adders).
    """
    m_real = np.asarray(m_real, np.float64)
    b_real = np.asarray(b_real, np.float64)
    r_real = None if res_real is None else np.broadcast_to(np.asarray(res_real, np.float64), m_real.shape)
    if not (np.isfinite(m_real).all() and np.isfinite(b_real).all()
            and (r_real is None or np.isfinite(r_real).all())):
        raise ContractError("requantization scale or bias is not finite (a diverged model?)")
    limit = (1 << (mult_bits - 1)) - 1
    mag = np.abs(m_real) if r_real is None else np.maximum(np.abs(m_real), np.abs(r_real))
    live = mag > 0
    shift = np.where(live, np.floor(np.log2(limit / np.where(live, mag, 1))), 0)
    shift = np.clip(shift, 0, MAX_SHIFT).astype(np.int64)
    scale = np.ldexp(1.0, shift)
    mult = np.round(m_real * scale).astype(np.int64)
    if np.abs(mult).max(initial=0) > limit:
        raise ContractError(f"requantization scale {mag.max():g} does not fit {mult_bits} signed bits")
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    bias = np.where(live, np.round(b_real * scale) + half, np.floor(b_real + 0.5)).astype(np.int64)
    res = None if r_real is None else np.round(r_real * scale).astype(np.int64)
    return RequantParams(mult=mult, bias=bias, shift=shift, res_mult=res)


def requantize(acc: np.ndarray, rq: RequantParams, *, relu: bool, act_bits: int, shortcut=None) -> np.ndarray:
    """Apply :class:`RequantParams` to accumulators ``[..., cout]`` (channels last); a residual
    layer's ``shortcut`` (unsigned activations of the same shape) is added at its ``res_mult``."""
    y = np.asarray(acc, np.int64) * rq.mult + rq.bias
    if shortcut is not None:
        if rq.res_mult is None:
            raise ContractError("a shortcut needs a requantizer with res_mult")
        y = y + np.asarray(shortcut, np.int64) * rq.res_mult
    y = y >> rq.shift
    if relu:
        y = np.clip(y, 0, (1 << act_bits) - 1)
    return y


def conv_accumulate(x: np.ndarray, w: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """Integer accumulators of one layer. ``x``: ``[N, H, W, C]`` (or ``[N, C]`` for fc)
    unsigned ints; ``w``: integer weights in torch layout. Returns int64 ``[N, OH, OW, cout]``
    (``[N, cout]`` for fc). Exact: every product and sum in int64.
    """
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    if layer.kind == "fc":
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != layer.cin:
            raise ContractError(f"layer {layer.name}: input has {x.shape[1]} features, expects {layer.cin}")
        return x @ w.T
    n, h, wd, c = x.shape
    if (h, wd, c) != (layer.in_h, layer.in_w, layer.cin):
        raise ContractError(f"layer {layer.name}: input map {h}x{wd}x{c}, expects "
                            f"{layer.in_h}x{layer.in_w}x{layer.cin}")
    k, s, p = layer.k, layer.stride, layer.pad
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    oh, ow = layer.conv_h, layer.conv_w
    acc = np.zeros((n, oh, ow, layer.cout), np.int64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky:ky + s * oh:s, kx:kx + s * ow:s, :]      # [n, oh, ow, cin]
            acc += patch @ w[:, :, ky, kx].T
    return acc


def shortcut_map(x: np.ndarray, layer: LayerSpec) -> np.ndarray:
    """The shortcut a residual ``layer`` adds: its source map ``x`` ``[N, H, W, C]`` as is
    (``identity``), or every second row and column with the channels zero-padded equally before
    and after up to ``layer.cout`` (``pad``: ResNet option A). Must match the layer's output."""
    x = np.asarray(x, np.int64)
    if x.ndim != 4:
        raise ContractError(f"layer {layer.name}: a shortcut comes from an activation map, not a vector")
    if layer.shortcut == "pad":
        extra = layer.cout - x.shape[3]
        if extra < 0:
            raise ContractError(f"layer {layer.name}: a pad shortcut cannot drop channels ({x.shape[3]} > {layer.cout})")
        off = layer.shortcut_offset(x.shape[3])
        x = np.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (off, extra - off)))
    want = (layer.conv_h, layer.conv_w, layer.cout)
    if tuple(x.shape[1:]) != want:
        raise ContractError(f"layer {layer.name}: shortcut map {tuple(x.shape[1:])} does not match its output {want}")
    return x


def gap_fc_weights(w: np.ndarray, positions: int) -> np.ndarray:
    """A global average pool then an fc ``w`` ``[cout, C]``, as one fc over the flattened
    ``(h, w, c)`` map: ``w`` repeated at every one of the ``positions`` pixels. The 1/positions
    of the average goes into the layer's requantizer; the sum over pixels is the fc's own
    accumulation, so the hardware runs it as any fc."""
    return np.tile(np.asarray(w, np.int64), (1, positions))


def maxpool2x2(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def run_integer_network(x: np.ndarray, layers: Sequence[LayerSpec], weights: Sequence[np.ndarray],
                        requants: Sequence[RequantParams], *, act_bits: int) -> list:
    """Run the whole integer network. Returns the output of every layer (the last: logits).

    ``x`` is ``[N, H, W, C]`` unsigned pixels of ``act_bits``. Activation maps are channels last;
    an fc layer flattens its input in ``(h, w, c)`` order.
    """
    outs, inputs = [], []
    a = np.asarray(x, np.int64)
    if a.min(initial=0) < 0 or a.max(initial=0) >= (1 << act_bits):
        raise ContractError(f"input pixels must be unsigned {act_bits}-bit integers")
    for i, (layer, w, rq) in enumerate(zip(layers, weights, requants, strict=True)):
        inputs.append(a)
        acc = conv_accumulate(a, w, layer)
        sc = None
        if layer.residual is not None:
            if not layer.residual < i:
                raise ContractError(f"layer {layer.name}: residual {layer.residual} is not an earlier layer")
            sc = shortcut_map(inputs[layer.residual], layer)
        a = requantize(acc, rq, relu=layer.relu, act_bits=act_bits, shortcut=sc)
        if layer.pool:
            a = maxpool2x2(a)
        outs.append(a)
    return outs


def image_bits(layers: Iterable[LayerSpec], geometry: ArrayGeometry, nonzero: Iterable[int],
               bias_bits: Iterable[int], *, act_bits: int, weight_bits: Iterable[int] | None = None) -> dict:
    """Bits the exported image really stores, by kind, for the storage compression figure.

    Weights: ``nonzero tiles x words per tile x P x G lanes x bits per weight`` (the layer's
    ``weight_bits``: 2 for ternary codes, 8 for an 8-bit layer; ``weight_bits`` overrides it
    per layer, e.g. 32 for a float model). Index (CSR): ``rows + 1`` row pointers and one column
    number per non-zero tile. Requantization: per channel a ``MULT_BITS`` multiplier, a bias and
    a ``SHIFT_BITS`` shift.
    """
    layers = list(layers)
    wbits = [l.weight_bits for l in layers] if weight_bits is None else list(weight_bits)
    w_bits = idx_bits = rq_bits = 0
    for layer, nnz, bb, wb in zip(layers, nonzero, bias_bits, wbits, strict=True):
        lay = TileLayout(layer, geometry)
        w_bits += nnz * lay.words_per_tile * geometry.lanes * wb
        idx_bits += (lay.rows + 1) * unsigned_bits(lay.count) + nnz * unsigned_bits(lay.cols - 1)
        rq_bits += layer.cout * (MULT_BITS + bb + SHIFT_BITS)
    return {"weights": w_bits, "index": idx_bits, "requant": rq_bits,
            "total": w_bits + idx_bits + rq_bits}


#: The layer-spec syntax, for --help and error messages.
LAYER_SPEC_HELP = ("comma-separated layers: cN = conv with N filters (3x3, pad 1; cNk5 = 5x5, cNs2 = stride 2), "
                   "cNr = a conv that adds the previous conv's input (a residual block's second conv: identity "
                   "shortcut, or ResNet option A when the map halves or the channels grow), "
                   "p = 2x2 max-pool after the previous conv, fcN = fully connected with N outputs; "
                   "the classifier fc<classes> is appended when the spec does not end in it. "
                   "Example: c16,p,c32,p,c32,fc10")


def _residual_of(text: str, item: str, specs: list, cout: int, oh: int, ow: int) -> dict:
    """``residual``/``shortcut`` of a ``cNr`` layer: the input of the conv before it, as is when
    the shapes match, else option A (subsampled, channels zero-padded)."""
    if not specs or specs[-1].kind != "conv" or specs[-1].pool:
        raise ContractError(f"layer spec {text!r}: {item!r} adds the input of the conv before it; it must follow "
                            f"a conv without a pool (e.g. c16,c16r)")
    prev = specs[-1]
    if (prev.in_h, prev.in_w, prev.cin) == (oh, ow, cout):
        return {"residual": len(specs) - 1, "shortcut": "identity"}
    if ((prev.in_h + 1) // 2, (prev.in_w + 1) // 2) == (oh, ow) and prev.cin <= cout:
        return {"residual": len(specs) - 1, "shortcut": "pad"}
    raise ContractError(f"layer spec {text!r}: {item!r} outputs {oh}x{ow}x{cout}; its shortcut, the "
                        f"{prev.in_h}x{prev.in_w}x{prev.cin} input of {prev.name}, must be that shape (identity) "
                        f"or halve to that map with at most {cout} channels (option A, e.g. c32s2,c32r)")


def parse_layers(text: str, shape, classes: int) -> list:
    """Layer specs from a spec such as ``"c16,p,c32s2,c16k1,fc32,fc10"`` over an input
    ``(H, W, C)`` (see :data:`LAYER_SPEC_HELP`). Layers are named ``conv1, conv2, ..., fc1, ...``;
    the last one yields logits (no ReLU). Every error names the item and what would fix it."""
    h, w, c = shape
    specs = []
    items = [x.strip().lower() for x in str(text).split(",")]
    if not any(items) or any(not x for x in items):
        raise ContractError(f"layer spec {text!r}: empty item; {LAYER_SPEC_HELP}")
    n_conv = n_fc = 0
    for item in items:
        if item == "p":
            if not specs or specs[-1].kind != "conv" or specs[-1].pool:
                raise ContractError(f"layer spec {text!r}: 'p' (a 2x2 max-pool) must follow a conv without one")
            d = specs.pop().to_dict()
            d["pool"] = 2
            specs.append(LayerSpec(**d))      # refuses an odd map, naming the layer
            h, w = specs[-1].out_h, specs[-1].out_w
            continue
        m = re.fullmatch(r"c(\d+)(?:k(\d+))?(?:s(\d+))?(r)?|fc(\d+)", item)
        if m is None:
            raise ContractError(f"layer spec {text!r}: {item!r} is not cN[kK][sS][r], p or fcN; {LAYER_SPEC_HELP}")
        if m.group(5):
            n_fc += 1
            specs.append(LayerSpec(f"fc{n_fc}", "fc", h * w * c, int(m.group(5))))
            h, w, c = 1, 1, int(m.group(5))
        else:
            if specs and specs[-1].kind == "fc":
                raise ContractError(f"layer spec {text!r}: a conv ({item!r}) cannot follow an fc layer")
            n_conv += 1
            k, s = int(m.group(2) or 3), int(m.group(3) or 1)
            if k < 1 or s < 1 or int(m.group(1)) < 1:
                raise ContractError(f"layer spec {text!r}: {item!r} needs N, K and S >= 1")
            res = {}
            if m.group(4):
                res = _residual_of(text, item, specs, int(m.group(1)), conv_out(h, k, s, k // 2),
                                   conv_out(w, k, s, k // 2))
            specs.append(LayerSpec(f"conv{n_conv}", "conv", c, int(m.group(1)), in_h=h, in_w=w, k=k, stride=s,
                                   pad=k // 2, **res))
            h, w, c = specs[-1].out_h, specs[-1].out_w, specs[-1].cout
    if specs[-1].kind != "fc" or specs[-1].cout != classes:
        if specs[-1].kind == "fc" and n_fc and items[-1].startswith("fc") and specs[-1].cout != classes:
            raise ContractError(f"layer spec {text!r}: the last layer has {specs[-1].cout} outputs, the data set "
                                f"has {classes} classes (end the spec with fc{classes}, or leave it out)")
        n_fc += 1
        specs.append(LayerSpec(f"fc{n_fc}", "fc", h * w * c, classes))
    last = specs[-1].to_dict()
    last["relu"] = False
    specs[-1] = LayerSpec(**last)
    return specs
