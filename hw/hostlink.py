"""The board side of the host link: UART bytes in, requests parsed, the accelerator run, replies out.

The framing is :mod:`ternpe.link`'s. A request that stops arriving for ``timeout_cycles``
resets the accelerator and is answered with ``STATUS_TIMEOUT``; a wrong checksum resets it and
is answered with ``STATUS_CHECKSUM``: the link never hangs on a broken request. Every reply
carries the SEQ of the request it answers. While a reply is being computed or sent, the
receiver keeps listening: a request header arriving then is answered, after the current reply,
with ``STATUS_BUSY`` and its SEQ. After any non-ok reply the link discards bytes until the line
has been quiet for ``quiet_cycles``, so the tail of a broken request is never taken for a new one.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import (CMD_INFER, CMD_INFO, REP_MAGIC, REQ_MAGIC, SEQ_UNKNOWN, STATUS_BUSY, STATUS_CHECKSUM,
                         STATUS_COMMAND, STATUS_OK, STATUS_TIMEOUT, LinkFormat)
from .accelerator import Accelerator

__all__ = ["HostLink"]


class HostLink(wiring.Component):
    """Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        The accelerator behind the link.
    timeout_cycles : int
        Longest gap between two bytes of a request.
    quiet_cycles : int
        After a non-ok reply, input is discarded until the line has been quiet this long.

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

    def __init__(self, plan, *, timeout_cycles: int, quiet_cycles: int = 64):
        self.plan = plan
        self.export = plan.export
        self.timeout_cycles = timeout_cycles
        self.quiet_cycles = quiet_cycles
        self.acc = Accelerator(plan)
        self.format = LinkFormat.of(plan.export, plan.out_bits)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "busy": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        fmt = self.format
        acc_rst, acc_rst_q = Signal(), Signal()      # a reset request, and the registered reset
        m.d.sync += acc_rst_q.eq(acc_rst)
        m.submodules.acc = ResetInserter(acc_rst_q)(self.acc)
        acc = self.acc
        m.submodules.fifo = q = ResetInserter(acc_rst_q)(fifo.SyncFIFOBuffered(width=8, depth=8))
        m.d.comb += [acc.input.payload.eq(q.r_data), acc.input.valid.eq(q.r_rdy), q.r_en.eq(acc.input.ready)]

        rx, tx = self.rx, self.tx
        csum = Signal(8)          # running sum of the request (from CMD on) or of the reply (from STATUS on)
        count = Signal(range(max(fmt.input_bytes, 8) + 1))
        cmd = Signal(8)
        status = Signal(8)
        rseq = Signal(8, init=SEQ_UNKNOWN)     # the SEQ the reply carries
        timer = Signal(range(max(self.timeout_cycles, self.quiet_cycles) + 1))
        # a request header seen while a reply is under way: answered STATUS_BUSY afterwards
        hdr = Signal(2)
        busy_req, busy_seq = Signal(), Signal(8)
        word = Signal(signed(8 * fmt.logit_bytes))     # a logit, sign-extended to whole bytes
        nbyte = Signal(range(8))
        nword = Signal(range(fmt.classes + 2))
        cycles = Signal(32)
        info = Const(fmt.export_id | fmt.input_bytes << 32 | fmt.classes << 48 | fmt.logit_bytes << 56, 64)

        def send(byte, nxt, *, summed=True):
            m.d.comb += [tx.payload.eq(byte), tx.valid.eq(1)]
            with m.If(tx.ready):
                m.d.sync += csum.eq(csum + byte if summed else 0)     # the reply's sum starts at STATUS
                m.next = nxt

        def send_bytes(value, n, state):
            """Send ``n`` bytes of ``value``, least significant first, then the checksum."""
            m.d.comb += self.busy.eq(1)
            send(value.word_select(nbyte, 8), state)
            with m.If(tx.ready):
                m.d.sync += nbyte.eq(nbyte + 1)
                with m.If(nbyte == n - 1):
                    m.next = "SUM"

        # the timeout compare is registered: the wide counter's compare is not in the FSM's cycle
        timed_out = Signal()
        m.d.sync += timed_out.eq((timer == self.timeout_cycles - 1) & ~(rx.valid & rx.ready))

        def listen():
            """In a reply state: take input bytes, and note a request header ("TP" SEQ)."""
            m.d.comb += rx.ready.eq(1)
            with m.If(rx.valid & ~busy_req):
                with m.Switch(hdr):
                    with m.Case(0):
                        m.d.sync += hdr.eq(rx.payload == REQ_MAGIC[0])
                    with m.Case(1):
                        m.d.sync += hdr.eq(Mux(rx.payload == REQ_MAGIC[1], 2, rx.payload == REQ_MAGIC[0]))
                    with m.Case(2):
                        m.d.sync += [busy_req.eq(1), busy_seq.eq(rx.payload), hdr.eq(0)]

        def wait_byte():
            """In a request state: count the gap; on timeout answer STATUS_TIMEOUT."""
            m.d.sync += timer.eq(timer + 1)
            with m.If(rx.valid & rx.ready):
                m.d.sync += timer.eq(0)
            with m.Elif(timed_out):
                m.d.comb += acc_rst.eq(1)
                m.d.sync += status.eq(STATUS_TIMEOUT)
                m.next = "MAGIC0"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid & (rx.payload == REQ_MAGIC[0])):
                    m.d.sync += [timer.eq(0), rseq.eq(SEQ_UNKNOWN)]
                    m.next = "REQ1"
            with m.State("REQ1"):
                m.d.comb += [rx.ready.eq(1), self.busy.eq(1)]
                with m.If(rx.valid):
                    with m.If(rx.payload == REQ_MAGIC[1]):
                        m.next = "SEQ"
                    with m.Elif(rx.payload != REQ_MAGIC[0]):
                        m.next = "IDLE"
                wait_byte()
            with m.State("SEQ"):
                m.d.comb += [rx.ready.eq(1), self.busy.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [rseq.eq(rx.payload), csum.eq(rx.payload)]
                    m.next = "CMD"
                wait_byte()
            with m.State("CMD"):
                m.d.comb += [rx.ready.eq(1), self.busy.eq(1)]
                with m.If(rx.valid):
                    m.d.sync += [cmd.eq(rx.payload), csum.eq(csum + rx.payload), count.eq(0)]
                    with m.If(rx.payload == CMD_INFER):
                        m.next = "DATA"
                    with m.Elif(rx.payload == CMD_INFO):
                        m.next = "CHECK"
                    with m.Else():
                        m.d.sync += status.eq(STATUS_COMMAND)
                        m.next = "MAGIC0"
                wait_byte()
            with m.State("DATA"):
                m.d.comb += [rx.ready.eq(q.w_rdy), q.w_data.eq(rx.payload), q.w_en.eq(rx.valid),
                             self.busy.eq(1)]
                with m.If(rx.valid & q.w_rdy):
                    m.d.sync += [csum.eq(csum + rx.payload), count.eq(count + 1)]
                    with m.If(count == fmt.input_bytes - 1):
                        m.next = "CHECK"
                wait_byte()
            with m.State("CHECK"):
                m.d.comb += [rx.ready.eq(1), self.busy.eq(1)]
                with m.If(rx.valid):
                    with m.If((csum + rx.payload)[:8] == 0):
                        m.d.sync += status.eq(STATUS_OK)
                    with m.Else():
                        m.d.sync += status.eq(STATUS_CHECKSUM)
                        m.d.comb += acc_rst.eq(1)
                    m.next = "MAGIC0"
                wait_byte()

            # ---- the reply ----
            with m.State("MAGIC0"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += self.error.eq(status != STATUS_OK)
                listen()
                send(REP_MAGIC[0], "MAGIC1", summed=False)
            with m.State("MAGIC1"):
                m.d.comb += self.busy.eq(1)
                listen()
                send(REP_MAGIC[1], "STATUS", summed=False)
            with m.State("STATUS"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [nword.eq(0), nbyte.eq(0)]
                listen()
                send(status, "RSEQ")
            with m.State("RSEQ"):
                m.d.comb += self.busy.eq(1)
                listen()
                with m.If(status != STATUS_OK):
                    send(rseq, "SUM")
                with m.Elif(cmd == CMD_INFO):
                    send(rseq, "INFO")
                with m.Else():
                    send(rseq, "RESULT")
            with m.State("INFO"):
                listen()
                send_bytes(info, 8, "INFO")
            with m.State("RESULT"):              # take the next word of the accelerator's output
                listen()
                m.d.comb += [self.busy.eq(1), acc.output.ready.eq(1)]
                with m.If(acc.output.valid):
                    m.d.sync += [word.eq(acc.output.payload), nbyte.eq(0), cycles.eq(acc.cycles)]
                    m.next = "WORD"
            with m.State("WORD"):
                m.d.comb += self.busy.eq(1)
                listen()
                last = nword == fmt.classes       # the class: one byte
                send(word.as_unsigned().word_select(nbyte, 8), "WORD")
                with m.If(tx.ready):
                    m.d.sync += nbyte.eq(nbyte + 1)
                    with m.If(last):
                        m.d.sync += nbyte.eq(0)
                        m.next = "CYCLES"
                    with m.Elif(nbyte == fmt.logit_bytes - 1):
                        m.d.sync += nword.eq(nword + 1)
                        m.next = "RESULT"
            with m.State("CYCLES"):
                listen()
                send_bytes(cycles, 4, "CYCLES")
            with m.State("SUM"):
                m.d.comb += self.busy.eq(1)
                listen()
                send(-csum, "NEXT")
            with m.State("NEXT"):                # a request that came in meanwhile gets STATUS_BUSY
                m.d.comb += self.busy.eq(1)
                m.d.sync += [timer.eq(0), hdr.eq(0)]
                with m.If(busy_req):
                    m.d.sync += [busy_req.eq(0), status.eq(STATUS_BUSY), rseq.eq(busy_seq)]
                    m.next = "MAGIC0"
                with m.Elif(status != STATUS_OK):
                    m.next = "DISCARD"
                with m.Else():
                    m.next = "IDLE"
            with m.State("DISCARD"):             # until the line is quiet: the rest of a broken request
                m.d.comb += [rx.ready.eq(1), self.busy.eq(1)]
                m.d.sync += timer.eq(timer + 1)
                with m.If(rx.valid):
                    m.d.sync += timer.eq(0)
                with m.Elif(timer == self.quiet_cycles - 1):
                    m.next = "IDLE"
        return m
