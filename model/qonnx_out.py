"""The integer model as a QONNX graph that ``qonnx`` executes to the same integers.

Every layer is written in integer units, so the graph is exact in the arithmetic ONNX runs:

* the ternary weights are ``Quant`` nodes (2 bits, signed, narrow, scale 1) over their codes, as
  FINN, hls4ml and Brevitas write a ternary weight;
* the accumulation is a float32 ``Conv``/``Gemm`` of integers, exact while every partial sum has
  fewer than 24 bits (:func:`ternpe.contract.accumulator_bits`; a wider layer is refused);
* the requantizer ``(acc * mult + bias [+ sc * res_mult]) >> shift`` is ``Cast`` to double,
  ``Mul`` by ``mult / 2**shift``, ``Add`` of ``bias / 2**shift`` (and of the shortcut times
  ``res_mult / 2**shift``): every product and sum is an integer over ``2**shift`` below 2**53,
  so double arithmetic is exact; then an unsigned ``Quant`` of ``act_bits`` with
  ``rounding_mode=FLOOR`` (the shift, the ReLU and the clamp), or ``Floor`` for the logits;
* a max-pool is ``MaxPool`` 2x2; an fc layer after a map is ``Flatten`` + ``Gemm``, its
  columns put in ONNX's ``(c, h, w)`` order (the contract flattens ``(h, w, c)``).

The graph's input is the image's pixel bytes as float32 ``[N, C, H, W]``; its output the
integer logits (double), in units of ``logit_scale`` (``metadata_props``). :mod:`.qonnx_in` reads such a
graph back to the same integer model.
"""

from __future__ import annotations

import numpy as np

from ternpe.contract import ContractError, accumulator_bits

__all__ = ["integer_model_to_qonnx", "QONNX_DOMAIN", "FLOAT32_EXACT_BITS"]

QONNX_DOMAIN = "qonnx.custom_op.general"
#: Integers float32 holds exactly: a Conv/Gemm accumulator must stay below this many bits.
FLOAT32_EXACT_BITS = 24


class _Graph:
    """Nodes and initializers of the graph being written, with fresh tensor names."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.inputs = []            # each layer's input tensor, in order (a residual layer's shortcut)

    def const(self, name, value, dtype=np.float32):
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op, inputs, output, domain="", name=None, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name or f"{op}_{output}", domain=domain,
                                                **attrs))
        return output

    def quant(self, x, out, bits, *, signed, narrow, rounding):
        scale, zero, bw = (self.const(f"{out}_{k}", v) for k, v in (("scale", 1.0), ("zeropt", 0.0), ("bitwidth", bits)))
        return self.node("Quant", [x, scale, zero, bw], out, domain=QONNX_DOMAIN, signed=int(signed),
                         narrow=int(narrow), rounding_mode=rounding)


def _channels(v, conv: bool):
    v = np.asarray(v, np.float64)
    return v.reshape(1, -1, 1, 1) if conv else v.reshape(1, -1)


def _fc_columns_chw(w, shape):
    """An fc's ``(h, w, c)``-ordered columns in ONNX ``Flatten``'s ``(c, h, w)`` order."""
    h, wd, c = shape
    return np.asarray(w).reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)


def _shortcut(g, spec, i, shapes):
    """The shortcut map residual layer ``i`` adds, as double: its source layer's input as is, or
    (``pad``, ResNet option A) every second row and column with the channels zero-padded."""
    src = g.inputs[spec.residual]
    if spec.shortcut == "pad":
        big = np.iinfo(np.int64).max
        src = g.node("Slice", [src, g.const(f"sl{i}_s", [0, 0], np.int64), g.const(f"sl{i}_e", [big, big], np.int64),
                               g.const(f"sl{i}_a", [2, 3], np.int64), g.const(f"sl{i}_t", [2, 2], np.int64)], f"sub{i}")
    sc = g.node("Cast", [src], f"scd{i}", to=11)
    if spec.shortcut == "pad":
        channels = shapes[spec.residual][2]
        extra, off = spec.cout - channels, spec.shortcut_offset(channels)
        sc = g.node("Pad", [sc, g.const(f"pad{i}", [0, off, 0, 0, 0, extra - off, 0, 0], np.int64)], f"scp{i}")
    return sc


def _layer(g, i, spec, w, rq, a, shapes, act_bits):
    """Write layer ``i`` reading activation ``a``; return its output tensor's name."""
    conv = spec.kind == "conv"
    acc_bits = accumulator_bits(spec, act_bits)
    if acc_bits >= FLOAT32_EXACT_BITS:
        raise ContractError(f"layer {spec.name}: {acc_bits}-bit accumulators are not exact in a float32 "
                            f"{'Conv' if conv else 'Gemm'} (at most {FLOAT32_EXACT_BITS - 1} bits)")
    w = np.asarray(w, np.int64)
    if not conv and len(shapes[i]) == 3:
        a = g.node("Flatten", [a], f"flat{i}", axis=1)
        w = _fc_columns_chw(w, shapes[i])
    wq = g.quant(g.const(f"w{i}_codes", w), f"w{i}", 2, signed=True, narrow=True, rounding="ROUND")
    if conv:
        acc = g.node("Conv", [a, wq], f"acc{i}", name=spec.name, kernel_shape=[spec.k, spec.k], strides=[spec.stride] * 2,
                     pads=[spec.pad] * 4)
    else:
        acc = g.node("Gemm", [a, wq], f"acc{i}", name=spec.name, transB=1)
    scale = np.ldexp(1.0, -np.asarray(rq.shift, np.int64))
    v = g.node("Cast", [acc], f"accd{i}", to=11)                     # 11: DOUBLE
    v = g.node("Mul", [v, g.const(f"m{i}", _channels(rq.mult * scale, conv), np.float64)], f"mul{i}")
    v = g.node("Add", [v, g.const(f"b{i}", _channels(rq.bias * scale, conv), np.float64)], f"v{i}")
    if spec.residual is not None:
        sc = g.node("Mul", [_shortcut(g, spec, i, shapes), g.const(f"r{i}", _channels(rq.res_mult * scale, True), np.float64)], f"scm{i}")
        v = g.node("Add", [v, sc], f"vr{i}")
    if not spec.relu:
        return g.node("Floor", [v], "logits")           # double: logits may pass float32's 24 bits
    q = g.quant(v, f"q{i}", act_bits, signed=False, narrow=False, rounding="FLOOR")
    if not spec.pool:
        return g.node("Cast", [q], f"a{i + 1}", to=1)
    return g.node("MaxPool", [g.node("Cast", [q], f"r{i}", to=1)], f"a{i + 1}", kernel_shape=[2, 2], strides=[2, 2])


def integer_model_to_qonnx(specs, weights, requants, *, act_bits: int, input_shape, logit_scale: float,
                           batch: int = 1, name: str = "ternpe"):
    """A QONNX ``ModelProto`` computing the integer model ``(specs, weights, requants)`` exactly.
    ``input_shape`` is ``(H, W, C)`` of one image; ``batch`` the images a run takes (FINN's
    flow takes 1)."""
    import onnx
    from onnx import TensorProto, helper
    g = _Graph()
    h, wd, c = input_shape
    shapes = [(h, wd, c)] + [(s.out_h, s.out_w, s.cout) if s.kind == "conv" else (s.cout,) for s in specs]
    a = "pixels"
    for i, (spec, w, rq) in enumerate(zip(specs, weights, requants, strict=True)):
        g.inputs.append(a)
        a = _layer(g, i, spec, w, rq, a, shapes, act_bits)
    graph = helper.make_graph(
        g.nodes, name, [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, c, h, wd])],
        [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, [batch, specs[-1].cout])], g.inits)
    model = helper.make_model(graph, producer_name="ternpe", opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    helper.set_model_props(model, {"ternpe.logit_scale": repr(float(logit_scale)),
                                   "ternpe.act_bits": str(act_bits),
                                   "ternpe.layers": ",".join(s.name for s in specs),
                                   "ternpe.input": "pixel bytes 0..255 as float32, NCHW",
                                   "ternpe.output": "integer logits; times ternpe.logit_scale for real logits"})
    onnx.checker.check_model(model)
    return model
