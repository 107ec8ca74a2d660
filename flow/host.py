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

from ternpe.link import (CMD_INFER, CMD_INFER_RLE, CMD_INFO, QUIET_BYTES, STATUS, STATUS_BUSY, STATUS_CHECKSUM,
                         STATUS_COMMAND, STATUS_OK, STATUS_TIMEOUT, UART_FRAME_BITS, LinkError, LinkFormat, ReplyParser,
                         decode_reply, encode_infer, encode_info, wrap_seq)

__all__ = ["evaluate", "Board", "SerialTransport", "load_images", "decode_image", "ImageError"]


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
        self.port.flush()           # the request written is on the line (a non-ok reply may come before its end)
        time.sleep(2 * QUIET_BYTES * UART_FRAME_BITS / self.baud + 0.002)
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


class Board:
    """Requests to a board running ``fmt`` (from the export and the plan the bitstream was built
    from: ``LinkFormat.of_plan(plan)``).

    ``retries``: how many times a request is sent again after a busy, timed-out or corrupted
    exchange; then :class:`~ternpe.link.LinkError` says what went wrong. ``stats`` counts
    requests, retries and skipped frames (stale replies or noise). ``rle``: send images
    run-length coded (``CMD_INFER_RLE``; a board that does not know it answers "unknown
    command", and the host sends plain requests from then on)."""

    def __init__(self, transport, fmt: LinkFormat, *, retries: int = 3, rle: bool = True):
        self.t, self.fmt, self.retries, self.rle = transport, fmt, retries, rle
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
        if self.rle:
            try:
                return self._exchange(CMD_INFER_RLE, lambda seq: encode_infer(payload, seq, rle=True))[:n]
            except LinkError as e:
                if STATUS[STATUS_COMMAND] not in str(e):
                    raise
                self.rle = False        # a bitstream from before run-length coding: plain requests from now on
                self.t.quiet()          # (after its non-ok reply the board drops bytes until the line is quiet)
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


class ImageError(ValueError):
    """An ``--images`` file that cannot be read as the network's input, and why."""


def load_images(paths, shape, log=None) -> np.ndarray:
    """Image files (PNG, JPEG, BMP, TIFF, GIF: what Pillow reads) -> ``[N, *shape]`` uint8, each
    read by its format (:func:`decode_image`) and resized by area averaging to ``shape``'s h x w.
    A conversion, a compositing or a resize is said through ``log``, one line per file."""
    h, w, c = shape
    if c not in (1, 3):
        raise ImageError(f"--images: the network takes {c}-channel inputs; --images reads grey (1 channel) "
                         f"and colour (3) pictures")
    out = []
    for p in paths:
        a, notes = decode_image(p, c)
        if a.shape[:2] != (h, w):
            notes.append(f"{a.shape[1]}x{a.shape[0]} resized to the network's {w}x{h} (area average)")
        if notes and log is not None:
            log(f"{p}: {'; '.join(notes)}")
        ys = np.linspace(0, a.shape[0], h + 1).astype(int)
        xs = np.linspace(0, a.shape[1], w + 1).astype(int)
        r = np.array([[a[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)].mean(axis=(0, 1))
                       for j in range(w)] for i in range(h)])
        out.append(np.clip(np.rint(r), 0, 255).astype(np.uint8).reshape(h, w, c))
    return np.stack(out)


#: Pillow modes read through a conversion: to what, and how the output names the original.
_CONVERTED = {"1": ("L", None), "P": ("RGB", "palette colours"), "PA": ("RGBA", "palette colours"),
              "La": ("LA", None), "RGBa": ("RGBA", None), "RGBX": ("RGB", None), "CMYK": ("RGB", "CMYK"),
              "YCbCr": ("RGB", "YCbCr"), "LAB": ("RGB", "Lab"), "HSV": ("RGB", "HSV")}


def decode_image(path, channels: int) -> tuple:
    """The picture in ``path`` as ``(float64 [H, W, channels] on the 8-bit scale 0..255, notes)``.

    Scaled by what the file holds, never by its content: 8-bit (and 1-bit) values as they are,
    16-bit ones / 257 (65535 is white), floating-point ones (TIFF) 0.0 black to 1.0 white, clipped.
    A transparent picture is composited on black, the background of the data sets (MNIST's digits
    are white on black); one that is blank so (its picture only in its alpha channel) is refused.
    Colour becomes grey as the mean of R, G and B; grey is copied to R, G and B. ``notes``: what
    was converted, in words."""
    import pathlib
    from PIL import Image
    p = pathlib.Path(path)
    if not p.is_file():
        if p.is_dir():
            raise ImageError(f"--images: {path} is a directory; give image files")
        if p.exists():
            raise ImageError(f"--images: {path} is not a file; give image files")
        missing = next((d for d in reversed(p.parents) if not d.is_dir()), None)
        raise ImageError(f"--images: {path} does not exist" if missing is None else
                         f"--images: {path}: there is no directory {missing}" if not missing.exists() else
                         f"--images: {path}: {missing} is a file, not a directory")
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            img.load()
            v, alpha, notes = _pixels(img, path)
    except ImageError:
        raise
    except Exception as e:            # Pillow raises several kinds for a file that is not an image
        raise ImageError(f"--images: {path} is not an image Pillow can read ({type(e).__name__})") from None
    if frames > 1:
        notes.insert(0, f"the first of {frames} frames")
    if alpha is not None and (alpha < 1).any():
        composite = v * alpha[..., None]
        if np.ptp(np.rint(composite)) == 0 and np.ptp(alpha) > 0:
            raise ImageError(f"--images: {path} is blank composited on black (the background --images uses: the "
                             f"data sets' digits are white on black): its picture is only in its alpha channel; "
                             f"save it with light strokes, or flattened onto a background")
        v = composite
        notes.append("transparent: composited on black")
    if channels == 1 and v.shape[2] == 3:
        v = v.mean(axis=2, keepdims=True)
        notes.append("colour converted to grey (the mean of R, G and B)")
    elif channels == 3 and v.shape[2] == 1:
        v = np.repeat(v, 3, axis=2)
        notes.append("grey copied to R, G and B")
    return v, notes


def _pixels(img, path) -> tuple:
    """A Pillow image's colour channels on the 8-bit scale ``[H, W, 1 or 3]``, its alpha (0..1,
    or None) and the notes of what was converted."""
    notes, mode = [], img.mode
    if mode in _CONVERTED:
        target, name = _CONVERTED[mode]
        if mode == "P" and "transparency" in img.info:
            target = "RGBA"
        img, mode = img.convert(target), target
        if name:
            notes.append(f"{name} converted to {'RGB' if target.startswith('RGB') else target}")
    if mode.startswith("I;16") or (mode == "I" and img.format == "PNG"):      # older Pillow: 16-bit PNG as I
        notes.append("16-bit, scaled to 8 bits (/ 257)")
        return np.asarray(img, np.float64)[..., None] / 257.0, None, notes
    if mode == "F":
        v = np.asarray(img, np.float64)
        if not np.isfinite(v).all():
            raise ImageError(f"--images: {path} holds NaN or infinite values")
        notes.append("floating point, read as 0.0 black to 1.0 white"
                     + (" (values outside clipped)" if v.min() < 0 or v.max() > 1 else ""))
        return np.clip(v, 0.0, 1.0)[..., None] * 255.0, None, notes
    if mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(f"--images: {path} is a {mode} image (Pillow's mode); save it as 8- or 16-bit grey or "
                         f"RGB")
    v = np.asarray(img, np.float64).reshape(img.height, img.width, len(mode))
    if mode.endswith("A"):
        return v[..., :-1], v[..., -1] / 255.0, notes
    return v, None, notes
