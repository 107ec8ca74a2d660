"""The input buffer: two image slots, so the next image streams in while the current one computes.

The image is stored raw (one pixel per pixel, never as im2col words). Two layouts:

* **patch banks** (a first layer with fewer input channels than lanes, ``cin < G``: window
  mode). ``R`` banks (``R = k + 1`` with a 2x2 pool after the layer, else ``k``; stride 1);
  image row ``y`` lives in bank ``y mod R`` at ``(y div R) * W + x``, one pixel (``cin``
  bytes) per entry. Any ``R`` consecutive rows are one row per bank, so one read of every bank
  yields a whole column of a pixel's ``R x R`` patch. A gatherer reads the ``R`` columns of the
  next output pixel's patch into ``shadow`` while the array works on ``cur``; ``win_word``
  selects, per lane, the patch element that the contract's ``window_offsets`` names for pool
  position ``q`` and tile word ``j``. Patch pixels outside the image read as zero (padding).
* **words** (``cin >= G``): ``G`` channels per word in ``(h, w, c)`` order, read by the
  controller's addresses like any activation memory.

Slot bookkeeping: ``ready`` says the read slot holds a whole image; ``start`` begins a pass over
it (and the gathering of its first patch), ``release`` frees it for the loader.
"""

from __future__ import annotations

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import unsigned_bits
from ternpe.cycles import patch_rows
from .plan import MemoryName, input_memories, log2ceil
from .spram import SinglePortRAM

__all__ = ["InputBuffer"]


class InputBuffer(wiring.Component):
    """The image, two slots deep: the next one streams in while this one is computed.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        Its first layer's window mode chooses patch banks or words; ``plan.options.spram`` puts
        the banks in SPRAMs.
    adv_delay : int
        Cycles from ``win_adv`` to the first use of the new patch by ``win_sel``.
    slack : bool
        A four-entry input FIFO and ``space``: a registered hint for a producer that decides from
        registers only (the image lanes' distributor, far from the lane).

    Members
    -------
    input : In(stream.Signature(unsigned(act_bits)))
        Pixels in ``(h, w, c)`` order.
    ready : Out(1)
        The read slot holds a whole image.
    start, release : In(1)
        Begin a pass over the read slot; free it (the next slot becomes the read slot).
    rd_addr : In(24), rd_data : Out(G*act_bits)
        Word mode: word ``rd_addr`` of the read slot, one cycle later.
    win_ok : Out(1), win_adv : In(1)
        Window mode: the next patch is gathered; take it.
    win_q : In(2), win_j : In(words), win_word : Out(G*act_bits)
        Window mode: the lanes of tile word ``win_j`` at pool position ``win_q`` of the current
        patch (combinational).
    space : Out(1)
        With ``slack``: at most one pixel was waiting in the input FIFO a cycle ago, so it takes
        a pixel in each of the next two cycles (whatever ``input.ready`` says then).
    """

    def __init__(self, plan, *, adv_delay: int = 2, slack: bool = False):
        export = self.export = plan.export
        self.window, self.spram, self.adv_delay = plan.window, plan.options.spram, adv_delay
        self.slack = slack
        l0 = export.layers[0]
        self.spec, self.layout = l0.spec, l0.layout
        G, A = export.geometry.G, export.act_bits
        super().__init__({
            "input": In(stream.Signature(A)), "ready": Out(1), "start": In(1), "release": In(1),
            "rd_addr": In(24), "rd_data": Out(G * A),
            "win_ok": Out(1), "win_adv": In(1), "win_q": In(2),
            "win_j": In(range(max(2, self.layout.words_per_tile))), "win_word": Out(G * A),
            "space": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s, A, G = self.spec, self.export.act_bits, self.export.geometry.G
        # slots: the loader fills wslot, the compute side reads rslot
        full = Signal(2)
        wslot, rslot = Signal(), Signal()
        m.d.comb += self.ready.eq(full.bit_select(rslot, 1))
        set_full, clr_full = Signal(2), Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        with m.If(self.release):
            m.d.comb += clr_full.eq(Mux(rslot, 0b10, 0b01))
            m.d.sync += rslot.eq(~rslot)
        # a two-entry FIFO takes the stream: its ready is a register, so nothing of the memory
        # arbitration below reaches the producer (the host link) in the same cycle
        m.submodules.skid = skid = SyncFIFO(width=A, depth=4 if self.slack else 2)
        m.d.comb += [skid.w_data.eq(self.input.payload), skid.w_en.eq(self.input.valid),
                     self.input.ready.eq(skid.w_rdy)]
        if self.slack:          # two writes may follow before a producer sees this: 1 + 2 <= 4 - 1
            m.d.sync += self.space.eq(skid.w_level <= 1)
        # a pixel is taken while its slot is free, and (single-port banks) not while the gatherer
        # reads (a register: the banks' write enables are a short path from flip-flops)
        reading = Signal()
        m.d.comb += skid.r_en.eq(~full.bit_select(wslot, 1) & ~reading)
        accept = skid.r_rdy & skid.r_en
        pixel = skid.r_data
        last_pixel = Signal()
        with m.If(accept & last_pixel):
            m.d.comb += set_full.eq(Mux(wslot, 0b10, 0b01))
            m.d.sync += wslot.eq(~wslot)
        mems = input_memories(s, G, A, self.window)
        if self.window:
            self._banks(m, mems, pixel, accept, last_pixel, reading, wslot, rslot)
        else:
            self._words(m, mems, pixel, accept, last_pixel, wslot, rslot)
        return m

    def _words(self, m, mems, pixel, accept, last_pixel, wslot, rslot):
        s, A, G = self.spec, self.export.act_bits, self.export.geometry.G
        width, depth = mems[MemoryName.INPUT]
        m.submodules.mem = mem = Memory(shape=width, depth=depth, init=[])
        rd, wr = mem.read_port(), mem.write_port(granularity=A)
        abits = log2ceil(depth) - 1
        n = s.in_h * s.in_w * s.cin
        i, word, lane = Signal(range(n + 1)), Signal(max(1, abits)), Signal(range(G))
        m.d.comb += last_pixel.eq(i == n - 1)
        # the write is registered: address and lane come from counters, the data from the stream
        with m.If(accept):
            m.d.sync += [wr.addr.eq(Cat(word[:abits], wslot)), wr.data.eq(pixel.replicate(G)),
                         wr.en.eq(Const(1, G) << lane), i.eq(i + 1), lane.eq(lane + 1)]
            with m.If(lane == G - 1):
                m.d.sync += word.eq(word + 1)
            with m.If(last_pixel):
                m.d.sync += [i.eq(0), word.eq(0), lane.eq(0)]
        with m.Else():
            m.d.sync += wr.en.eq(0)
        m.d.comb += [rd.addr.eq(Cat(self.rd_addr[:abits], rslot)), self.rd_data.eq(rd.data)]

    def _banks(self, m, mems, pixel, accept, last_pixel, reading, wslot, rslot):
        s, A, G = self.spec, self.export.act_bits, self.export.geometry.G
        H, W, C, R, pad = s.in_h, s.in_w, s.cin, patch_rows(s), s.pad
        npool = 2 if s.pool else 1
        width, depth = mems[MemoryName.input_bank(0)]
        abits = log2ceil(depth) - 1
        banks = []
        for b in range(R):
            m.submodules[f"bank{b}"] = ram = SinglePortRAM(width=width, depth=depth, lane_bits=A, spram=self.spram)
            banks.append(ram)

        w_addr = self._bank_loader(m, banks, pixel, accept, last_pixel, wslot, abits)

        oh, ow = s.out_h, s.out_w
        gpy, gpx = Signal(range(oh + 1), name="gpy"), Signal(range(ow + 1), name="gpx")
        bases, rot, rowok = self._row_table(m, gpy, abits)
        xcol = Signal(signed(unsigned_bits(W + 2 * R + 2) + 1), name="xcol")
        col = Signal(range(R + 1), name="col")
        pix_last = (gpx == ow - 1) & (gpy == oh - 1)
        for b, ram in enumerate(banks):
            m.d.comb += ram.addr.eq(Mux(reading, Cat((bases[b] + xcol)[:abits], rslot), w_addr))
        shadow = self._land(m, banks, reading, col, xcol, rot, rowok, width)
        adv = [self.win_adv]
        for n in range(self.adv_delay):
            a = Signal(name=f"adv_d{n + 1}")
            m.d.sync += a.eq(adv[-1])
            adv.append(a)
        cur = [[Signal(width, name=f"patch{r}_{c}", reset_less=True) for c in range(R)] for r in range(R)]
        with m.If(adv[-1]):
            m.d.sync += [cur[r][c].eq(shadow[r][c]) for r in range(R) for c in range(R)]
        x0 = Signal.like(xcol)
        shadow_last = Signal()        # the shadow holds the layer's last pixel
        with m.FSM(name="gather"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [gpy.eq(0), gpx.eq(0), x0.eq(-pad), xcol.eq(-pad), col.eq(0)]
                    m.next = "TABLE"
            with m.State("TABLE"):          # the first row's table is registered
                m.d.sync += reading.eq(1)
                m.next = "READ"
            with m.State("READ"):           # `reading` is a register, set as READ is entered
                m.d.sync += [col.eq(col + 1), xcol.eq(xcol + 1)]
                with m.If(col == R - 1):
                    m.d.sync += reading.eq(0)
                    m.next = "LAST"
            with m.State("LAST"):           # the last column's data is registered
                m.next = "LAND"
            with m.State("LAND"):           # the last column lands in the shadow; step to the next pixel
                m.d.sync += [shadow_last.eq(pix_last), col.eq(0)]
                with m.If(gpx == ow - 1):
                    m.d.sync += [gpx.eq(0), gpy.eq(gpy + 1), x0.eq(-pad), xcol.eq(-pad)]
                with m.Else():
                    m.d.sync += [gpx.eq(gpx + 1), x0.eq(x0 + npool), xcol.eq(x0 + npool)]
                m.next = "HOLD"
            with m.State("HOLD"):           # win_adv is acted on one cycle later (adv[1]): a short path
                m.d.comb += self.win_ok.eq(~adv[1])      # taken: not ready again
                with m.If(adv[1]):
                    with m.If(shadow_last):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += reading.eq(1)
                        m.next = "READ"

        self._window_lanes(m, cur)

    def _row_table(self, m, gpy, abits) -> tuple:
        """Per output pixel row ``gpy``: each bank's row base, the rotation of the banks into patch
        rows, and which patch rows lie inside the image (a registered ROM lookup: ``gpy`` steps
        when a gather ends, so the row's table is ready long before the next gather reads)."""
        s, R = self.spec, patch_rows(self.spec)
        H, W, pad, npool = s.in_h, s.in_w, s.pad, 2 if s.pool else 1
        base_t, rot_t, rowok_t = [[] for _ in range(R)], [], []
        for gy in range(s.out_h):
            y0 = gy * npool - pad
            for b in range(R):
                y = y0 + (b - y0) % R
                base_t[b].append((y // R) * W if 0 <= y < H else 0)
            rot_t.append(y0 % R)
            rowok_t.append(sum(1 << r for r in range(R) if 0 <= y0 + r < H))
        bases = [Signal(max(1, abits), name=f"g_base{b}") for b in range(R)]
        rot, rowok = Signal(range(R), name="rot"), Signal(R, name="rowok")
        m.d.sync += [bases[b].eq(Array(Const(v, max(1, abits)) for v in base_t[b])[gpy]) for b in range(R)]
        m.d.sync += [rot.eq(Array(rot_t)[gpy]), rowok.eq(Array(Const(v, R) for v in rowok_t)[gpy])]
        return bases, rot, rowok

    def _land(self, m, banks, reading, col, xcol, rot, rowok, width) -> list:
        """The shadow patch: the bank outputs are registered as they are (block RAM outputs are
        slow), then column ``d2_col`` of the shadow is written: patch row r is bank (rot + r) mod R."""
        R, W = patch_rows(self.spec), self.spec.in_w
        # data registers, every column written per pixel: without reset (as bank_data)
        shadow = [[Signal(width, name=f"shadow{r}_{c}", reset_less=True) for c in range(R)] for r in range(R)]
        d_reading, d_col, d_xok = Signal(name="d_reading"), Signal(range(R + 1), name="d_col"), Signal(name="d_xok")
        d2_reading, d2_col, d2_xok = Signal(name="d2_reading"), Signal.like(d_col, name="d2_col"), Signal(name="d2_xok")
        bank_data = [Signal(width, name=f"bank_data{b}", reset_less=True) for b in range(R)]
        m.d.sync += [d_reading.eq(reading), d_col.eq(col), d_xok.eq((xcol >= 0) & (xcol < W)),
                     d2_reading.eq(d_reading), d2_col.eq(d_col), d2_xok.eq(d_xok)]
        m.d.sync += [bank_data[b].eq(banks[b].rdata) for b in range(R)]
        with m.If(d2_reading):
            for r in range(R):
                data = Array(bank_data[(b + r) % R] for b in range(R))[rot]
                with m.Switch(d2_col):
                    for c in range(R):
                        with m.Case(c):
                            m.d.sync += shadow[r][c].eq(Mux(d2_xok & rowok[r], data, 0))
        return shadow

    def _bank_loader(self, m, banks, pixel, accept, last_pixel, wslot, abits):
        """The image into the banks, raster order: pixel (y, x, c) -> bank y mod R, entry
        (y div R) * W + x, byte c, from running counters. The banks are single-port: a pixel is
        taken only in a cycle when the gatherer does not read."""
        s, A = self.spec, self.export.act_bits
        H, W, C, R = s.in_h, s.in_w, s.cin, patch_rows(s)
        ly, lx = Signal(range(H + 1)), Signal(range(W + 1))
        # the bank (y mod R) and the byte (c) as one-hot registers, stepped with the counters: a
        # bank's write enable is then an AND of flip-flops
        bank_oh, lane_en = Signal(R, init=1, name="bank_oh"), Signal(C, init=1, name="lane_oh")
        grp, addr = Signal(max(1, abits)), Signal(max(1, abits))    # row-group base, entry
        last_c = lane_en[C - 1]
        m.d.comb += last_pixel.eq((ly == H - 1) & (lx == W - 1) & last_c)
        with m.If(accept):
            m.d.sync += lane_en.eq(lane_en.rotate_left(1))
            with m.If(last_c):
                m.d.sync += [lx.eq(lx + 1), addr.eq(addr + 1)]
                with m.If(lx == W - 1):
                    m.d.sync += [lx.eq(0), ly.eq(ly + 1), bank_oh.eq(bank_oh.rotate_left(1)), addr.eq(grp)]
                    with m.If(bank_oh[R - 1]):
                        m.d.sync += [grp.eq(grp + W), addr.eq(grp + W)]
                    with m.If(ly == H - 1):
                        m.d.sync += [ly.eq(0), bank_oh.eq(1), grp.eq(0), addr.eq(0)]
        w_addr = Cat(addr[:abits], wslot)
        for b, ram in enumerate(banks):
            m.d.comb += [ram.wdata.eq(pixel.replicate(C)),
                         ram.wen.eq(Mux(accept & bank_oh[b], lane_en, 0))]
        return w_addr

    def _window_lanes(self, m, cur):
        """The lanes of word ``win_j`` at pool position ``win_q``, picked from the current patch."""
        s, A, G = self.spec, self.export.act_bits, self.export.geometry.G
        offs = self.layout.window_offsets()         # [words, G, (ky, kx, c)]
        nq = s.pool_positions
        words = self.layout.words_per_tile
        sel = Signal(range(4 * words))
        m.d.comb += sel.eq(self.win_q * words + self.win_j if words > 1 else self.win_q)
        lanes = []
        for lane in range(G):
            choices = []
            for qq in range(4):
                dy, dx = (qq >> 1, qq & 1) if nq == 4 else (0, 0)
                for jj in range(words):
                    ky, kx, c = (int(v) for v in offs[jj, lane])
                    if ky < 0 or qq >= nq:
                        choices.append(Const(0, A))
                    else:
                        choices.append(cur[dy + ky][dx + kx][c * A:(c + 1) * A])
            if all(isinstance(ch, Const) for ch in choices):
                lanes.append(Const(0, A))
            else:
                lanes.append(Array(choices)[sel])
        m.d.comb += self.win_word.eq(Cat(*lanes))
