"""The host runtime: talk to a board (or the simulated board) over the host link.

A transport is anything with ``write(bytes)``, ``read_some() -> bytes`` (at least one byte, or
:class:`~ternpe.link.LinkError` on a timeout), ``discard_input()`` and ``quiet()`` (wait until
the board has dropped what is left of a broken request, then discard input):
:class:`SerialTransport` for a real board, ``ternpe.flow.simboard.SimTransport`` for the
simulated one.

:class:`Board` numbers its requests, drops stale input before each, takes only the reply that
carries its request's SEQ and checks (a stale reply, line noise or garbage is skipped, never
returned), and retries a request the board reports busy, timed out or corrupted. A request
carries a batch of the board's image lanes (``LinkFormat.images``): :meth:`Board.infer_batch`
sends up to that many images, :meth:`Board.infer` one (the rest of the batch blank).
"""

from __future__ import annotations

import time

import numpy as np

from ternpe.link import (CMD_INFER, CMD_INFO, QUIET_BYTES, STATUS, STATUS_BUSY, STATUS_CHECKSUM, STATUS_COMMAND, STATUS_OK,
                   STATUS_TIMEOUT, UART_FRAME_BITS, LinkError, LinkFormat, ReplyParser, decode_reply, encode_infer,
                   encode_info, wrap_seq)

__all__ = ["evaluate", "Board", "SerialTransport", "load_images"]


class SerialTransport:
    """A serial port (pyserial). ``timeout`` in seconds for every read."""

    def __init__(self, port: str, baud: int, timeout: float = 2.0):
        self.baud = baud
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

    def read_some(self) -> bytes:
        data = self.port.read(max(1, self.port.in_waiting))
        if not data:
            raise LinkError("no reply from the board before the timeout "
                            "(wrong port or baud rate, or a bitstream without the host link?)")
        return data

    def discard_input(self) -> None:
        self.port.reset_input_buffer()

    def quiet(self) -> None:
        time.sleep(2 * QUIET_BYTES * UART_FRAME_BITS / self.baud + 0.002)
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


class Board:
    """Requests to a board running ``fmt`` (from the export and the plan the bitstream was built
    from: ``LinkFormat.of_plan(plan)``).

    ``retries``: how many times a request is sent again after a busy, timed-out or corrupted
    exchange; then :class:`~ternpe.link.LinkError` says what went wrong. ``stats`` counts
    requests, retries and skipped frames (stale replies or noise)."""

    def __init__(self, transport, fmt: LinkFormat, *, retries: int = 3):
        self.t, self.fmt, self.retries = transport, fmt, retries
        self.seq = 0
        self._waiting: dict = {}
        self.parser = ReplyParser(fmt, self._waiting.get)
        self.stats = {"requests": 0, "retries": 0, "skipped": 0}

    def _next_seq(self) -> int:
        self.seq = wrap_seq(self.seq + 1)
        return self.seq

    def _exchange(self, cmd: int, frame) -> dict:
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                self.t.quiet()
            seq = self._next_seq()
            self.t.discard_input()
            self.parser.reset()
            self._waiting.clear()
            self._waiting[seq] = cmd
            self.stats["requests"] += 1
            self.t.write(frame(seq))
            try:
                status, data = self._await(seq)
            except LinkError as e:
                last = e
                continue
            if status == STATUS_OK:
                return decode_reply(data, self.fmt, cmd)
            last = LinkError(STATUS.get(status, f"unknown status {status}"))
            # this host sends only commands the board knows: "unknown command" to its SEQ is a
            # command byte broken on the line, so it is retried like a bad checksum
            if status not in (STATUS_BUSY, STATUS_TIMEOUT, STATUS_CHECKSUM, STATUS_COMMAND):
                raise last
        raise LinkError(f"no valid reply after {self.retries + 1} attempts; the last: {last}")

    def _await(self, seq: int):
        while True:
            for status, s, data in self.parser.feed(self.t.read_some()):
                if s == seq:
                    return status, data
                self.stats["skipped"] += 1          # a stale reply, or one to a broken request

    def info(self) -> dict:
        return self._exchange(CMD_INFO, encode_info)

    def check(self) -> dict:
        """Ask the board what it runs; refuse a bitstream of another export or batch size."""
        info = self.info()
        if info["export_id"] != self.fmt.export_id:
            raise LinkError(f"the board runs export {info['export_id']:08x}, not {self.fmt.export_id:08x}: "
                            f"build and flash this export, or pass the export the bitstream was built from")
        if info["images"] != self.fmt.images:
            raise LinkError(f"the board takes batches of {info['images']} image(s), not {self.fmt.images}: "
                            f"pass the image lanes (images) the bitstream was built with")
        return info

    def infer(self, image) -> dict:
        """The board's result for ``image``: ``logits``, ``class`` and ``cycles`` (its batch's; with
        more than one image lane the batch is filled with blank images)."""
        return self.infer_batch([image])[0]

    def infer_batch(self, images) -> list:
        """One request: ``images`` (1 to ``fmt.images`` of them; the batch is filled with blank
        images) and the board's result for each, as :meth:`infer` gives it."""
        flats = [np.asarray(image).reshape(-1) for image in images]
        if not 1 <= len(flats) <= self.fmt.images:
            raise ValueError(f"a batch holds 1 to {self.fmt.images} image(s), not {len(flats)}")
        for flat in flats:
            if flat.size != self.fmt.input_bytes:
                raise ValueError(f"the network takes {self.fmt.input_bytes} input bytes, the image has {flat.size}")
            if flat.min(initial=0) < 0 or flat.max(initial=0) > 255:
                raise ValueError("image values must be bytes (0..255)")
        n = len(flats)
        flats += [np.zeros(self.fmt.input_bytes, np.uint8)] * (self.fmt.images - n)
        payload = np.concatenate(flats)
        return self._exchange(CMD_INFER, lambda seq: encode_infer(payload, seq))[:n]


def evaluate(board: Board, images: np.ndarray, labels, reference_logits: np.ndarray, *, progress=None) -> dict:
    """Stream ``images`` through ``board`` in batches of its ``fmt.images`` (the last filled with
    blank images); compare each image's result with the integer model's logits
    (``reference_logits``, what the hardware must compute) and, when ``labels`` is given, score
    accuracy. Returns counts, accuracies, the host's inferences/s (images a second: requests,
    link and board together, wall clock) and every disagreement (there should be none)."""
    n, N = len(images), board.fmt.images
    ref_cls = np.argmax(reference_logits, axis=1)
    out = {"images": n, "disagreements": [], "errors": [], "board_classes": []}
    t0 = time.perf_counter()
    batch = []
    for k in (progress or range)(n):
        batch.append(k)
        if len(batch) < N and k < n - 1:
            continue
        try:
            results = board.infer_batch([images[j] for j in batch])
        except LinkError as e:
            for j in batch:
                out["errors"].append({"image": j, "error": str(e)})
                out["board_classes"].append(-1)
            batch = []
            continue
        for j, r in zip(batch, results):
            out["board_classes"].append(r["class"])
            want = [int(v) for v in reference_logits[j]]
            if r["logits"] != want or r["class"] != int(ref_cls[j]):
                out["disagreements"].append({"image": j, "board": r["logits"], "board_class": r["class"],
                                             "integer_model": want, "integer_class": int(ref_cls[j])})
        batch = []
    out["seconds"] = time.perf_counter() - t0
    out["inferences_per_s"] = n / out["seconds"] if out["seconds"] > 0 else float("inf")
    if labels is not None:
        labels = np.asarray(labels)
        out["accuracy"] = float(np.mean(np.asarray(out["board_classes"]) == labels))
        out["integer_accuracy"] = float(np.mean(ref_cls == labels))
    return out


def load_images(paths, shape, log=None) -> np.ndarray:
    """PNG/JPEG files -> ``[N, *shape]`` uint8 (grey, resized by area averaging to ``shape``'s h x w)."""
    import pathlib
    import matplotlib.image as mpimg
    h, w, c = shape
    out = []
    for p in paths:
        if not pathlib.Path(p).is_file():
            raise ValueError(f"--images: {p} does not exist")
        try:
            a = np.asarray(mpimg.imread(p), np.float64)
        except Exception as e:            # PIL raises several kinds for a file that is not an image
            raise ValueError(f"--images: {p} is not an image PNG/JPEG can read ({type(e).__name__})") from None
        if a.shape[:2] != (h, w) and log is not None:
            log(f"{p}: {a.shape[1]}x{a.shape[0]} resized to the network's {w}x{h}")
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
