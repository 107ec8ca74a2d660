"""The parts of the host link (hw/linkparts.py), each against ternpe.link, the protocol's software
side: the request parser (requests, broken ones, timeouts to the cycle, the flush), the header
spotter, the reply framer with the INFO and the result bodies (decoded by decode_reply)."""

import dataclasses
import random

import pytest
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib import wiring
from amaranth.sim import Simulator

from ternpe.hw.linkparts import HeaderSpotter, InfoSerializer, ReplyFramer, RequestParser, ResultSerializer
from ternpe.link import (CMD_INFER, CMD_INFO, SEQ_UNKNOWN, STATUS_BUSY, STATUS_CHECKSUM, STATUS_COMMAND, STATUS_OK,
                         STATUS_TIMEOUT, LinkFormat, checksum, decode_reply, encode_infer, encode_info, pack_info,
                         reply_length)

TIMEOUT, QUIET, INPUT_BYTES = 20, 12, 3


def _simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _parse(items, *, flush_at=(), data_ready=lambda cycle: 1, tail=3 * TIMEOUT, images=1):
    """Feed ``(byte, idle cycles before it)`` to a RequestParser of ``images`` images a request;
    ``flush`` is raised at the cycles in ``flush_at``. Returns the requests (status, seq, cmd,
    abort, cycle), the image bytes given out, the cycle each byte was taken at and the cycles
    the parser was busy."""
    dut = RequestParser(input_bytes=INPUT_BYTES, images=images, timeout_cycles=TIMEOUT, quiet_cycles=QUIET)
    out = {"requests": [], "data": [], "taken": [], "busy": set()}

    async def bench(ctx):
        cycle = 0

        async def step():
            nonlocal cycle
            ctx.set(dut.flush, cycle in flush_at)
            ctx.set(dut.data.ready, data_ready(cycle))
            took = ctx.get(dut.rx.valid) and ctx.get(dut.rx.ready)
            if ctx.get(dut.request.valid):
                p = ctx.get(dut.request.payload)
                out["requests"].append((p.status, p.seq, p.cmd, ctx.get(dut.abort), cycle))
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                out["data"].append(ctx.get(dut.data.payload))
            if ctx.get(dut.busy):
                out["busy"].add(cycle)
            if took:
                out["taken"].append(cycle)
            await ctx.tick()
            cycle += 1
            return took

        for byte, idle in items:
            for _ in range(idle):
                await step()
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, byte)
            while not await step():
                pass
            ctx.set(dut.rx.valid, 0)
        for _ in range(tail):
            await step()
    _simulate(dut, bench)
    return out


def _bytes(data: bytes, idle: int = 0):
    return [(b, idle) for b in data]


def test_parser_takes_requests_and_drops_what_comes_before_them():
    image = [7, 200, 0]
    out = _parse(_bytes(b"\x00TxTT" + encode_infer(image, seq=5) + b"P" + encode_info(seq=6), idle=1))
    assert [r[:4] for r in out["requests"]] == [(STATUS_OK, 5, CMD_INFER, 0), (STATUS_OK, 6, CMD_INFO, 0)]
    assert out["data"] == image
    # each request comes out two cycles after its checksum byte is taken (the byte and the end registered)
    assert [r[4] for r in out["requests"]] == [out["taken"][12] + 2, out["taken"][-1] + 2]


def test_parser_takes_a_batch_of_images_and_times_out_inside_the_second():
    batch = [7, 200, 0, 1, 2, 3]                # two images of INPUT_BYTES
    out = _parse(_bytes(encode_infer(batch, seq=5) + encode_info(seq=6), idle=1), images=2)
    assert [r[:4] for r in out["requests"]] == [(STATUS_OK, 5, CMD_INFER, 0), (STATUS_OK, 6, CMD_INFO, 0)]
    assert out["data"] == batch
    assert out["requests"][0][4] == out["taken"][4 + 6] + 2
    # one image's bytes and its checksum are not a request of two: the parser waits, then times out
    out = _parse(_bytes(encode_infer(batch[:3], seq=8)), images=2)
    assert [(s, q, a) for s, q, _, a, _ in out["requests"]] == [(STATUS_TIMEOUT, 8, 1)]
    assert out["requests"][0][4] == out["taken"][-1] + TIMEOUT + 3


def test_parser_answers_broken_requests_and_asks_to_drop_the_image():
    bad = bytearray(encode_infer([1, 2, 3], seq=7))
    bad[-1] ^= 0x5A
    body = bytes([9, 0x7E])
    out = _parse(_bytes(bytes(bad)) + _bytes(b"TP" + body + bytes([checksum(body)])))
    assert [(s, q, a) for s, q, _, a, _ in out["requests"]] == [(STATUS_CHECKSUM, 7, 1), (STATUS_COMMAND, 9, 0)]
    assert out["data"] == [1, 2, 3]


@pytest.mark.parametrize("sent", [1, 2, 5])
def test_parser_gives_a_request_up_timeout_cycles_after_its_last_byte(sent):
    """"T" alone, "TP" (no SEQ yet: SEQ_UNKNOWN), and a request broken off in its image."""
    frame = encode_infer([4, 5, 6], seq=11)[:sent]
    out = _parse(_bytes(frame, idle=3))
    seq = 11 if sent > 2 else SEQ_UNKNOWN
    assert [(s, q, a) for s, q, _, a, _ in out["requests"]] == [(STATUS_TIMEOUT, seq, 1)]
    assert out["requests"][0][4] == out["taken"][-1] + TIMEOUT + 3      # the byte, the end registered
    assert out["data"] == list(frame[4:])


def test_parser_waits_on_a_full_image_buffer_without_timing_out():
    # the first image byte is taken at cycle 14 and offered at 15; the buffer takes it just before
    # the timeout, and the second byte is taken the cycle after
    image = [10, 20, 30]
    stalled = range(15, 14 + TIMEOUT - 1)
    out = _parse(_bytes(encode_infer(image, seq=1), idle=2), data_ready=lambda c: c not in stalled)
    assert out["taken"][4:6] == [14, 14 + TIMEOUT]
    assert [r[:4] for r in out["requests"]] == [(STATUS_OK, 1, CMD_INFER, 0)]
    assert out["data"] == image
    # a cycle longer, and the request is given up with its byte still waiting in the parser
    longer = range(15, 14 + TIMEOUT)
    out = _parse(_bytes(encode_infer(image, seq=1), idle=2), data_ready=lambda c: c not in longer)
    assert [(s, q, a) for s, q, _, a, _ in out["requests"]] == [(STATUS_TIMEOUT, 1, 1)]
    assert out["data"] == []


def test_flush_drops_bytes_until_the_line_is_quiet():
    # flushed at cycle 0: a request whose bytes come closer than QUIET is dropped whole, and
    # the parser is busy until QUIET cycles after its last byte; the request after that is taken
    dropped = _bytes(encode_info(seq=3), idle=QUIET - 2)
    out = _parse(dropped + [(b, QUIET + 2 if i == 0 else 0) for i, b in enumerate(encode_info(seq=4))],
                 flush_at={0})
    assert [r[:4] for r in out["requests"]] == [(STATUS_OK, 4, CMD_INFO, 0)]
    last_dropped = out["taken"][len(dropped) - 1]
    assert set(range(1, last_dropped + QUIET + 1)) <= out["busy"]
    assert last_dropped + QUIET + 1 not in out["busy"]


def test_parser_parameters_are_checked():
    with pytest.raises(ValueError, match="input_bytes must be at least 1, not 0"):
        RequestParser(input_bytes=0, timeout_cycles=5, quiet_cycles=5)
    with pytest.raises(ValueError, match="quiet_cycles must be at least 1, not -2"):
        RequestParser(input_bytes=4, timeout_cycles=5, quiet_cycles=-2)
    with pytest.raises(ValueError, match="images must be at least 1, not 0"):
        RequestParser(input_bytes=4, images=0, timeout_cycles=5, quiet_cycles=5)
    with pytest.raises(ValueError, match="images must be at least 1, not 0"):
        ResultSerializer(classes=3, logit_bytes=1, word_shape=signed(8), images=0)
    with pytest.raises(ValueError, match="INFO field images has 8 bits: 256 does not fit"):
        LinkFormat(input_bytes=4, classes=3, logit_bytes=1, export_id=0, images=256)
    with pytest.raises(ValueError, match="does not fit in 1 logit byte"):
        ResultSerializer(classes=3, logit_bytes=1, word_shape=signed(9))


def test_spotter_finds_one_header_at_a_time_and_forgets_a_partial_one():
    dut = HeaderSpotter()
    found = []

    async def bench(ctx):
        async def feed(data, clear_after=False):
            for b in data:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            ctx.set(dut.clear, clear_after)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            if ctx.get(dut.found.valid):
                found.append(ctx.get(dut.found.payload))
                ctx.set(dut.found.ready, 1)
                await ctx.tick()
                ctx.set(dut.found.ready, 0)

        await feed(b"xTTP\x07TP\x09")        # the second header is not looked for while the first waits
        await feed(b"PTTP\x21")
        await feed(b"T", clear_after=True)     # the reply is over: a "T" seen is forgotten
        await feed(b"P\x30")
        await feed(b"TxP\x31TP")              # a header split over two replies is found
        await feed(b"\x32")
    _simulate(dut, bench)
    assert found == [0x07, 0x21, 0x32]


class _Replier(Elaboratable):
    """A framer and its body: the INFO struct of ``fmt``, or a result from the testbench."""

    def __init__(self, fmt, *, info):
        self.framer, self.fmt, self.info = ReplyFramer(), fmt, info
        self.source = (InfoSerializer(fmt) if info else
                       ResultSerializer(classes=fmt.classes, logit_bytes=fmt.logit_bytes,
                                        word_shape=signed(8 * fmt.logit_bytes - 2), images=fmt.images))

    def elaborate(self, platform):
        m = Module()
        m.submodules.framer, m.submodules.source = self.framer, self.source
        wiring.connect(m, self.source.body, self.framer.body)
        if not self.info:
            m.d.comb += self.source.en.eq(self.framer.body_open)
        return m


def _reply(fmt, header, *, info=True, words=(), cycles=0, seed=0):
    """What the framer sends for ``header`` (status, seq), the tx side ready at random; and the
    cycles the framer said ``done``, and whether a word was taken before the body began."""
    rng = random.Random(seed)
    dut = _Replier(fmt, info=info)
    framer, sent, done, early = dut.framer, bytearray(), [], []

    async def bench(ctx):
        pending = list(words)
        ctx.set(framer.header.valid, 1)
        ctx.set(framer.header.payload, {"status": header[0], "seq": header[1]})
        await ctx.tick()
        ctx.set(framer.header.valid, 0)
        for cycle in range(4000):
            ready = rng.random() < 0.4
            ctx.set(framer.tx.ready, ready)
            if not info:
                offered = bool(pending) and rng.random() < 0.5
                ctx.set(dut.source.words.valid, offered)
                ctx.set(dut.source.words.payload, pending[0] if pending else 0)
                ctx.set(dut.source.cycles, cycles + cycle)
                if offered and ctx.get(dut.source.words.ready):
                    early.append(not ctx.get(framer.body_open))
                    pending.pop(0)
            if ready and ctx.get(framer.tx.valid):
                sent.append(ctx.get(framer.tx.payload))
            if ctx.get(framer.done):
                done.append(cycle)
            await ctx.tick()
    _simulate(dut, bench)
    return bytes(sent), done, any(early)


FMT = LinkFormat(input_bytes=784, classes=4, logit_bytes=2, export_id=0x12345678)


@pytest.mark.parametrize("status", [STATUS_CHECKSUM, STATUS_TIMEOUT, STATUS_COMMAND, STATUS_BUSY])
def test_a_failed_reply_is_status_seq_and_checksum(status):
    sent, done, _ = _reply(FMT, (status, 21))
    assert sent == b"tp" + bytes([status, 21, checksum(bytes([status, 21]))])
    assert len(done) == 1


def test_the_info_reply_carries_the_link_format_in_the_info_layout():
    sent, done, _ = _reply(FMT, (STATUS_OK, 3), seed=1)
    assert decode_reply(sent, FMT, CMD_INFO) == FMT.info()
    # the layout on the line, as docs/hostlink.md gives it: export id, input bytes, classes, logit
    # bytes, images
    assert sent[4:-1] == pack_info(FMT.info()) == bytes.fromhex("78563412" "1003" "04" "02" "01")
    lanes = dataclasses.replace(FMT, images=3)
    assert _reply(lanes, (STATUS_OK, 5))[0][4:-1] == bytes.fromhex("78563412" "1003" "04" "02" "03")
    again, _, _ = _reply(FMT, (STATUS_OK, 4), seed=2)            # the body starts over for every reply
    assert again[4:-1] == sent[4:-1] and len(done) == 1


@pytest.mark.parametrize("images", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_result_reply_decodes_to_the_accelerators_words(seed, images):
    """Each image's logits and class in turn, then the cycles once: those taken with the last class."""
    rng = random.Random(seed)
    fmt = dataclasses.replace(FMT, images=images)
    lim = 1 << (8 * fmt.logit_bytes - 3)
    want = [{"logits": [rng.randrange(-lim, lim) for _ in range(fmt.classes)], "class": rng.randrange(fmt.classes)}
            for _ in range(images)]
    words = [w for r in want for w in r["logits"] + [r["class"]]]
    sent, done, early = _reply(fmt, (STATUS_OK, 40 + seed), info=False, words=words, cycles=1000, seed=seed)
    assert len(sent) == reply_length(fmt, CMD_INFER) == 9 + images * (fmt.classes * fmt.logit_bytes + 1)
    rs = decode_reply(sent, fmt, CMD_INFER)
    assert [{k: r[k] for k in ("logits", "class")} for r in rs] == want
    assert len({r["cycles"] for r in rs}) == 1 and rs[0]["cycles"] > 1000
    assert sent[3] == 40 + seed and len(done) == 1
    assert not early, "a word was taken before the body began"
