"""The board side of the host link: UART bytes in, requests parsed, the accelerator run, replies out.

The framing is :mod:`ternpe.link`'s. An infer request carries a batch of ``plan.images``
images (one per image lane of the accelerator); its reply, their results, then the batch's
cycles. A request that stops arriving for ``timeout_cycles`` resets the accelerator and is
answered with ``STATUS_TIMEOUT``; a wrong checksum resets it and is answered with
``STATUS_CHECKSUM``: the link never hangs on a broken request. Every reply
carries the SEQ of the request it answers. While a reply is being computed or sent, the
receiver keeps listening: a request header arriving then is answered, after the current reply,
with ``STATUS_BUSY`` and its SEQ. After any non-ok reply the link discards bytes until the line
has been quiet for ``quiet_cycles``, so the tail of a broken request is never taken for a new one.

The parts are in :mod:`ternpe.hw.linkparts`: the :class:`~ternpe.hw.linkparts.RequestParser`
has the line while the link waits for a request; the
:class:`~ternpe.hw.linkparts.ReplyFramer` sends the reply (its body from the
:class:`~ternpe.hw.linkparts.InfoSerializer` or the
:class:`~ternpe.hw.linkparts.ResultSerializer`) while the
:class:`~ternpe.hw.linkparts.HeaderSpotter` has the line.
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import CMD_INFO, STATUS_BUSY, LinkFormat
from .accelerator import Accelerator
from .linkparts import (BodyByte, HeaderSpotter, InfoSerializer, ReplyFramer, RequestParser, ResultSerializer,
                        fill_encodings)

__all__ = ["HostLink"]


#: Cycles past the cycle model's latency the link waits for a result before it gives the reply up.
WATCHDOG_MARGIN = 8


class HostLink(wiring.Component):
    """The board's end of the host link: requests in, the accelerator run, replies out.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        The accelerator behind the link; its ``images`` (image lanes) are the images of a batch.
    timeout_cycles : int
        Longest gap between two bytes of a request.
    quiet_cycles : int
        After a non-ok reply, input is discarded until the line has been quiet this long.
    acc : Elaboratable or None
        The accelerator behind the link (``None``: ``Accelerator(plan)``); a proof puts one with
        free outputs here (:class:`~ternpe.hw.formal.FreeAccelerator`).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    busy : Out(1)
        A request is being received or answered.
    error : Out(1)
        The last request failed (checksum, timeout, command); cleared by the next good one.
    """

    def __init__(self, plan, *, timeout_cycles: int, quiet_cycles: int = 64, acc=None):
        self.plan = plan
        self.export = plan.export
        self.timeout_cycles = timeout_cycles
        self.quiet_cycles = quiet_cycles
        self.acc = Accelerator(plan) if acc is None else acc
        #: the longest wait for a body byte before the reply is cut: an inference, and a margin
        self.watchdog_cycles = plan.cycles["latency"] + WATCHDOG_MARGIN
        self.format = LinkFormat.of_plan(plan)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "busy": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        fmt, acc = self.format, self.acc
        m.submodules.parser = parser = RequestParser(input_bytes=fmt.input_bytes, images=fmt.images,
                                                     timeout_cycles=self.timeout_cycles, quiet_cycles=self.quiet_cycles)
        m.submodules.spotter = spotter = HeaderSpotter()
        m.submodules.framer = framer = ReplyFramer()
        m.submodules.info = info = InfoSerializer(fmt)
        m.submodules.result = result = ResultSerializer(classes=fmt.classes, logit_bytes=fmt.logit_bytes,
                                                        word_shape=acc.output.payload.shape(), images=fmt.images)
        # a broken request, or a reply whose results do not come (the watchdog), resets the accelerator
        # and the images buffered for it (registered)
        abort, stuck = Signal(), Signal()
        m.d.sync += abort.eq(parser.abort | stuck)
        m.submodules.acc = ResetInserter(abort)(acc)
        m.submodules.fifo = q = ResetInserter(abort)(fifo.SyncFIFOBuffered(width=8, depth=8))
        wiring.connect(m, parser.data, q.w_stream)
        m.d.comb += [acc.input.payload.eq(q.r_data), acc.input.valid.eq(q.r_rdy), q.r_en.eq(acc.input.ready)]
        wiring.connect(m, acc.output, result.words)
        # the reply's byte is registered twice before the UART: the choice of the body (INFO or
        # result, a logit byte out of a wide word) and the framer's byte mux end in the first
        # register, and the second may lie by the transmitter (on a large die the link's logic
        # spreads between the lanes' results and the UART pin)
        a_full, a_byte = Signal(), Signal(8)
        tx_full, tx_byte = Signal(), Signal(8)
        b_ready, a_ready = Signal(), Signal()
        m.d.comb += [self.tx.valid.eq(tx_full), self.tx.payload.eq(tx_byte),
                     b_ready.eq(~tx_full | self.tx.ready), a_ready.eq(~a_full | b_ready),
                     framer.tx.ready.eq(a_ready)]
        with m.If(framer.tx.valid & a_ready):
            m.d.sync += [a_full.eq(1), a_byte.eq(framer.tx.payload)]
        with m.Elif(b_ready):
            m.d.sync += a_full.eq(0)
        with m.If(a_full & b_ready):
            m.d.sync += [tx_full.eq(1), tx_byte.eq(a_byte)]
        with m.Elif(self.tx.ready):
            m.d.sync += tx_full.eq(0)

        # the body's byte is registered on its way to the framer (the result serializer sits by the
        # lanes' results, the framer by the UART): a byte every other cycle at most, far more than
        # the UART takes. It fills only while the framer is in the body and not cutting it, and a
        # byte taken is always sent (the framer leaves the body after the last byte, or cuts it
        # when none is there): nothing stays behind for the next reply.
        answers_info = Signal()       # the reply under way answers INFO: its body is the INFO struct
        body = stream.Signature(BodyByte).create()
        body_full = Signal()
        body_r = Signal(BodyByte)
        m.d.comb += [framer.body.valid.eq(body_full), framer.body.payload.eq(body_r),
                     body.ready.eq(framer.body_open & ~body_full & ~framer.cut)]
        with m.If(~framer.body_open | (framer.body.valid & framer.body.ready)):
            m.d.sync += body_full.eq(0)
        with m.Elif(body.valid & body.ready):
            m.d.sync += [body_full.eq(1), body_r.eq(body.payload)]
        with m.If(answers_info):
            _join(m, info.body, body)
        with m.Else():
            _join(m, result.body, body)
        m.d.comb += [result.cycles.eq(acc.cycles), result.en.eq(framer.body_open & ~answers_info),
                     self.error.eq(framer.failed)]
        # the watchdog: a body byte waited for longer than an inference takes (the cycle model's
        # latency and a margin) cuts the reply; the link then answers every request within a bound,
        # whatever state the accelerator is in
        waited = Signal(range(self.watchdog_cycles + 1))
        with m.If(~framer.body_open | framer.body.valid):
            m.d.sync += waited.eq(0)
        with m.Elif(~stuck):
            m.d.sync += waited.eq(waited + 1)
        m.d.comb += [stuck.eq(waited >= self.watchdog_cycles), framer.cut.eq(stuck)]

        header, request = framer.header, parser.request
        with m.FSM() as phase:
            with m.State("REQUEST"):          # the parser has the line
                _join(m, wiring.flipped(self.rx), parser.rx)
                m.d.comb += [header.valid.eq(request.valid), header.payload.status.eq(request.payload.status),
                             header.payload.seq.eq(request.payload.seq)]
                with m.If(request.valid):
                    m.d.sync += answers_info.eq(request.payload.cmd == CMD_INFO)
                    m.next = "REPLY"
            with m.State("REPLY"):            # the framer sends; a request arriving meanwhile is spotted
                _join(m, wiring.flipped(self.rx), spotter.rx)
                with m.If(framer.done | framer.header.ready):       # sent (or, after a glitch, none under way)
                    m.next = "NEXT"
            with m.State("NEXT"):             # a request spotted is answered busy; a broken one is flushed
                m.d.comb += [spotter.clear.eq(1), header.valid.eq(spotter.found.valid),
                             header.payload.status.eq(STATUS_BUSY), header.payload.seq.eq(spotter.found.payload),
                             spotter.found.ready.eq(header.ready)]
                with m.If(spotter.found.valid):
                    m.next = "REPLY"
                with m.Else():
                    m.d.comb += parser.flush.eq(framer.failed)
                    m.next = "REQUEST"
            fill_encodings(m, phase, "REQUEST")
        m.d.comb += self.busy.eq(parser.busy | ~phase.ongoing("REQUEST") | tx_full)
        return m


def _join(m, source, sink):
    """Pass ``source``'s transfers to ``sink`` (where the enclosing condition holds)."""
    m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload), source.ready.eq(sink.ready)]
