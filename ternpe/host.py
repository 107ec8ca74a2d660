"""The host runtime: talk to a board (or the simulated board) over the host link.

A transport is anything with ``write(bytes)`` and ``read(n) -> bytes`` (raising
:class:`~ternpe.link.LinkError` on a timeout): :class:`SerialTransport` for a real board,
``ternpe.flow.simboard.SimTransport`` for the simulated one.
"""

from __future__ import annotations

import numpy as np

from .link import CMD_INFER, CMD_INFO, REP_MAGIC, LinkError, LinkFormat, decode_reply, encode_infer, \
    encode_info, reply_length

__all__ = ["Board", "SerialTransport", "load_images"]


class SerialTransport:
    """A serial port (pyserial). ``timeout`` in seconds for every read."""

    def __init__(self, port: str, baud: int, timeout: float = 2.0):
        try:
            import serial
        except ImportError:
            raise LinkError("pyserial is missing: run make setup (pip install pyserial)") from None
        try:
            self.port = serial.Serial(port, baud, timeout=timeout)
        except serial.SerialException as e:
            raise LinkError(f"cannot open {port}: {e} (is the board plugged in? `ls /dev/ttyUSB*`)") from None
        self.port.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int) -> bytes:
        data = self.port.read(n)
        if len(data) < n:
            raise LinkError(f"the board answered {len(data)} of {n} bytes before the timeout "
                            f"(wrong port or baud rate, or a bitstream without the host link?)")
        return data

    def close(self) -> None:
        self.port.close()


class Board:
    """Requests to a board running ``fmt`` (from the export the bitstream was built from)."""

    def __init__(self, transport, fmt: LinkFormat):
        self.t, self.fmt = transport, fmt

    def _reply(self, cmd: int) -> dict:
        head = self.t.read(3)
        if head[:2] != REP_MAGIC:
            raise LinkError(f"not a reply from a ternpe board: {head.hex()}")
        rest = self.t.read(1 if head[2] else reply_length(self.fmt, cmd) - 3)
        return decode_reply(head + rest, self.fmt, cmd)

    def info(self) -> dict:
        self.t.write(encode_info())
        return self._reply(CMD_INFO)

    def check(self) -> dict:
        """Ask the board what it runs; refuse a bitstream of another export."""
        info = self.info()
        if info["export_id"] != self.fmt.export_id:
            raise LinkError(f"the board runs export {info['export_id']:08x}, not {self.fmt.export_id:08x}: "
                            f"build and flash this export, or pass the export the bitstream was built from")
        return info

    def infer(self, image) -> dict:
        flat = np.asarray(image).reshape(-1)
        if flat.size != self.fmt.input_bytes:
            raise ValueError(f"the network takes {self.fmt.input_bytes} input bytes, the image has {flat.size}")
        if flat.min(initial=0) < 0 or flat.max(initial=0) > 255:
            raise ValueError("image values must be bytes (0..255)")
        self.t.write(encode_infer(flat))
        return self._reply(CMD_INFER)


def load_images(paths, shape) -> np.ndarray:
    """PNG/JPEG files -> ``[N, *shape]`` uint8 (grey, resized by area averaging to ``shape``'s h x w)."""
    import matplotlib.image as mpimg
    h, w, c = shape
    out = []
    for p in paths:
        a = np.asarray(mpimg.imread(p), np.float64)
        if a.dtype.kind == "f" and a.max() <= 1.0:
            a = a * 255.0
        if a.ndim == 3:
            a = a[..., :3].mean(axis=2) if c == 1 else a[..., :c]
        if a.ndim == 2:
            a = a[..., None]
        ys = np.linspace(0, a.shape[0], h + 1).astype(int)
        xs = np.linspace(0, a.shape[1], w + 1).astype(int)
        r = np.array([[a[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)].mean(axis=(0, 1))
                       for j in range(w)] for i in range(h)])
        out.append(np.clip(np.rint(r), 0, 255).astype(np.uint8).reshape(h, w, c))
    return np.stack(out)
