"""The host link end to end: the host runtime against the board's logic (UART, link, accelerator)
in amaranth.sim, bit by bit on the serial lines; and a seeded fuzz of noisy, truncated, padded
and back-to-back frames in which every answer the host returns must be the golden one."""

import numpy as np
import pytest

from ternpe.flow.host import Board, evaluate
from ternpe.hw.plan import plan_accelerator
from ternpe.flow.simboard import SimTransport, fuzz_link
from ternpe.image import load_export
from ternpe.link import (CMD_INFER, REQ_MAGIC, SEQ_UNKNOWN, STATUS_BUSY, STATUS_CHECKSUM, STATUS_COMMAND, STATUS_OK,
                         STATUS_TIMEOUT, LinkError, ReplyParser, checksum, decode_reply, encode_infer, encode_info,
                         export_id, reply_length)


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def board(quick_run):
    ex = load_export(quick_run["export"])
    t = SimTransport(plan_accelerator(ex), divisor=4, timeout_cycles=3000)
    return ex, t, Board(t, t.core.link.format)


def _status_reply(t):
    rep = t.read(5)
    assert rep[:2] == b"tp" and sum(rep[2:]) & 0xFF == 0
    return rep[2], rep[3]


def test_host_gets_the_golden_classes(board):
    ex, t, b = board
    info = b.check()
    assert info == {"export_id": export_id(ex.manifest), "input_bytes": int(ex.golden["inputs"][0].size),
                    "classes": ex.layers[-1].spec.cout, "logit_bytes": t.core.link.format.logit_bytes, "images": 1}
    for k in range(3):
        r = b.infer(ex.golden["inputs"][k])
        assert r["logits"] == [int(v) for v in ex.golden["logits"][k]]
        assert r["class"] == int(ex.golden["classes"][k])
        assert r["cycles"] > 0


def test_errors_are_answered_with_their_seq_and_the_link_recovers(board):
    ex, t, b = board
    img = ex.golden["inputs"][0].reshape(-1)
    t.write(b"\x00\xffTTx")                    # garbage before a request is ignored
    req = bytearray(encode_infer(img, seq=7))
    req[-1] ^= 0x5A                             # a wrong checksum
    t.write(bytes(req))
    assert _status_reply(t) == (STATUS_CHECKSUM, 7)
    t.quiet()
    body = bytes([9, 0x7E])                     # an unknown command
    t.write(REQ_MAGIC + body + bytes([checksum(body)]))
    assert _status_reply(t) == (STATUS_COMMAND, 9)
    t.quiet()
    t.write(encode_infer(img, seq=11)[:20])     # a request that stops half-way: a timeout, not a hang
    assert _status_reply(t) == (STATUS_TIMEOUT, 11)
    t.quiet()
    t.write(b"TP")                              # one that stops before its SEQ
    assert _status_reply(t) == (STATUS_TIMEOUT, SEQ_UNKNOWN)
    t.quiet()
    r = b.infer(ex.golden["inputs"][1])
    assert r["logits"] == [int(v) for v in ex.golden["logits"][1]]


def test_a_request_during_a_reply_is_answered_busy(board):
    ex, t, b = board
    a, c = (ex.golden["inputs"][k].reshape(-1) for k in (0, 1))
    t.write(encode_infer(a, seq=20) + encode_infer(c, seq=21))     # back to back, no wait
    fmt = t.core.link.format
    got = t.read(reply_length(fmt, CMD_INFER) + 5)
    [first] = decode_reply(got[:reply_length(fmt, CMD_INFER)], fmt, CMD_INFER)
    assert got[3] == 20 and first["logits"] == [int(v) for v in ex.golden["logits"][0]]
    busy = got[reply_length(fmt, CMD_INFER):]
    assert busy[:4] == bytes([ord("t"), ord("p"), STATUS_BUSY, 21]) and sum(busy[2:]) & 0xFF == 0
    t.quiet()
    assert b.infer(c)["logits"] == [int(v) for v in ex.golden["logits"][1]]


def test_a_stray_byte_after_a_request_changes_no_answer(board):
    """The issue's case: a good request, then one stray 'T'; the next requests get their own answers."""
    ex, t, b = board
    assert b.infer(ex.golden["inputs"][0])["logits"] == [int(v) for v in ex.golden["logits"][0]]
    t.write(b"T")
    for k in (1, 2, 3):
        assert b.infer(ex.golden["inputs"][k])["logits"] == [int(v) for v in ex.golden["logits"][k]]


def test_reply_parser_resynchronises_and_skips_stale_replies():
    from ternpe.link import LinkFormat
    fmt = LinkFormat(input_bytes=4, classes=3, logit_bytes=2, export_id=1)
    body = bytes([STATUS_OK, 5]) + bytes(range(3 * 2 + 5))
    good = b"tp" + body + bytes([checksum(body)])
    stale_body = bytes([STATUS_OK, 4]) + bytes(3 * 2 + 5)
    stale = b"tp" + stale_body + bytes([checksum(stale_body)])
    p = ReplyParser(fmt, {5: CMD_INFER, 4: CMD_INFER}.get)
    stream = b"\x00tpx" + b"tp\x00" + stale + b"\xff" + good
    frames = []
    for i in range(len(stream)):                    # byte by byte: frames split anywhere
        frames += p.feed(stream[i:i + 1])
    assert [(s, q) for s, q, _ in frames] == [(STATUS_OK, 4), (STATUS_OK, 5)]
    assert decode_reply(frames[1][2], fmt, CMD_INFER)[0]["logits"] == [256, 770, 1284]
    noisy = bytearray(good)
    noisy[6] ^= 0x10
    assert ReplyParser(fmt, {5: CMD_INFER}.get).feed(bytes(noisy)) == []


def test_link_fuzz_never_gives_a_wrong_answer(tmp_path):
    """Seeded fuzz on a tiny random network (short frames); bench/linkfuzz.py runs it at length."""
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "e", shape=(4, 4, 1), layers="c16,fc4", density=0.7, samples=8, seed=5)
    t = SimTransport(plan_accelerator(ex), divisor=2, timeout_cycles=400)
    b = Board(t, t.core.link.format)
    counts = fuzz_link(ex, t, b, frames=60, seed=1)
    assert counts["wrong"] == 0, counts
    assert counts["ok"] >= 55, counts          # retries recover nearly every exchange
    assert b.stats["retries"] > 0, "the fuzz must actually break exchanges"


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def lanes_board(tmp_path_factory):
    """A board with two image lanes running a tiny random network (the fuzz's)."""
    from ternpe.hw.plan import AcceleratorOptions
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path_factory.mktemp("lanes") / "e", shape=(4, 4, 1), layers="c16,fc4", density=0.7,
                       samples=8, seed=5)
    t = SimTransport(plan_accelerator(ex, AcceleratorOptions(images=2)), divisor=2, timeout_cycles=400)
    return ex, t, Board(t, t.core.link.format)


def _golden(ex, k) -> dict:
    return {"logits": [int(v) for v in ex.golden["logits"][k]], "class": int(ex.golden["classes"][k])}


def test_a_board_with_image_lanes_answers_batches(lanes_board):
    """INFO says 2 images; a request of 2 images gets both golden results and the batch's cycles
    (the cycle model's); a single image is sent with a blank one; evaluate over 3 images pads the
    second batch."""
    ex, t, b = lanes_board
    assert b.check() == {**b.fmt.info(), "images": 2, "input_bytes": 16}
    rs = b.infer_batch([ex.golden["inputs"][3], ex.golden["inputs"][4]])
    assert [{k: r[k] for k in ("logits", "class")} for r in rs] == [_golden(ex, 3), _golden(ex, 4)]
    assert rs[0]["cycles"] == rs[1]["cycles"] == t.core.link.plan.cycles["total"]
    r = b.infer(ex.golden["inputs"][5])
    assert {k: r[k] for k in ("logits", "class")} == _golden(ex, 5)
    ev = evaluate(b, ex.golden["inputs"][:3], ex.golden["classes"][:3], ex.golden["logits"][:3])
    assert ev["disagreements"] == [] and ev["errors"] == [], ev
    assert ev["board_classes"] == [int(c) for c in ex.golden["classes"][:3]] and ev["accuracy"] == 1.0
    assert b.stats == {"requests": 5, "retries": 0, "skipped": 0}
    with pytest.raises(ValueError, match="a batch holds 1 to 2 image"):
        b.infer_batch([ex.golden["inputs"][0]] * 3)


def test_a_batch_broken_in_its_second_image_times_out_and_the_link_recovers(lanes_board):
    ex, t, b = lanes_board
    req = encode_infer([ex.golden["inputs"][0], ex.golden["inputs"][1]], seq=30)
    t.write(req[:4 + 16 + 5])                   # the first image and 5 bytes of the second
    assert _status_reply(t) == (STATUS_TIMEOUT, 30)
    t.quiet()
    t.write(encode_infer(ex.golden["inputs"][0], seq=31))   # one image: its checksum is taken as a pixel
    assert _status_reply(t) == (STATUS_TIMEOUT, 31)
    t.quiet()
    rs = b.infer_batch([ex.golden["inputs"][6], ex.golden["inputs"][7]])
    assert [{k: r[k] for k in ("logits", "class")} for r in rs] == [_golden(ex, 6), _golden(ex, 7)]


def test_link_fuzz_with_image_lanes_never_gives_a_wrong_answer(lanes_board):
    ex, t, b = lanes_board
    counts = fuzz_link(ex, t, b, frames=12, seed=2)
    assert counts["wrong"] == 0 and counts["ok"] >= 10, counts


def test_host_refuses_a_board_of_another_batch_size(lanes_board):
    import dataclasses
    ex, t, b = lanes_board
    with pytest.raises(LinkError, match="batches of 2 image.*not 1"):
        Board(t, dataclasses.replace(b.fmt, images=1)).check()


def test_host_refuses_bad_input_and_bad_replies(board):
    ex, t, b = board
    with pytest.raises(ValueError, match="takes .* input bytes"):
        b.infer(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="SEQ is 0..254"):
        encode_info(seq=255)
    fmt = t.core.link.format
    with pytest.raises(LinkError, match="checksum"):
        body = bytes([0, 3] + [1] * (fmt.classes * fmt.logit_bytes + 5))
        decode_reply(b"tp" + body + bytes([checksum(body) ^ 1]), fmt, CMD_INFER)
    with pytest.raises(LinkError, match="no reply"):
        t.read_some(timeout=500)


class _ScriptedPort:
    """A serial port that answers each request with the next scripted reply (given the SEQ)."""

    def __init__(self, replies):
        self.replies, self.sent = list(replies), []

    def write(self, data):
        self.sent.append(bytes(data))

    def read_some(self, timeout=None):
        seq = self.sent[-1][2]
        return self.replies.pop(0)(seq)

    def discard_input(self):
        pass

    def quiet(self):
        pass


def _reply(status, seq, payload=b""):
    body = bytes([status, seq]) + payload
    return b"tp" + body + bytes([-sum(body) & 0xFF])


def test_an_unknown_command_reply_to_our_seq_is_retried():
    """The host sends only known commands: 'unknown command' to its own SEQ is a command byte
    broken on the line, retried like a bad checksum (then the good answer is returned)."""
    from ternpe.link import STATUS_COMMAND, LinkFormat, pack_info
    fmt = LinkFormat(input_bytes=4, classes=3, logit_bytes=2, export_id=0x12345678)
    info = pack_info(fmt.info())
    port = _ScriptedPort([lambda seq: _reply(STATUS_COMMAND, seq), lambda seq: _reply(0, seq, info)])
    b = Board(port, fmt)
    assert b.info()["export_id"] == 0x12345678
    assert b.stats["retries"] == 1 and len(port.sent) == 2 and port.sent[0][2] != port.sent[1][2]
    port = _ScriptedPort([lambda seq: _reply(STATUS_COMMAND, seq)] * 4)
    with pytest.raises(LinkError, match="no valid reply after 4 attempts.*does not know the command"):
        Board(port, fmt).info()


def test_run_length_coded_and_plain_requests_give_the_same_results(board):
    from ternpe.link import CMD_INFER_RLE, rle_encode
    ex, t, b = board
    img = ex.golden["inputs"][1]
    coded, plain = encode_infer(img, seq=40, rle=True), encode_infer(img, seq=41)
    assert coded[3] == CMD_INFER_RLE
    assert coded[4:-1] == rle_encode(bytes(img.reshape(-1).tolist()))
    want = [int(v) for v in ex.golden["logits"][1]]
    for frame, seq in ((coded, 40), (plain, 41)):
        t.write(frame)
        [r] = decode_reply(t.read(reply_length(t.core.link.format, CMD_INFER)), t.core.link.format, CMD_INFER)
        assert r["logits"] == want and r["class"] == int(ex.golden["classes"][1])
    bad = bytearray(coded)
    bad[-1] ^= 0x11                                 # a coded request's checksum covers its coded bytes
    t.write(bytes(bad))
    assert _status_reply(t) == (STATUS_CHECKSUM, 40)
    t.quiet()


def test_host_falls_back_to_plain_requests_for_a_board_without_run_length_coding(board):
    # a board built before CMD_INFER_RLE answers it "unknown command": stand one in by turning the
    # command byte of every coded request into one the board does not know
    from ternpe.link import CMD_INFER_RLE
    ex, t, _ = board

    class OldBoard:
        def __init__(self, inner):
            self.inner, self.coded = inner, 0

        def write(self, data):
            data = bytearray(data)
            if data[:2] == REQ_MAGIC and len(data) > 4 and data[3] == CMD_INFER_RLE:
                self.coded += 1
                data[3] = 0x7E
                data[-1] = checksum(bytes(data[2:-1]))
            self.inner.write(bytes(data))

        def __getattr__(self, name):
            return getattr(self.inner, name)
    old = OldBoard(t)
    b = Board(old, t.core.link.format, retries=1)
    r = b.infer(ex.golden["inputs"][2])
    assert r["logits"] == [int(v) for v in ex.golden["logits"][2]] and not b.rle
    assert old.coded == 2                           # tried coded (and retried), then plain from then on
    b.infer(ex.golden["inputs"][0])
    assert old.coded == 2


def test_run_length_coding_takes_mnist_to_a_third_of_the_line():
    import random
    from ternpe.link import rle_decode, rle_encode
    from ternpe.model.data import load_dataset
    ds = load_dataset("mnist")
    x = ds.x_test
    rng = random.Random(0)
    sizes = []
    for _ in range(50):                         # the built-in sample's test images as the board takes them
        img = bytes(np.asarray(x[rng.randrange(len(x))], np.uint8).reshape(-1).tolist())
        assert rle_decode(rle_encode(img)) == img
        sizes.append(len(rle_encode(img)) / len(img))
    assert sum(sizes) / len(sizes) < 0.45
    for data in (b"", bytes(1), b"\x01" * 5, bytes(64) + b"\x07" + bytes(31)):
        assert rle_decode(rle_encode(data)) == data
    assert rle_encode(bytes(33)) == b"\x00\x20\x00\x01"      # a run is 32 zeros at most


def test_a_malformed_coded_request_is_answered_and_the_link_recovers(board):
    from ternpe.link import CMD_INFER_RLE
    ex, t, b = board
    n = int(ex.golden["inputs"][0].size)
    # an empty run, then runs of zeros past the image's end: the board stops at the image's last
    # byte and takes the next as the checksum
    payload = b"\x00\x00" + b"\x07" + b"\x00\x20" * (n // 32 + 2)
    body = bytes([50, CMD_INFER_RLE]) + payload
    t.write(REQ_MAGIC + body + bytes([checksum(body)]))
    assert _status_reply(t) == (STATUS_CHECKSUM, 50)
    t.quiet()
    r = b.infer(ex.golden["inputs"][0])
    assert r["logits"] == [int(v) for v in ex.golden["logits"][0]]
