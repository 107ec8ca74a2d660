"""The host link's framing, shared by the board (hw/hostlink.py) and the host (flow/host.py).

Requests (host -> board)::

    "T" "P" SEQ CMD [payload] CHK

* ``SEQ``: the request's sequence number, 0..254, echoed in its reply (255 is never sent).
* ``CMD_INFER`` (0x01): the payload is a batch of ``images`` images back to back (the board's
  image lanes; image k goes to lane k), each ``input_bytes`` bytes in ``(h, w, c)`` order.
* ``CMD_INFO`` (0x02): no payload.
* ``CMD_INFER_RLE`` (0x03): as ``CMD_INFER``, the payload run-length coded (:func:`rle_encode`):
  a byte ``RLE_ESCAPE`` (0) and a count ``n`` (1..``RLE_MAX_RUN``) stand for ``n`` zero bytes,
  any other byte for itself. MNIST images are mostly zeros: a third of the bytes on the line.
  Its reply is an infer reply. A board built before version 4 answers ``STATUS_COMMAND``; the
  host then sends ``CMD_INFER``.

``CHK`` makes the 8-bit sum of ``SEQ``, ``CMD``, the payload and ``CHK`` zero.

Replies (board -> host)::

    "t" "p" STATUS SEQ [payload] CHK

``SEQ`` is the answered request's (``SEQ_UNKNOWN`` when the request broke off before its
``SEQ``). ``STATUS`` 0 is success; then for ``CMD_INFER`` the payload is, for each image of the
batch in turn, ``classes`` logits of ``logit_bytes`` bytes each (two's complement,
little-endian) and the class (1 byte); then, once, the cycles of the batch (``CYCLES_BYTES``,
little-endian). For ``CMD_INFO`` it is the fields of ``INFO_FIELDS`` (the export id, the input
bytes of one image, the classes, the logit bytes and the images of a batch) packed into
``INFO_BYTES`` little-endian bytes. Any other status has no payload:
``STATUS_CHECKSUM`` (the request's checksum was wrong; the inference was dropped),
``STATUS_TIMEOUT`` (the request stopped arriving mid-way), ``STATUS_COMMAND`` (unknown command)
and ``STATUS_BUSY`` (the request began while the board was answering another; it was not
run). ``CHK`` makes the 8-bit sum of ``STATUS``, ``SEQ``, the payload and ``CHK`` zero. After a
non-ok reply the board discards bytes until the line has been quiet for ``QUIET_BYTES`` byte
times, so the rest of a broken request is never parsed as a new one. Bytes outside a request
(anything before "TP") are ignored.

With ``images`` = 1 a request carries one image and a reply one result, as in version 2 of the
protocol; version 3 added the batch and INFO's ``images`` field; version 4 (this one),
``CMD_INFER_RLE``.

Every byte goes over a UART, 8N1: ``UART_FRAME_BITS`` bit times a byte (a start bit, the
``UART_DATA_BITS`` data bits least significant first, a stop bit).

The host (:class:`ReplyParser`) finds the next "tp" in whatever it receives, checks the frame,
and takes only the reply whose ``SEQ`` is the one it is waiting for: a stale reply, garbage or a
reply broken by line noise is skipped, never returned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator

__all__ = ["REQ_MAGIC", "REP_MAGIC", "CMD_INFER", "CMD_INFO", "CMD_INFER_RLE", "RLE_ESCAPE", "RLE_MAX_RUN",
           "rle_encode", "rle_decode", "STATUS", "SEQ_UNKNOWN", "QUIET_BYTES",
           "UART_DATA_BITS", "UART_FRAME_BITS", "INFO_FIELDS", "INFO_BYTES", "CYCLES_BYTES", "LinkError",
           "LinkFormat", "ReplyParser", "checksum", "export_id", "wrap_seq", "pack_info", "unpack_info",
           "encode_infer", "encode_info", "request_length", "reply_length", "decode_reply"]

REQ_MAGIC = b"TP"
REP_MAGIC = b"tp"
CMD_INFER, CMD_INFO, CMD_INFER_RLE = 0x01, 0x02, 0x03
#: ``CMD_INFER_RLE``'s escape byte, and the longest run of zeros one escape stands for: the board
#: sends a run's zeros on one a cycle while the UART receives the next byte, which takes at least
#: 40 cycles (``UART_FRAME_BITS`` x the smallest divisor, 4), so a run never overruns it.
RLE_ESCAPE, RLE_MAX_RUN = 0x00, 32
STATUS_OK, STATUS_CHECKSUM, STATUS_TIMEOUT, STATUS_COMMAND, STATUS_BUSY = 0, 1, 2, 3, 4
STATUS = {STATUS_OK: "ok", STATUS_CHECKSUM: "the board saw a wrong request checksum",
          STATUS_TIMEOUT: "the request stopped arriving mid-way (board timeout)",
          STATUS_COMMAND: "the board does not know the command",
          STATUS_BUSY: "the board was busy answering another request"}
#: The SEQ of a reply to a request that broke off before its SEQ arrived; requests are numbered
#: below it (:func:`wrap_seq`).
SEQ_UNKNOWN = 0xFF
#: After a non-ok reply the board discards input until the line is quiet this many byte times.
QUIET_BYTES = 16
#: The UART's data bits; a byte on the line is these, a start bit and a stop bit.
UART_DATA_BITS = 8
UART_FRAME_BITS = 1 + UART_DATA_BITS + 1
#: The body of an INFO reply, field by field: ``(name, bits)``, the first field in the least
#: significant bits; the board fills a struct of this layout, the host unpacks with it
#: (:func:`pack_info`, :func:`unpack_info`). The names are :class:`LinkFormat`'s.
INFO_FIELDS = (("export_id", 32), ("input_bytes", 16), ("classes", 8), ("logit_bytes", 8), ("images", 8))
INFO_BYTES = sum(bits for _, bits in INFO_FIELDS) // 8
assert INFO_BYTES * 8 == sum(bits for _, bits in INFO_FIELDS), "INFO is whole bytes"
#: Bytes of the cycle count that ends an infer reply.
CYCLES_BYTES = 4


class LinkError(RuntimeError):
    """The board did not answer, or answered something that is not a valid reply."""


def checksum(data: bytes) -> int:
    """The byte that makes the 8-bit sum of ``data`` and itself zero."""
    return -sum(data) & 0xFF


def export_id(manifest: dict) -> int:
    """32-bit id of an export's content (from the checksums of its files), built into the board."""
    digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclasses.dataclass(frozen=True)
class LinkFormat:
    """What a board's link carries: the bytes of one image, the logits of one result and their
    bytes, the export's id, and the images of a batch (the board's image lanes).

    Every field is one of ``INFO_FIELDS`` and must fit its bits (a ValueError names the one that
    does not)."""

    input_bytes: int
    classes: int
    logit_bytes: int
    export_id: int
    images: int = 1

    def __post_init__(self):
        if operator.index(self.images) < 1:
            raise ValueError(f"a batch holds at least 1 image, not {self.images}")
        pack_info(self.info())

    @classmethod
    def of(cls, export, out_bits: int, *, images: int = 1) -> "LinkFormat":
        """The format of a board running ``export`` with logits of ``out_bits`` bits and
        ``images`` image lanes (:attr:`ternpe.hw.plan.AcceleratorPlan.images`)."""
        n_in = int(export.golden["inputs"][0].size)
        return cls(n_in, export.layers[-1].spec.cout, -(-out_bits // 8), export_id(export.manifest), images)

    @classmethod
    def of_plan(cls, plan) -> "LinkFormat":
        """The format of a board built from ``plan`` (:class:`~ternpe.hw.plan.AcceleratorPlan`)."""
        return cls.of(plan.export, plan.out_bits, images=plan.images)

    @property
    def result_bytes(self) -> int:
        """Bytes of one image's result in an infer reply: its logits and its class."""
        return self.classes * self.logit_bytes + 1

    def info(self) -> dict:
        """What an INFO reply carries: a value per field of ``INFO_FIELDS``."""
        return {name: getattr(self, name) for name, _ in INFO_FIELDS}


def wrap_seq(n: int) -> int:
    """``n`` as a request's SEQ: requests are numbered ``0..SEQ_UNKNOWN - 1`` and wrap."""
    return n % SEQ_UNKNOWN


def pack_info(values: dict) -> bytes:
    """The body of an INFO reply carrying ``values`` (a value per field of ``INFO_FIELDS``)."""
    word, shift = 0, 0
    for name, bits in INFO_FIELDS:
        value = int(values[name])
        if not 0 <= value < 1 << bits:
            raise ValueError(f"INFO field {name} has {bits} bits: {value} does not fit")
        word |= value << shift
        shift += bits
    return word.to_bytes(INFO_BYTES, "little")


def unpack_info(body: bytes) -> dict:
    """The fields of an INFO reply's body (``INFO_BYTES`` bytes), by name."""
    word, out = int.from_bytes(body[:INFO_BYTES], "little"), {}
    for name, bits in INFO_FIELDS:
        out[name] = word & ((1 << bits) - 1)
        word >>= bits
    return out


def _check_seq(seq: int) -> int:
    if not 0 <= seq < SEQ_UNKNOWN:
        raise ValueError(f"a request's SEQ is 0..{SEQ_UNKNOWN - 1}, not {seq}")
    return seq


def encode_infer(pixels, seq: int = 0, *, rle: bool = False) -> bytes:
    """An infer request carrying ``pixels``: the batch's images back to back, flattened (with one
    image lane, the image); ``rle``: run-length coded (``CMD_INFER_RLE``)."""
    data = bytes(int(v) for v in _flat(pixels))
    body = bytes([_check_seq(seq), CMD_INFER_RLE if rle else CMD_INFER]) + (rle_encode(data) if rle else data)
    return REQ_MAGIC + body + bytes([checksum(body)])


def rle_encode(data: bytes) -> bytes:
    """``CMD_INFER_RLE``'s payload of ``data``: each run of zeros as ``RLE_ESCAPE`` and its length,
    ``RLE_MAX_RUN`` at most an escape; other bytes as they are."""
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] != RLE_ESCAPE:
            out.append(data[i])
            i += 1
            continue
        n = 1
        while i + n < len(data) and data[i + n] == RLE_ESCAPE and n < RLE_MAX_RUN:
            n += 1
        out += bytes([RLE_ESCAPE, n])
        i += n
    return bytes(out)


def rle_decode(coded: bytes) -> bytes:
    """The bytes :func:`rle_encode` coded (its inverse)."""
    out, i = bytearray(), 0
    while i < len(coded):
        if coded[i] == RLE_ESCAPE:
            if i + 1 >= len(coded):
                raise LinkError("a run-length coded payload ends in an escape")
            out += bytes(coded[i + 1])
            i += 2
        else:
            out.append(coded[i])
            i += 1
    return bytes(out)


def _flat(pixels):
    """The values of ``pixels`` (bytes, a sequence, or an array of any shape) in order."""
    if isinstance(pixels, (bytes, bytearray)):
        return pixels
    import numpy as np
    return np.asarray(pixels).reshape(-1).tolist()


def encode_info(seq: int = 0) -> bytes:
    body = bytes([_check_seq(seq), CMD_INFO])
    return REQ_MAGIC + body + bytes([checksum(body)])


def request_length(fmt: LinkFormat, cmd: int) -> int:
    """Bytes of a request (magic, SEQ, command, payload, checksum); a ``CMD_INFER_RLE`` request's
    depends on its images (``len(encode_infer(images, rle=True))``)."""
    if cmd == CMD_INFER_RLE:
        raise ValueError("a run-length coded request's length depends on its images: len(encode_infer(..., rle=True))")
    return 2 + 2 + (fmt.images * fmt.input_bytes if cmd == CMD_INFER else 0) + 1


def reply_length(fmt: LinkFormat, cmd: int) -> int:
    """Bytes of a successful reply (magic, status, SEQ, payload, checksum)."""
    payload = fmt.images * fmt.result_bytes + CYCLES_BYTES if cmd in (CMD_INFER, CMD_INFER_RLE) else INFO_BYTES
    return 2 + 2 + payload + 1


class ReplyParser:
    """Finds replies in a byte stream, whatever else it holds (sans-IO: feed bytes, take frames).

    ``feed(data)`` returns the complete, checksum-valid frames found so far as
    ``(status, seq, frame bytes)``. A "tp" whose frame fails its checksum is taken as noise: the
    search goes on from the byte after that "t". ``cmd_of(seq)`` says which command a reply
    with that SEQ answers (its length depends on it); ``None`` for a SEQ nobody waits for, whose
    frame is then sized as the longest reply and skipped if it does not check.
    """

    def __init__(self, fmt: LinkFormat, cmd_of):
        self.fmt, self.cmd_of = fmt, cmd_of
        self.buf = bytearray()

    def reset(self) -> None:
        """Forget what was fed so far (before a new request: old input is stale)."""
        self.buf.clear()

    def _length(self, status: int, seq: int) -> list:
        if status != STATUS_OK:
            return [5]
        cmd = self.cmd_of(seq)
        if cmd is None:
            return sorted({reply_length(self.fmt, CMD_INFER), reply_length(self.fmt, CMD_INFO)})
        return [reply_length(self.fmt, cmd)]

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        while True:
            i = self.buf.find(REP_MAGIC)
            if i < 0:
                del self.buf[:max(0, len(self.buf) - 1)]       # keep a trailing "t"
                return out
            del self.buf[:i]
            if len(self.buf) < 4:
                return out
            status, seq = self.buf[2], self.buf[3]
            lengths = self._length(status, seq)
            if len(self.buf) < max(lengths):
                if not any(len(self.buf) >= n and not sum(self.buf[2:n]) & 0xFF for n in lengths):
                    return out                                  # wait for the rest
            for n in lengths:
                if len(self.buf) >= n and not sum(self.buf[2:n]) & 0xFF:
                    out.append((status, seq, bytes(self.buf[:n])))
                    del self.buf[:n]
                    break
            else:
                del self.buf[:1]                                 # noise that looked like "t": skip it


def decode_reply(data: bytes, fmt: LinkFormat | None, cmd: int):
    """Check and decode a reply; raises :class:`LinkError` on a bad frame or a non-ok status.

    An INFO reply decodes to a dict of ``INFO_FIELDS``; an infer reply to a list of
    ``fmt.images`` dicts, one per image of the batch: its ``logits``, its ``class`` and the
    ``cycles`` of the batch (the same in each, as :func:`ternpe.flow.sim.simulate` gives them)."""
    if len(data) < 5 or data[:2] != REP_MAGIC:
        raise LinkError(f"not a reply: {data[:8].hex()}...")
    status = data[2]
    if sum(data[2:]) & 0xFF:
        raise LinkError(f"reply with status {status} fails its checksum (line noise?)")
    if status != STATUS_OK:
        raise LinkError(STATUS.get(status, f"unknown status {status}"))
    p = data[4:-1]
    if len(data) != reply_length(fmt, cmd):
        raise LinkError(f"a reply of {len(data)} bytes, not {reply_length(fmt, cmd)}")
    if cmd == CMD_INFO:
        return unpack_info(p)
    L, R = fmt.logit_bytes, fmt.result_bytes
    k = fmt.images * R
    cycles = int.from_bytes(p[k:k + CYCLES_BYTES], "little")
    return [{"logits": [int.from_bytes(p[n * R + i * L:n * R + (i + 1) * L], "little", signed=True)
                        for i in range(fmt.classes)],
             "class": p[n * R + fmt.classes * L], "cycles": cycles} for n in range(fmt.images)]
