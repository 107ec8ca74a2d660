"""The parts of the host link (:class:`~ternpe.hw.hostlink.HostLink` joins them): the request
parser, the header spotter, the reply framer and the two reply bodies.

The framing is :mod:`ternpe.link`'s. The bytes of the line come in on the parser while the link
waits for a request, and on the spotter while it replies; the framer sends each reply from a
header (status, SEQ) and, for ``STATUS_OK``, a body: the INFO struct or the inference's result.
"""

import operator

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import (CMD_INFER, CMD_INFER_RLE, CMD_INFO, CYCLES_BYTES, INFO_BYTES, INFO_FIELDS, REP_MAGIC, REQ_MAGIC,
                         RLE_ESCAPE, SEQ_UNKNOWN, STATUS_CHECKSUM, STATUS_COMMAND, STATUS_OK, STATUS_TIMEOUT, LinkFormat)

__all__ = ["Request", "ReplyHeader", "BodyByte", "INFO_LAYOUT", "RequestParser", "HeaderSpotter", "ReplyFramer",
           "InfoSerializer", "ResultSerializer"]


class Request(data.Struct):
    """A request as parsed: ``STATUS_OK`` or why it failed, its SEQ, its command."""
    status: 8
    seq: 8
    cmd: 8


class ReplyHeader(data.Struct):
    """The status of a reply and the SEQ of the request it answers."""
    status: 8
    seq: 8


class BodyByte(data.Struct):
    """A byte of a reply's body, and whether it is the body's last."""
    data: 8
    last: 1


#: The body of an INFO reply (:data:`ternpe.link.INFO_FIELDS`), first field least significant.
INFO_LAYOUT = data.StructLayout({name: unsigned(bits) for name, bits in INFO_FIELDS})


def _check_counts(**counts) -> None:
    """Each of ``counts`` is an integer of at least 1 (a ValueError names the first that is not)."""
    for name, value in counts.items():
        if operator.index(value) < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")


class RequestParser(wiring.Component):
    """Takes requests off the line: magic, SEQ, command, images, checksum, each byte in time.

    Bytes before a request's magic are dropped. An infer request's images go out on ``data`` as
    they arrive (a ``CMD_INFER_RLE`` request's runs of zeros expanded, a zero a cycle); its
    checksum is known only at the end, so a request that breaks off raises ``abort`` and what
    ``data`` carried must be dropped. Every request that ends, well or broken,
    comes out on ``request`` once, the cycle after its last byte (registered).

    Parameters
    ----------
    input_bytes : int
        Bytes of an image.
    images : int
        Images of an infer request (the accelerator's image lanes), back to back.
    timeout_cycles : int
        A request whose next byte has not come after this many cycles is given up:
        ``STATUS_TIMEOUT``.
    quiet_cycles : int
        After ``flush``, bytes are dropped until none has come for this many cycles.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the line.
    data : Out(stream.Signature(8))
        The images of an infer request, byte by byte.
    request : Out(stream.Signature(Request, always_ready=True))
        A request that ended: ``STATUS_OK`` (checked), ``STATUS_CHECKSUM``, ``STATUS_TIMEOUT``
        (``seq`` is ``SEQ_UNKNOWN`` if it broke off before its SEQ) or ``STATUS_COMMAND``.
    abort : Out(1)
        With a ``request`` of ``STATUS_CHECKSUM`` or ``STATUS_TIMEOUT``: drop what ``data`` carried.
    flush : In(1)
        When idle: drop bytes until the line has been quiet for ``quiet_cycles`` (the rest of a
        broken request may still be arriving).
    busy : Out(1)
        A request, or the dropping after ``flush``, is under way.
    """

    rx: In(stream.Signature(8))
    data: Out(stream.Signature(8))
    request: Out(stream.Signature(Request, always_ready=True))
    abort: Out(1)
    flush: In(1)
    busy: Out(1)

    def __new__(cls, *, input_bytes: int, images: int = 1, timeout_cycles: int, quiet_cycles: int):
        # checked before the block exists: no unused block is left
        _check_counts(input_bytes=input_bytes, images=images, timeout_cycles=timeout_cycles,
                      quiet_cycles=quiet_cycles)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, input_bytes: int, images: int = 1, timeout_cycles: int, quiet_cycles: int):
        self.input_bytes = operator.index(input_bytes)
        self.images = operator.index(images)
        self.timeout_cycles = operator.index(timeout_cycles)
        self.quiet_cycles = operator.index(quiet_cycles)
        super().__init__()

    @property
    def payload_bytes(self) -> int:
        """Bytes of an infer request's payload: its images."""
        return self.images * self.input_bytes

    def elaborate(self, platform):
        m = Module()
        rx, req = self.rx, self.request
        # the byte is registered as it arrives, with the compares the states make of it: the states
        # then decide from registers alone (on the iCE40 this logic was the critical path, the
        # line's valid and the byte's compares running through every state's next-state logic).
        # The register holds one byte and takes the next once it is empty (a byte every other
        # cycle at most: a UART byte is 10 bit times), and takes none while a request's end goes
        # out (what comes after a request is the spotter's)
        full, byte = Signal(), Signal(8)
        flags = {"magic0": REQ_MAGIC[0], "magic1": REQ_MAGIC[1], "infer": CMD_INFER, "infer_rle": CMD_INFER_RLE,
                 "info": CMD_INFO, "escape": RLE_ESCAPE}
        is_ = {k: Signal(name=f"is_{k}") for k in flags}
        take = Signal()               # the states consume the registered byte this cycle
        accept = rx.valid & rx.ready
        with m.If(accept):
            m.d.sync += [full.eq(1), byte.eq(rx.payload)]
            m.d.sync += [is_[k].eq(rx.payload == v) for k, v in flags.items()]
        with m.Elif(take):
            m.d.sync += full.eq(0)
        timer = Signal(range(max(self.timeout_cycles, self.quiet_cycles) + 1))
        seq, cmd = Signal(8, init=SEQ_UNKNOWN), Signal(8)
        want = Signal(8)              # minus the sum from SEQ on: the checksum byte that makes it zero (the
                                      # last byte's check is one 8-bit compare, no adder)
        count = Signal(range(self.payload_bytes + 1))
        count_last = Signal()         # count is at the payload's last byte (a compare made a byte early)
        rle, run = Signal(), Signal(8)  # CMD_INFER_RLE; zeros left of a run
        run_last = Signal()           # run == 1 (registered with run)
        # the timeout compare is registered: the wide counter's compare is not in the FSM's cycle; it is
        # ">=", so no value of the counter (say, after a glitch) can keep a request open for long
        timed_out = Signal()
        m.d.sync += timed_out.eq((timer >= self.timeout_cycles - 1) & ~take)
        m.d.comb += [req.payload.seq.eq(seq), req.payload.cmd.eq(cmd), self.data.payload.eq(byte)]
        # a request's end is registered (request, abort): nothing of the last byte's checks reaches
        # the reply's framer in the same cycle; the parser takes no byte meanwhile (ENDED)
        status, ended, abort = Signal(8), Signal(), Signal()
        m.d.sync += [ended.eq(0), abort.eq(0)]
        m.d.comb += [req.valid.eq(ended), req.payload.status.eq(status), self.abort.eq(abort),
                     rx.ready.eq(~full & ~ended)]

        def end(status_now, abort_now=0):
            m.d.sync += [ended.eq(1), status.eq(status_now), abort.eq(abort_now)]
            m.next = "ENDED"

        def next_byte(consume=True):
            """A byte is due: count the gap, give the request up when it is too long (a byte that
            arrives as it is given up is dropped: see ENDED)."""
            m.d.comb += self.busy.eq(1)
            if consume:
                m.d.comb += take.eq(full)
            m.d.sync += timer.eq(timer + 1)
            with m.If(take):
                m.d.sync += timer.eq(0)
            with m.Elif(timed_out):
                end(STATUS_TIMEOUT, abort_now=1)

        def counted():
            """A byte of the images went out on ``data``: count it; after the last, the checksum is due."""
            m.d.sync += [count.eq(count + 1), count_last.eq(count == self.payload_bytes - 2)]
            with m.If(count_last):
                m.next = "CHECK"

        with m.FSM() as fsm:
            self._between_requests(m, timer, seq, full, is_, take)
            self._magic_and_seq(m, seq, want, full, byte, is_, next_byte)
            with m.State("CMD"):
                with m.If(full):
                    m.d.sync += [cmd.eq(byte), want.eq(want - byte), count.eq(0),
                                 count_last.eq(self.payload_bytes == 1), rle.eq(is_["infer_rle"])]
                    with m.If(is_["infer"] | is_["infer_rle"]):
                        m.next = "DATA"
                    with m.Elif(is_["info"]):
                        m.next = "CHECK"
                    with m.Else():
                        end(STATUS_COMMAND)
                next_byte()
            with m.State("DATA"):
                escape = rle & is_["escape"]                # CMD_INFER_RLE: a run of zeros follows
                with m.If(escape):
                    m.d.comb += take.eq(full)
                    with m.If(full):
                        m.next = "RUN"
                with m.Else():
                    m.d.comb += [self.data.valid.eq(full), take.eq(full & self.data.ready)]
                with m.If(take):
                    m.d.sync += want.eq(want - byte)
                    with m.If(~escape):
                        counted()
                next_byte(consume=False)
            self._run_of_zeros(m, want, run, run_last, timer, timed_out, full, byte, next_byte, counted, end)
            with m.State("CHECK"):
                with m.If(full):
                    good = byte == want
                    end(Mux(good, STATUS_OK, STATUS_CHECKSUM), abort_now=~good)
                next_byte()
            fill_encodings(m, fsm, "IDLE")
        return m

    def _magic_and_seq(self, m, seq, want, full, byte, is_, next_byte):
        """The request's second magic byte (a first one again keeps waiting for it), then its SEQ,
        where the checksum starts."""
        with m.State("MAGIC1"):
            with m.If(full & is_["magic1"]):
                m.next = "SEQ"
            with m.Elif(full & ~is_["magic0"]):
                m.next = "IDLE"
            next_byte()
        with m.State("SEQ"):
            with m.If(full):
                m.d.sync += [seq.eq(byte), want.eq(-byte)]
                m.next = "CMD"
            next_byte()

    def _run_of_zeros(self, m, want, run, run_last, timer, timed_out, full, byte, next_byte, counted, end):
        """CMD_INFER_RLE's states after an escape byte: the run's length, then its zeros, one a cycle
        (a stall of ``data`` as long as the timeout gives the request up, as a missing byte does)."""
        with m.State("RUN"):                                # the run's length
            with m.If(full):
                m.d.sync += [want.eq(want - byte), run.eq(byte), run_last.eq(byte == 1)]
                m.next = "ZEROS"
            next_byte()
        with m.State("ZEROS"):                              # the run's zeros, one a cycle
            empty = Signal()
            m.d.comb += [empty.eq(run == 0), self.busy.eq(1), self.data.valid.eq(~empty), self.data.payload.eq(0)]
            m.d.sync += timer.eq(Mux(self.data.ready | empty, 0, timer + 1))
            with m.If(empty):                               # an empty run (never sent): nothing
                m.next = "DATA"
            with m.Elif(timed_out):
                end(STATUS_TIMEOUT, abort_now=1)
            with m.Elif(self.data.ready):
                m.d.sync += [run.eq(run - 1), run_last.eq(run == 2)]
                with m.If(run_last):
                    m.next = "DATA"
                counted()                                   # the images whole: the rest of the run is dropped

    def _between_requests(self, m, timer, seq, full, is_, take):
        """The states outside a request: waiting for its magic, the cycle after one ended, and the
        dropping of bytes after ``flush`` until the line is quiet."""
        rx = self.rx
        with m.State("IDLE"):
            m.d.comb += take.eq(full)
            with m.If(self.flush):
                m.d.sync += timer.eq(0)
                m.next = "DISCARD"
            with m.Elif(full & is_["magic0"]):
                m.d.sync += [timer.eq(0), seq.eq(SEQ_UNKNOWN)]
                m.next = "MAGIC1"
        with m.State("ENDED"):          # the request and abort are out; the next byte waits (one
            m.d.comb += self.busy.eq(1)   # taken as the request timed out is dropped)
            m.d.sync += full.eq(0)
            m.next = "IDLE"
        with m.State("DISCARD"):
            m.d.comb += [self.busy.eq(1), take.eq(full)]
            m.d.sync += timer.eq(timer + 1)
            with m.If(rx.valid):          # quiet from the line's last byte
                m.d.sync += timer.eq(0)
            with m.Elif(timer >= self.quiet_cycles - 1):
                m.next = "IDLE"


class HeaderSpotter(wiring.Component):
    """Spots a request header ("TP" SEQ) among bytes that arrive while a reply is sent.

    Such a request cannot be run (the link has no room for a second image): it is answered
    ``STATUS_BUSY`` with its SEQ after the reply, and the rest of it is dropped.

    Members
    -------
    rx : In(stream.Signature(8, always_ready=True))
        The bytes; every one is taken.
    clear : In(1)
        Forget a header seen in part (the reply is over).
    found : Out(stream.Signature(8))
        The SEQ of the header seen. Until it is taken, no other header is looked for.
    """

    rx: In(stream.Signature(8, always_ready=True))
    clear: In(1)
    found: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        rx, found = self.rx, self.found
        seen = Signal(range(len(REQ_MAGIC) + 1))       # bytes of the magic seen
        with m.If(found.ready):
            m.d.sync += found.valid.eq(0)
        with m.If(self.clear):
            m.d.sync += seen.eq(0)
        with m.Elif(rx.valid & ~found.valid):
            with m.Switch(seen):
                with m.Case(0):
                    m.d.sync += seen.eq(rx.payload == REQ_MAGIC[0])
                with m.Case(1):
                    m.d.sync += seen.eq(Mux(rx.payload == REQ_MAGIC[1], 2, rx.payload == REQ_MAGIC[0]))
                with m.Case(2):
                    m.d.sync += [found.valid.eq(1), found.payload.eq(rx.payload), seen.eq(0)]
        return m


class ReplyFramer(wiring.Component):
    """Frames replies: magic, status, SEQ, the body (``STATUS_OK`` only), the checksum.

    Members
    -------
    header : In(stream.Signature(ReplyHeader))
        The next reply's status and SEQ; taken when the framer is idle.
    body : In(stream.Signature(BodyByte))
        The body of a reply with ``STATUS_OK``, up to its ``last`` byte.
    body_open : Out(1)
        The body is being sent: its source may fetch what it sends.
    tx : Out(stream.Signature(8))
        The reply's bytes.
    done : Out(1)
        The reply's last byte, its checksum, is taken.
    failed : Out(1)
        The reply under way (from its second cycle) or the last one is not ``STATUS_OK``, or was cut.
    cut : In(1)
        End the body now (its source is stuck): the checksum follows, made wrong, so the host
        retries; the reply counts as failed.
    """

    header: In(stream.Signature(ReplyHeader))
    body: In(stream.Signature(BodyByte))
    cut: In(1)
    body_open: Out(1)
    tx: Out(stream.Signature(8))
    done: Out(1)
    failed: Out(1)

    def elaborate(self, platform):
        m = Module()
        tx, body = self.tx, self.body
        status, seq = Signal(8), Signal(8)
        csum = Signal(8)              # the sum of the reply from STATUS on, but for ...
        pend = Signal(8)              # ... the byte sent last cycle: no adder after the body's mux
        m.d.sync += [csum.eq(csum + pend), pend.eq(0)]

        def send(byte, state, summed=True):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(byte)]
            with m.If(tx.ready):
                if summed:
                    m.d.sync += pend.eq(byte)
                m.next = state

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.header.ready.eq(1)
                with m.If(self.header.valid):
                    m.d.sync += [status.eq(self.header.payload.status), seq.eq(self.header.payload.seq),
                                 csum.eq(0)]
                    m.next = "MAGIC0"
            with m.State("MAGIC0"):
                m.d.sync += self.failed.eq(status != STATUS_OK)
                send(REP_MAGIC[0], "MAGIC1", summed=False)
            with m.State("MAGIC1"):
                send(REP_MAGIC[1], "STATUS", summed=False)
            with m.State("STATUS"):
                send(status, "SEQ")
            with m.State("SEQ"):
                with m.If(status == STATUS_OK):
                    send(seq, "BODY")
                with m.Else():
                    send(seq, "SUM")
            with m.State("BODY"):
                m.d.comb += [self.body_open.eq(1), tx.valid.eq(body.valid), tx.payload.eq(body.payload.data),
                             body.ready.eq(tx.ready)]
                with m.If(self.cut & ~body.valid):
                    m.d.sync += [pend.eq(1), self.failed.eq(1)]      # -csum is then not the sum
                    m.next = "SUM"
                with m.Elif(body.valid & tx.ready):
                    m.d.sync += pend.eq(body.payload.data)
                    with m.If(body.payload.last):
                        m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += self.done.eq(tx.ready)
                send(-(csum + pend), "IDLE", summed=False)
            fill_encodings(m, fsm, "IDLE")
        return m


def fill_encodings(m, fsm, to: str) -> None:
    """Inside ``with m.FSM() as fsm``: a state for every encoding of the state register no state
    uses, each going to ``to``. No value of the register then leaves the FSM stuck: what a
    k-induction starts from (any state) and what a register upset would leave behind."""
    n = len(fsm.encoding)
    for i in range(n, 1 << max(1, (n - 1).bit_length())):
        with m.State(f"UNUSED_{i}"):
            m.next = to


def _send_bytes(m, body, value, index, count: int):
    """Offer byte ``index`` of ``value`` (least significant first) on ``body``, the last at
    ``index == count - 1``; returns that condition."""
    last = index == count - 1
    m.d.comb += [body.valid.eq(1), body.payload.data.eq(value.word_select(index, 8)), body.payload.last.eq(last)]
    return last


class InfoSerializer(wiring.Component):
    """Sends the body of an INFO reply: ``fmt``'s fields in :data:`INFO_LAYOUT`, byte by byte.

    Parameters
    ----------
    fmt : ternpe.link.LinkFormat
        What the board runs.

    Members
    -------
    body : Out(stream.Signature(BodyByte))
        The INFO struct's bytes, least significant first, over and over.
    """

    body: Out(stream.Signature(BodyByte))

    def __init__(self, fmt: LinkFormat):
        self.info = INFO_LAYOUT.const(fmt.info())
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        nbyte = Signal(range(INFO_BYTES))
        last = _send_bytes(m, self.body, self.info.as_value(), nbyte, INFO_BYTES)
        with m.If(self.body.ready):
            m.d.sync += nbyte.eq(Mux(last, 0, nbyte + 1))
        return m


class ResultSerializer(wiring.Component):
    """Sends the body of an infer reply: each image's logits and class, then the batch's cycles.

    Parameters
    ----------
    classes : int
        Logits before each class.
    logit_bytes : int
        Bytes of a logit on the line (two's complement, little-endian).
    word_shape : shape
        The accelerator's output (a logit or the class); at most ``8 * logit_bytes`` bits.
    images : int
        Images of a batch (the accelerator's image lanes): results before the cycles.

    Members
    -------
    words : In(stream.Signature(word_shape))
        The accelerator's output: for each image in turn, ``classes`` logits, then the class.
    cycles : In(8 * CYCLES_BYTES)
        The accelerator's cycle count, taken with each word; the last class's is sent.
    en : In(1)
        The body is being sent: words may be taken (not before, so the cycle count is final).
    body : Out(stream.Signature(BodyByte))
        Each logit in ``logit_bytes`` bytes, each class in one, then the cycles in ``CYCLES_BYTES``.
    """

    def __new__(cls, *, classes: int, logit_bytes: int, word_shape, images: int = 1):
        _check_counts(classes=classes, logit_bytes=logit_bytes, images=images)
        if Shape.cast(word_shape).width > 8 * logit_bytes:
            raise ValueError(f"a word of {word_shape!r} does not fit in {logit_bytes} logit byte(s)")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, classes: int, logit_bytes: int, word_shape, images: int = 1):
        self.classes = operator.index(classes)
        self.logit_bytes = operator.index(logit_bytes)
        self.images = operator.index(images)
        super().__init__({"words": In(stream.Signature(word_shape)), "cycles": In(8 * CYCLES_BYTES), "en": In(1),
                          "body": Out(stream.Signature(BodyByte))})

    def elaborate(self, platform):
        m = Module()
        body, words, L = self.body, self.words, self.logit_bytes
        word = Signal(signed(8 * L))          # a logit, sign-extended to whole bytes
        cycles = Signal(8 * CYCLES_BYTES)
        nbyte = Signal(range(max(L, CYCLES_BYTES)))
        nword = Signal(range(self.classes + 1))
        nimage = Signal(range(self.images))
        with m.FSM() as fsm:
            with m.State("TAKE"):
                m.d.comb += words.ready.eq(self.en)
                with m.If(self.en & words.valid):
                    m.d.sync += [word.eq(words.payload), cycles.eq(self.cycles), nbyte.eq(0)]
                    m.next = "WORD"
            with m.State("WORD"):
                m.d.comb += [body.valid.eq(1), body.payload.data.eq(word.as_unsigned().word_select(nbyte, 8))]
                with m.If(body.ready):
                    m.d.sync += nbyte.eq(nbyte + 1)
                    with m.If(nword == self.classes):         # the class: one byte
                        m.d.sync += [nbyte.eq(0), nword.eq(0)]
                        with m.If(nimage == self.images - 1):
                            m.d.sync += nimage.eq(0)
                            m.next = "CYCLES"
                        with m.Else():
                            m.d.sync += nimage.eq(nimage + 1)
                            m.next = "TAKE"
                    with m.Elif(nbyte == L - 1):
                        m.d.sync += nword.eq(nword + 1)
                        m.next = "TAKE"
            with m.State("CYCLES"):
                last = _send_bytes(m, body, cycles, nbyte, CYCLES_BYTES)
                with m.If(body.ready):
                    m.d.sync += nbyte.eq(nbyte + 1)
                    with m.If(last):
                        m.next = "TAKE"
            fill_encodings(m, fsm, "TAKE")
        return m
