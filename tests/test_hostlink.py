"""The host link end to end: the host runtime against the board's logic (UART, link, accelerator)
in amaranth.sim, bit by bit on the serial lines."""

import numpy as np
import pytest

from ternpe.host import Board
from ternpe.flow.simboard import SimTransport
from ternpe.image import load_export
from ternpe.link import (CMD_INFER, REQ_MAGIC, STATUS_CHECKSUM, STATUS_COMMAND, STATUS_TIMEOUT, LinkError,
                         checksum, decode_reply, encode_infer, export_id)


@pytest.fixture(scope="module")
def board(quick_run):
    ex = load_export(quick_run["export"])
    t = SimTransport(ex, divisor=4, timeout_cycles=3000)
    return ex, t, Board(t, t.core.link.format)


def _status_reply(t):
    rep = t.read(4)
    assert rep[:2] == b"tp" and sum(rep[2:]) & 0xFF == 0
    return rep[2]


def test_host_gets_the_golden_classes(board):
    ex, t, b = board
    info = b.check()
    assert info == {"export_id": export_id(ex.manifest), "input_bytes": int(ex.golden["inputs"][0].size),
                    "classes": ex.layers[-1].spec.cout, "logit_bytes": t.core.link.format.logit_bytes}
    for k in range(3):
        r = b.infer(ex.golden["inputs"][k])
        assert r["logits"] == [int(v) for v in ex.golden["logits"][k]]
        assert r["class"] == int(ex.golden["classes"][k])
        assert r["cycles"] > 0


def test_errors_are_answered_and_the_link_recovers(board):
    ex, t, b = board
    img = ex.golden["inputs"][0]
    # garbage before a request is ignored
    t.write(b"\x00\xffTTx")
    # a wrong checksum
    req = bytearray(encode_infer(img.reshape(-1)))
    req[-1] ^= 0x5A
    t.write(bytes(req))
    assert _status_reply(t) == STATUS_CHECKSUM
    # an unknown command
    t.write(REQ_MAGIC + bytes([0x7E]))
    assert _status_reply(t) == STATUS_COMMAND
    # a request that stops half-way: the board times out instead of hanging
    t.write(encode_infer(img.reshape(-1))[:20])
    assert _status_reply(t) == STATUS_TIMEOUT
    # and the next inference is exact
    r = b.infer(ex.golden["inputs"][1])
    assert r["logits"] == [int(v) for v in ex.golden["logits"][1]]


def test_host_refuses_bad_input_and_bad_replies(board):
    ex, t, b = board
    with pytest.raises(ValueError, match="takes .* input bytes"):
        b.infer(np.zeros(3, np.uint8))
    fmt = t.core.link.format
    with pytest.raises(LinkError, match="checksum"):
        body = bytes([0] + [1] * (fmt.classes * fmt.logit_bytes + 5))
        decode_reply(b"tp" + body + bytes([checksum(body) ^ 1]), fmt, CMD_INFER)
    with pytest.raises(LinkError, match="no reply"):
        t.read(1, timeout=500)
