"""The host link's framing, shared by the board (hw/hostlink.py) and the host (ternpe/host.py).

Requests (host -> board)::

    "T" "P" CMD [payload] CHK

* ``CMD_INFER`` (0x01): the payload is the image, ``input_bytes`` bytes in ``(h, w, c)`` order.
* ``CMD_INFO`` (0x02): no payload.

``CHK`` makes the 8-bit sum of ``CMD``, the payload and ``CHK`` zero.

Replies (board -> host)::

    "t" "p" STATUS [payload] CHK

``STATUS`` 0 is success; then for ``CMD_INFER`` the payload is ``classes`` logits of
``logit_bytes`` bytes each (two's complement, little-endian), the class (1 byte) and the cycles
of the inference (4 bytes, little-endian); for ``CMD_INFO`` it is the export id (4 bytes), the
input bytes (2), the classes (1) and the logit bytes (1). Any other status has no payload:
``STATUS_CHECKSUM`` (the request's checksum was wrong; the inference was dropped),
``STATUS_TIMEOUT`` (the request stopped arriving mid-way) and ``STATUS_COMMAND`` (unknown
command). ``CHK`` makes the 8-bit sum of ``STATUS``, the payload and ``CHK`` zero. Bytes outside
a request (anything before "TP") are ignored, so a host can always resynchronise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

__all__ = ["REQ_MAGIC", "REP_MAGIC", "CMD_INFER", "CMD_INFO", "STATUS", "LinkError", "LinkFormat",
           "checksum", "export_id", "encode_infer", "encode_info", "request_length", "reply_length", "decode_reply"]

REQ_MAGIC = b"TP"
REP_MAGIC = b"tp"
CMD_INFER, CMD_INFO = 0x01, 0x02
STATUS_OK, STATUS_CHECKSUM, STATUS_TIMEOUT, STATUS_COMMAND = 0, 1, 2, 3
STATUS = {STATUS_OK: "ok", STATUS_CHECKSUM: "the board saw a wrong request checksum",
          STATUS_TIMEOUT: "the request stopped arriving mid-way (board timeout)",
          STATUS_COMMAND: "the board does not know the command"}
INFO_BYTES = 8


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
    input_bytes: int
    classes: int
    logit_bytes: int
    export_id: int

    @classmethod
    def of(cls, export, out_bits: int) -> "LinkFormat":
        n_in = int(export.golden["inputs"][0].size)
        return cls(n_in, export.layers[-1].spec.cout, -(-out_bits // 8), export_id(export.manifest))


def encode_infer(image) -> bytes:
    body = bytes([CMD_INFER]) + bytes(int(v) for v in image)
    return REQ_MAGIC + body + bytes([checksum(body)])


def encode_info() -> bytes:
    return REQ_MAGIC + bytes([CMD_INFO, checksum(bytes([CMD_INFO]))])


def request_length(fmt: LinkFormat, cmd: int) -> int:
    """Bytes of a request (magic, command, payload, checksum)."""
    return 2 + 1 + (fmt.input_bytes if cmd == CMD_INFER else 0) + 1


def reply_length(fmt: LinkFormat, cmd: int) -> int:
    """Bytes of a successful reply (magic, status, payload, checksum)."""
    payload = fmt.classes * fmt.logit_bytes + 1 + 4 if cmd == CMD_INFER else INFO_BYTES
    return 2 + 1 + payload + 1


def decode_reply(data: bytes, fmt: LinkFormat | None, cmd: int) -> dict:
    """Check and decode a reply; raises :class:`LinkError` on a bad frame or a non-ok status."""
    if len(data) < 4 or data[:2] != REP_MAGIC:
        raise LinkError(f"not a reply: {data[:8].hex()}...")
    status = data[2]
    if status != STATUS_OK:
        if sum(data[2:4]) & 0xFF:
            raise LinkError(f"reply with status {status} fails its checksum")
        raise LinkError(STATUS.get(status, f"unknown status {status}"))
    if sum(data[2:]) & 0xFF:
        raise LinkError("reply fails its checksum (line noise?)")
    p = data[3:-1]
    if cmd == CMD_INFO:
        return {"export_id": int.from_bytes(p[0:4], "little"), "input_bytes": int.from_bytes(p[4:6], "little"),
                "classes": p[6], "logit_bytes": p[7]}
    L = fmt.logit_bytes
    logits = [int.from_bytes(p[i * L:(i + 1) * L], "little", signed=True) for i in range(fmt.classes)]
    k = fmt.classes * L
    return {"logits": logits, "class": p[k], "cycles": int.from_bytes(p[k + 1:k + 5], "little")}
