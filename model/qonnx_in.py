"""A QONNX graph (Brevitas, QKeras through qonnx, or ternpe's own) folded into the integer model.

The graph is read with the ``qonnx`` package (``ModelWrapper``, ``cleanup_model``: shapes
inferred, constants folded, names made unique) and walked from its input, one layer at a time:

* a layer is a ``Conv`` (group 1, square kernel, equal strides and pads), ``Gemm`` or ``MatMul``
  whose weight is a ``Quant`` (2 bits, signed, narrow: {-1, 0, +1} x scale, per tensor or per
  channel) or a ``BipolarQuant`` (+-1 x scale) of a constant;
* after it, until the next activation quantizer, any chain of per-channel ``Mul``, ``Div``,
  ``Add``, ``Sub`` by constants, ``BatchNormalization``, ``Relu``, ``Cast`` and 2x2 ``MaxPool``
  is one affine map ``k * acc + c``; an ``Add`` of an earlier layer's input (through ``Cast``,
  a constant ``Mul``, a stride-2 ``Slice`` and a channel ``Pad``) is the residual add;
* an unsigned ``Quant`` of ``act_bits`` bits with a scalar scale ends a hidden layer: its
  ``round`` (or ``floor``), ReLU and clamp become the requantizer; the graph's output (after an
  optional ``Floor``) ends the last layer, the logits;
* ``Flatten``/``Reshape`` before an fc put its columns in the contract's ``(h, w, c)`` order;
  ``GlobalAveragePool`` before it is the fc repeated at every pixel.

The hardware reads the image's bytes: the graph's input is ``pixel * input_scale``. An input
``Quant`` of 8 unsigned bits at that scale is exact; at another scale it is a rounding the
hardware does not do, and the folded model's agreement with the graph says what it costs.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ternpe.contract import MULT_BITS, ContractError, LayerSpec, gap_fc_weights, requant_params
from .fold import LOGIT_RESOLUTION, IntegerModel

__all__ = ["QonnxError", "QonnxFold", "read_qonnx", "fold_qonnx", "run_graph", "agreement", "as_contract_layout"]

#: Ops that pass a tensor on unchanged for the walk.
_PASS = {"Cast", "Identity"}


class QonnxError(ContractError):
    """A QONNX graph ternpe cannot map onto the hardware, and why."""


#: How a node's name in the file is kept through qonnx's cleanup, which renames every node.
_NAME_TAG = "ternpe-source-name:"


def _refuse(node, why: str):
    given = node.doc_string[len(_NAME_TAG):] if node.doc_string.startswith(_NAME_TAG) else ""
    where = f"{node.op_type}, {node.name} after qonnx's cleanup" if given and given != node.name else node.op_type
    raise QonnxError(f"node {given or node.name or '(unnamed)'} ({where}): {why}")


@dataclasses.dataclass
class QonnxFold:
    """The integer model of a graph, and how to compare the two."""
    model: IntegerModel
    layer_tensors: list        # the graph tensor each layer's integer output is read from
    layer_steps: list          # the real value of one unit of that tensor (the last: logits)
    notes: list                # what is not exact, said once each
    input_scale: float         # the graph's input is pixel * input_scale


def read_qonnx(path, *, batch: int | None = None):
    """``path`` as a cleaned-up qonnx ``ModelWrapper`` (``batch``: images a run of it takes)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        raise QonnxError(f"{path}: no such file") from None
    except Exception as e:          # a truncated or foreign file: protobuf raises DecodeError, others
        raise QonnxError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e)[:200]}); export it "
                         f"with brevitas.export.export_qonnx or qonnx's converters") from None
    for i, n in enumerate(proto.graph.node):
        n.doc_string = _NAME_TAG + (n.name or f"#{i} ({n.op_type})")
    consts = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in consts]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise QonnxError(f"{path}: a network for ternpe has one input (the image) and one output (the logits); "
                         f"this graph has {len(inputs)} inputs and {len(proto.graph.output)} outputs")
    try:
        return cleanup_model(ModelWrapper(proto), override_inpsize=batch)
    except Exception as e:
        raise QonnxError(f"{path}: qonnx cannot clean the graph up ({type(e).__name__}: {str(e)[:300]})") from None


class _Walk:
    """The graph being folded: its constants, producers and consumers."""

    def __init__(self, mw):
        self.mw = mw
        self.producer = {o: n for n in mw.graph.node for o in n.output}
        self.consumers = {}
        for n in mw.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name):
        v = self.mw.get_initializer(name) if name else None
        return None if v is None else np.asarray(v, np.float64)

    def attrs(self, node) -> dict:
        from onnx import helper
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def _leads_to_add(self, node) -> bool:
        """``node`` starts a shortcut: Cast, Mul, Slice or Pad steps that end in an ``Add``."""
        while node.op_type in ("Cast", "Identity", "Mul", "Slice", "Pad"):
            users = self.consumers.get(node.output[0], [])
            if len(users) != 1:
                return False
            node = users[0]
        return node.op_type == "Add"

    def next_node(self, tensor, node_for_error):
        """The one node the main path takes from ``tensor`` (shortcuts to a residual add aside)."""
        users = self.consumers.get(tensor, [])
        main = [n for n in users if not self._leads_to_add(n)] if len(users) > 1 else users
        if not main:
            if tensor in [o.name for o in self.mw.graph.output]:
                return None
            _refuse(node_for_error, "its output goes nowhere")
        if len(main) > 1:
            _refuse(node_for_error, f"its output feeds {len(main)} layers ({', '.join(n.op_type for n in main)}); "
                                    f"only residual adds may branch")
        return main[0]


def _channel_vector(value, cout: int, node, what: str) -> np.ndarray:
    """A constant that is a scalar or one value per output channel, as ``[cout]``."""
    v = np.asarray(value, np.float64)
    if v.size == 1:
        return np.full(cout, float(v.reshape(-1)[0]))
    if v.size == cout and max(v.shape) == cout:
        return v.reshape(-1)
    _refuse(node, f"its {what} has shape {v.shape}, not one value or one per channel ({cout})")


def _rounding_mode(attrs: dict) -> str:
    """A Quant node's ``rounding_mode`` (ROUND when absent) as text."""
    mode = attrs.get("rounding_mode", "ROUND")
    return mode.decode() if isinstance(mode, bytes) else mode


def _ternary_weight(walk, tensor, node):
    """The dequantized weight of ``node`` (its input ``tensor``), as the weight's Quant or
    BipolarQuant computes it (qonnx's own functions)."""
    from qonnx.custom_op.general.bipolar_quant import binary_quant
    from qonnx.custom_op.general.quant import quant
    q = walk.producer.get(tensor)
    if q is None or q.op_type not in ("Quant", "IntQuant", "BipolarQuant"):
        _refuse(node, "its weight is not a Quant/BipolarQuant of a constant: ternpe takes ternary "
                      "(2-bit signed narrow) or binary weights")
    x, scale = walk.const(q.input[0]), walk.const(q.input[1])
    if x is None or scale is None:
        _refuse(q, "the weight or its scale is not a constant")
    if q.op_type == "BipolarQuant":
        wq = binary_quant(x, scale)
    else:
        a = walk.attrs(q)
        zero, bits = walk.const(q.input[2]), walk.const(q.input[3])
        if bits is None or float(bits) != 2 or not a.get("signed", 1) or not a.get("narrow", 0):
            _refuse(q, f"weights of {bits if bits is None else float(bits):g} bits "
                       f"(signed={a.get('signed', 1)}, narrow={a.get('narrow', 0)}): the hardware is addition-only "
                       f"and takes ternary weights, a 2-bit signed narrow Quant ({{-1, 0, +1}} x scale)")
        if zero is None or np.any(zero != 0):
            _refuse(q, "a ternary weight needs zero point 0")
        wq = quant(x, scale, zero, bits, signed=True, narrow=True, rounding_mode=_rounding_mode(a))
    return np.asarray(wq, np.float64)


def _codes_and_scale(wq, node):
    """Rows of a dequantized ternary weight (rows = output channels) as codes and a scale per row."""
    flat = wq.reshape(wq.shape[0], -1)
    mag = np.abs(flat)
    scale = mag.max(axis=1)
    nz = mag > 0
    scale = np.where(scale > 0, scale, 1.0)      # a pruned-away row: its accumulator is 0 whatever the scale
    if np.any(np.abs(mag - scale[:, None])[nz] > 1e-6 * np.broadcast_to(scale[:, None], mag.shape)[nz]):
        _refuse(node, "its quantized weights take more than one magnitude in an output channel: not ternary")
    codes = np.sign(wq).astype(np.int64)
    return codes, scale


@dataclasses.dataclass
class _Act:
    """An activation tensor of the graph: its real value is ``q * step``, ``q`` the integer map."""
    tensor: str
    step: float
    shape: tuple               # (h, w, c), or (features,) after an fc


@dataclasses.dataclass
class _Tail:
    """What follows a layer's accumulation, folded: ``real = k * acc + c (+ res_gain * shortcut)``."""
    k: np.ndarray
    c: np.ndarray
    relu: bool = False
    pool: int = 0
    residual: tuple | None = None        # (layer index, its _Act, gain per channel, "identity" | "pad")
    quant_scale: float | None = None     # the activation quantizer's step (None: the logits)
    floor: bool = False                  # the quantizer (or the logits) rounds down
    out: str = ""                        # the tensor the layer's integer output is read from


def _input_quant(walk, act: _Act, notes: list, act_bits: int) -> _Act:
    """Skip an unsigned input ``Quant``: exact when its step is the pixel step, else noted."""
    node = walk.next_node(act.tensor, walk.mw.graph.node[0])
    if node is None or node.op_type not in ("Quant", "IntQuant"):
        return act
    a, scale, zero, bits = walk.attrs(node), *(walk.const(i) for i in node.input[1:4])
    if a.get("signed", 1) or scale is None or scale.size != 1 or zero is None or np.any(zero != 0):
        _refuse(node, "the input quantizer must be unsigned, with one scale and zero point 0 (pixels are bytes)")
    if bits is None or float(bits) < act_bits:
        _refuse(node, f"an input quantizer of {bits if bits is None else float(bits):g} bits: the hardware reads "
                      f"{act_bits}-bit pixels; quantize the input to {act_bits} bits")
    s = float(scale.reshape(-1)[0])
    if abs(s - act.step) > 1e-6 * act.step:
        notes.append(f"the input quantizer's step is {s:.6g}, not the pixel step {act.step:.6g}: the hardware "
                     f"reads the pixel bytes as they are, without that rounding")
    return _Act(node.output[0], act.step, act.shape)


def _to_layer(walk, act: _Act):
    """From activation ``act`` to the next Conv/Gemm/MatMul: ``(node, act as it enters, positions)``;
    ``Flatten``/``Reshape`` and ``GlobalAveragePool`` on the way."""
    tensor, positions, flat, prev = act.tensor, 1, None, walk.producer.get(act.tensor, walk.mw.graph.node[0])
    while True:
        node = walk.next_node(tensor, prev)
        if node is None:
            _refuse(prev, "the graph ends in an activation, not in the logits of a Conv/Gemm layer")
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            return node, flat, positions
        if node.op_type == "GlobalAveragePool" and len(act.shape) == 3 and positions == 1:
            positions = act.shape[0] * act.shape[1]
        elif node.op_type in ("Flatten", "Reshape") and len(walk.mw.get_tensor_shape(node.output[0])) == 2:
            flat = "gap" if positions > 1 else ("chw" if len(act.shape) == 3 else None)
        elif node.op_type not in _PASS:
            _refuse(node, f"ternpe maps Conv, Gemm/MatMul, BatchNormalization, Relu, MaxPool 2x2, Add (residual), "
                          f"GlobalAveragePool, Flatten and unsigned activation Quant nodes; not {node.op_type} here")
        tensor, prev = node.output[0], node


def _conv_spec(walk, node, act: _Act, name: str, cout: int) -> dict:
    a = walk.attrs(node)
    k = list(a.get("kernel_shape", []))
    strides, pads = list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0]))
    if len(act.shape) != 3:
        _refuse(node, "a Conv after a flattened layer")
    if a.get("group", 1) != 1:
        _refuse(node, f"a grouped (depthwise) convolution, group={a['group']}: the PE array runs group=1 only")
    if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        _refuse(node, "dilated or auto-padded convolutions are not supported: give explicit pads, dilation 1")
    if len(k) != 2 or k[0] != k[1] or strides[0] != strides[1] or len(set(pads)) != 1:
        _refuse(node, f"kernel {k}, strides {strides}, pads {pads}: the hardware runs square kernels with equal "
                      f"strides and the same padding on every side")
    h, w, c = act.shape
    return dict(name=name, kind="conv", cin=c, cout=cout, in_h=h, in_w=w, k=k[0], stride=strides[0], pad=pads[0])


def _layer_weights(walk, node, act: _Act, flat, positions: int, name: str):
    """``(spec fields, integer weights in torch layout, k, c)`` of the Conv/Gemm/MatMul ``node``."""
    wq = _ternary_weight(walk, node.input[1], node)
    a = walk.attrs(node)
    if node.op_type == "Conv":
        codes, scale = _codes_and_scale(wq, node)
        fields = _conv_spec(walk, node, act, name, wq.shape[0])
        bias = walk.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(wq.shape[0])
        gain = 1.0
    else:
        rows = wq.T if node.op_type == "MatMul" or (a.get("transB", 0) == 0) else wq
        if node.op_type == "Gemm" and a.get("transA", 0):
            _refuse(node, "a Gemm with transA=1")
        codes, scale = _codes_and_scale(rows, node)
        if flat == "chw":                       # ONNX flattens (c, h, w); the contract (h, w, c)
            h, w, c = act.shape
            codes = codes.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(codes.shape[0], -1)
        elif flat == "gap":
            if codes.shape[1] != act.shape[2]:
                _refuse(node, f"its weight takes {codes.shape[1]} inputs, the pooled map has {act.shape[2]} channels")
            codes = gap_fc_weights(codes, positions)
        cin = int(np.prod(act.shape)) if flat != "gap" else codes.shape[1]
        if codes.shape[1] != cin:
            _refuse(node, f"its weight takes {codes.shape[1]} inputs, the map before it has {cin}")
        fields = dict(name=name, kind="fc", cin=cin, cout=codes.shape[0])
        c3 = walk.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        bias = np.zeros(codes.shape[0]) if c3 is None else _channel_vector(c3 * a.get("beta", 1.0), codes.shape[0],
                                                                          node, "bias")
        gain = a.get("alpha", 1.0) / positions
    k = scale * act.step * gain
    return fields, codes, k, _channel_vector(bias, fields["cout"], node, "bias")


def _shortcut_source(walk, tensor: str, add, layer_inputs: dict, cout: int):
    """The earlier layer input a residual ``Add`` takes: ``(index, act, gain, "identity" | "pad")``."""
    gain, sliced, padded = np.ones(cout), False, None
    while tensor not in layer_inputs:
        p = walk.producer.get(tensor)
        if p is None:
            _refuse(add, "one side of this Add is neither a constant nor an earlier layer's input")
        consts = [walk.const(i) for i in p.input[1:]]
        if p.op_type in _PASS:
            pass
        elif p.op_type == "Mul" and consts and consts[0] is not None:
            gain = gain * _channel_vector(consts[0], cout, p, "factor")
        elif p.op_type == "Slice" and len(consts) >= 4 and list(consts[2]) == [2, 3] and list(consts[3]) == [2, 2] \
                and not np.any(consts[0]):
            sliced = True
        elif p.op_type == "Pad" and consts and consts[0] is not None:
            pads = consts[0].astype(np.int64)
            if np.any(np.delete(pads, [1, 5])):
                _refuse(p, "a shortcut may be padded in channels only")
            padded = (int(pads[1]), int(pads[5]))
        else:
            _refuse(p, "a shortcut is an earlier layer's input, through Cast, a constant Mul, a stride-2 Slice "
                       "and a channel Pad (ResNet option A) only")
        tensor = p.input[0]
    index, src = layer_inputs[tensor]
    if sliced != (padded is not None) or (padded and padded[0] != (padded[0] + padded[1]) // 2):
        _refuse(add, "a shortcut that changes shape must halve the map (Slice, steps 2) and pad the channels "
                     "equally before and after (ResNet option A)")
    return index, src, gain, "pad" if sliced else "identity"


def _affine(walk, node, tail: _Tail, tensor: str, cout: int, layer_inputs: dict):
    """Fold one node of a layer's tail into ``tail``; False when ``node`` is not an affine step."""
    op, other = node.op_type, [i for i in node.input if i != tensor]
    const = walk.const(other[0]) if len(other) == 1 else None
    if op in ("Mul", "Div", "Add", "Sub") and const is not None:
        if op == "Div" and node.input[0] != tensor:
            _refuse(node, "a constant divided by the layer's output is not an affine map")
        if tail.pool and op != "Add":
            _refuse(node, "a scaling after a MaxPool: a max commutes with the activation quantizer, not with this")
        v = _channel_vector(const, cout, node, "constant")
        if op == "Mul":
            tail.k, tail.c = tail.k * v, tail.c * v
        elif op == "Div":
            tail.k, tail.c = tail.k / v, tail.c / v
        elif op == "Add":
            tail.c = tail.c + v
        elif node.input[0] == tensor:           # x - v
            tail.c = tail.c - v
        else:                                   # v - x
            tail.k, tail.c = -tail.k, v - tail.c
    elif op == "Add" and len(other) == 1 and tail.residual is None:
        tail.residual = _shortcut_source(walk, other[0], node, layer_inputs, cout)
    elif op == "BatchNormalization":
        if tail.pool:
            _refuse(node, "a BatchNormalization after a MaxPool: pool after the activation")
        g, b, mean, var = (_channel_vector(walk.const(i), cout, node, "statistic") for i in node.input[1:5])
        s = g / np.sqrt(var + walk.attrs(node).get("epsilon", 1e-5))
        tail.k, tail.c = tail.k * s, (tail.c - mean) * s + b
    elif op == "Relu":
        tail.relu = True
    elif op == "MaxPool":
        a = walk.attrs(node)
        if list(a.get("kernel_shape", [])) != [2, 2] or list(a.get("strides", [])) != [2, 2] \
                or any(a.get("pads", [0])) or tail.pool:
            _refuse(node, "the hardware pools 2x2 with stride 2, no padding, once a layer")
        tail.pool = 2
    elif op not in _PASS:
        return False
    return True


def _act_quant(walk, node, act_bits: int):
    """``(step, floor)`` of an activation ``Quant`` ending a hidden layer."""
    a, scale, zero, bits = walk.attrs(node), *(walk.const(i) for i in node.input[1:4])
    if a.get("signed", 1):
        _refuse(node, "a signed activation quantizer: the hardware's activations are unsigned (after ReLU)")
    if scale is None or scale.size != 1 or zero is None or np.any(zero != 0) or a.get("narrow", 0):
        _refuse(node, "an activation quantizer needs one constant scale, zero point 0 and narrow=0")
    if bits is None or float(bits) != act_bits:
        _refuse(node, f"{bits if bits is None else float(bits):g}-bit activations: this hardware's requantizer "
                      f"clamps to {act_bits} bits; quantize every activation to {act_bits} bits")
    mode = _rounding_mode(a)
    if mode not in ("ROUND", "FLOOR"):
        _refuse(node, f"rounding_mode {mode}: ROUND and FLOOR map onto the requantizer")
    return float(scale.reshape(-1)[0]), mode == "FLOOR"


def _tail(walk, node, cout: int, k, c, layer_inputs: dict, act_bits: int) -> _Tail:
    """Walk from the layer ``node``'s accumulation to its activation quantizer (and pool) or the logits."""
    tail, tensor = _Tail(k=np.asarray(k, np.float64), c=np.asarray(c, np.float64)), node.output[0]
    outputs = {o.name for o in walk.mw.graph.output}
    while True:
        nxt = walk.next_node(tensor, node)
        if nxt is None or tensor in outputs:
            if tail.relu:
                _refuse(node, "the network's output passes a ReLU: the last layer gives signed logits")
            tail.out = tensor
            return tail
        if nxt.op_type in ("Quant", "IntQuant") and tail.quant_scale is None:
            tail.quant_scale, tail.floor = _act_quant(walk, nxt, act_bits)
        elif nxt.op_type == "Floor" and tail.quant_scale is None:
            tail.floor = True
        elif nxt.op_type in ("Conv", "Gemm", "MatMul", "Flatten", "Reshape", "GlobalAveragePool"):
            if tail.quant_scale is None:
                _refuse(nxt, "the layer before has no unsigned activation Quant: every hidden layer ends in one")
            tail.out = tensor
            return tail
        elif tail.quant_scale is not None and nxt.op_type not in _PASS and nxt.op_type != "MaxPool":
            _refuse(nxt, "only a Cast or a 2x2 MaxPool may follow an activation quantizer")
        elif not _affine(walk, nxt, tail, tensor, cout, layer_inputs):
            _refuse(nxt, f"{nxt.op_type} is not one of the ops ternpe folds into a layer (Mul, Div, Add, Sub by "
                         f"constants, BatchNormalization, Relu, MaxPool 2x2, Cast, Quant)")
        tensor, node = nxt.output[0], nxt


#: Said once when a graph's activation quantizer rounds half to even.
_HALF_EVEN_NOTE = ("ROUND (half to even) is folded as rounding half up: they differ only where a value falls "
                   "exactly half-way between two steps")


def _requant(spec_fields, tail: _Tail, dead, notes: list):
    """The requantizer of a layer, and the real value of one unit of its output."""
    name = spec_fields["name"]
    if tail.quant_scale is not None:
        step = tail.quant_scale
        res = None if tail.residual is None else tail.residual[2] * tail.residual[1].step / step
    else:
        step = float(np.abs(tail.k).max()) / LOGIT_RESOLUTION if not tail.floor else 1.0
        step, res = step or 1.0, None
        if tail.residual is not None:
            raise QonnxError(f"layer {name}: a residual add in the last layer (the logits)")
    if not tail.floor and tail.quant_scale is not None and _HALF_EVEN_NOTE not in notes:
        notes.append(_HALF_EVEN_NOTE)
    try:
        m = tail.k / step
        # a pruned-away filter's accumulator is always 0: its multiplier is moot, and a batch norm with
        # no variance left may make it too large to store
        m = np.where(dead & ~(np.abs(m) < 2.0 ** (MULT_BITS - 2)), 0.0, m)
        rq = requant_params(m, tail.c / step, res_real=res)
    except ContractError as e:
        raise QonnxError(f"layer {name}: {e}") from None
    if tail.floor:              # floor(x) = (x * 2**s) >> s: no half added
        rq = dataclasses.replace(rq, bias=rq.bias - np.where(rq.shift > 0, np.left_shift(1, np.maximum(rq.shift - 1, 0)), 0))
    return rq, step


def fold_qonnx(mw, *, input_scale: float | None = None, act_bits: int = 8) -> QonnxFold:
    """Fold the cleaned-up graph ``mw`` (:func:`read_qonnx`) into the integer model. ``input_scale``:
    the graph's input is ``pixel * input_scale`` (default: 1 for a graph ternpe wrote, else 1/255)."""
    meta = {p.key: p.value for p in mw.model.metadata_props}
    ours = "ternpe.logit_scale" in meta
    input_scale = (1.0 if ours else 1 / 255) if input_scale is None else float(input_scale)
    names = [n for n in meta.get("ternpe.layers", "").split(",") if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n)]
    x = mw.graph.input[0].name
    shape = mw.get_tensor_shape(x)
    if shape is None or len(shape) != 4:
        raise QonnxError(f"the graph's input {x} has shape {shape}: ternpe takes images, [N, C, H, W]")
    walk, notes = _Walk(mw), []
    act = _input_quant(walk, _Act(x, input_scale, (shape[2], shape[3], shape[1])), notes, act_bits)
    specs, weights, requants, tensors, steps, layer_inputs = [], [], [], [], [], {}
    kinds = {"conv": 0, "fc": 0}
    while True:
        layer_inputs[act.tensor] = (len(specs), act)
        node, flat, positions = _to_layer(walk, act)
        kind = "conv" if node.op_type == "Conv" else "fc"
        kinds[kind] += 1
        name = names[len(specs)] if len(names) > len(specs) else f"{kind}{kinds[kind]}"
        fields, codes, k, c = _layer_weights(walk, node, act, flat, positions, name)
        tail = _tail(walk, node, fields["cout"], k, c, layer_inputs, act_bits)
        rq, step = _requant(fields, tail, ~codes.reshape(codes.shape[0], -1).any(axis=1), notes)
        res = None if tail.residual is None else dict(residual=tail.residual[0], shortcut=tail.residual[3])
        if res and res["residual"] >= len(specs):
            _refuse(node, "the layer adds its own input: the hardware adds the input of an earlier layer "
                          "(a residual block of two convolutions, the add after the second)")
        try:
            spec = LayerSpec(**fields, pool=tail.pool, relu=tail.quant_scale is not None, **(res or {}))
        except ContractError as e:
            _refuse(node, str(e))
        specs.append(spec)
        weights.append(codes.reshape(spec.weight_shape))
        requants.append(rq)
        tensors.append(tail.out)
        steps.append(step)
        if tail.quant_scale is None:
            break
        act = _Act(tail.out, step, (spec.out_h, spec.out_w, spec.cout) if kind == "conv" else (spec.cout,))
    logit_scale = float(meta.get("ternpe.logit_scale", steps[-1]))
    return QonnxFold(IntegerModel(specs, weights, requants, act_bits, logit_scale), tensors, steps, notes, input_scale)


def run_graph(mw, x_uint8: np.ndarray, *, input_scale: float, tensors=()) -> dict:
    """Execute the cleaned-up graph ``mw`` with qonnx on images ``x_uint8`` ``[N, H, W, C]``, in
    batches of the graph's own batch size. Returns the values of ``tensors`` and of the output."""
    from qonnx.core.onnx_exec import execute_onnx
    name, out = mw.graph.input[0].name, mw.graph.output[0].name
    batch = mw.get_tensor_shape(name)[0]
    x = np.asarray(x_uint8, np.float64).transpose(0, 3, 1, 2) * input_scale
    got = {t: [] for t in (*tensors, out)}
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]))]) if len(chunk) < batch else chunk
        ctx = execute_onnx(mw, {name: padded.astype(np.float32)}, return_full_exec_context=True)
        for t in got:
            got[t].append(np.asarray(ctx[t], np.float64)[:len(chunk)])
    return {t: np.concatenate(v) for t, v in got.items()}


def as_contract_layout(values: np.ndarray, shape: tuple) -> np.ndarray:
    """A graph tensor's values (NCHW, or [N, F]) in the contract's channels-last ``shape``."""
    return (values.transpose(0, 2, 3, 1) if values.ndim == 4 else values).reshape(shape)


def agreement(mw, fold: QonnxFold, x_uint8: np.ndarray, *, input_scale: float) -> dict:
    """How the folded integer model agrees with the graph qonnx executes, layer by layer: the
    share of activations equal in integer units and the largest difference (in steps; for the
    logits also against their largest magnitude), and the share of equal classes."""
    outs = fold.model.run(x_uint8)
    ran = run_graph(mw, x_uint8, input_scale=input_scale, tensors=fold.layer_tensors)
    layers = []
    for spec, t, step, mine in zip(fold.model.specs, fold.layer_tensors, fold.layer_steps, outs, strict=True):
        theirs = as_contract_layout(ran[t] / step, mine.shape)
        diff = np.abs(theirs - mine)
        exact = np.rint(theirs) == mine if spec.relu else diff == 0
        row = {"layer": spec.name, "equal": float(exact.mean()), "max_diff_steps": float(diff.max(initial=0))}
        if not spec.relu:           # real-valued logits: the difference against their range
            row["max_rel_diff"] = float(diff.max(initial=0) / max(np.abs(mine).max(initial=0), 1))
        layers.append(row)
    classes = np.argmax(ran[mw.graph.output[0].name], axis=1)
    return {"samples": int(len(x_uint8)), "layers": layers,
            "classes_equal": float(np.mean(classes == np.argmax(outs[-1], axis=1)))}
