"""``hidden_wire_width``: drafter hidden rows zero-padded on the wire to a wider drafter's width
(e.g. Llama-3.2-1B's 2048), the padding dropped at the edge before the head — link costs of the
wide drafter, decisions of the shipped pair's head."""
from __future__ import annotations

import json

import numpy as np
import pytest

from channel_models.csi import CSI
from nodes.config import RunConfig, TaskConfig
from nodes.wire import Draft, Error, Hello, HelloAck, HiddenRequest, Start, StartAck, Verdict, array_nbytes, decode, encode
from runs.simulate import simulate
from traces.synthetic import step_trace

WIDE = 2048
DECISION_COLUMNS = ("request_id", "round", "drafted", "accepted", "accepted_exact", "first_mismatch", "harmless",
                    "next_token", "round_trips", "upload")


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


def _rounds(path) -> list[dict]:
    return [json.loads(x) for x in open(path)]


def _draft_size(width: int, gamma: int, dtype: str) -> int:
    """Bytes of a draft carrying ``gamma`` hidden rows ``width`` wide (other fields fixed)."""
    return sum(len(f) for f in encode(Draft("r", 1, [1] * gamma, CSI().to_wire(), np.zeros((gamma, width)), None, "s"),
                                      {"hidden": dtype}))


@pytest.mark.parametrize("dtype", ["f16", "i8"])
def test_padding_grows_the_bytes_and_keeps_the_decisions(pair, tmp_path, dtype):
    own = int(pair.drafter.config.hidden_size)
    assert own < WIDE
    trace = step_trace(100.0, 30.0, [4e6], [10.0], [0.0])  # constant link: the CSI does not move with timing
    protocols = ["wisv-full", "wisv-selective", "wisv-adaptive"]
    logs = {}
    for name, width in (("own", None), ("wide", WIDE)):
        cfg = RunConfig(task=TaskConfig(problems=2), hidden_dtype=dtype, hidden_wire_width=width)
        res = simulate(pair, trace, cfg, protocols, out_dir=tmp_path / name)
        assert all(r.failed == 0 for r in res.values())
        logs[name] = {p: _rounds(tmp_path / name / f"rounds-{p}.jsonl") for p in protocols}
    row_growth = array_nbytes((1, WIDE), dtype) - array_nbytes((1, own), dtype)
    for p in ("wisv-full", "wisv-selective"):
        own_rounds, wide_rounds = logs["own"][p], logs["wide"][p]
        assert [[r[c] for c in DECISION_COLUMNS] for r in own_rounds] == \
               [[r[c] for c in DECISION_COLUMNS] for r in wide_rounds]  # the same decisions, round by round
        for a, b in zip(own_rounds, wide_rounds):
            grown = b["up_bytes"] - a["up_bytes"]
            if p == "wisv-full":  # exactly the draft's rows, each wider (plus the wider shape in the header)
                assert grown == _draft_size(WIDE, a["drafted"], dtype) - _draft_size(own, a["drafted"], dtype)
            else:  # nothing up front; each requested row wider
                assert (grown > 0) == (a["round_trips"] == 2)
                assert grown % row_growth in (0, 2) and grown < a["drafted"] * row_growth + 8
    full_own = sum(r["up_bytes"] for r in logs["own"]["wisv-full"])
    full_wide = sum(r["up_bytes"] for r in logs["wide"]["wisv-full"])
    assert full_wide > full_own + 0.9 * row_growth * sum(r["drafted"] for r in logs["own"]["wisv-full"])
    # and at 4 Mbit/s the wider rows cost time: full's rounds are slower on the wire
    assert sum(r["link_ms"] for r in logs["wide"]["wisv-full"]) > sum(r["link_ms"] for r in logs["own"]["wisv-full"])


def test_upload_chooser_prices_the_wire_width(pair):
    from nodes.device import DeviceClient

    for dtype in ("f16", "f32", "i8"):
        wide = DeviceClient(pair.drafter, RunConfig(protocol="wisv-adaptive", hidden_dtype=dtype, hidden_wire_width=WIDE),
                            pair.eos_token_id, transport=None)
        assert wide.side.chooser.bytes_per_row == array_nbytes((1, WIDE), dtype)  # the protocol's device side
        own = DeviceClient(pair.drafter, RunConfig(protocol="wisv-adaptive", hidden_dtype=dtype), pair.eos_token_id,
                           transport=None)
        assert own.side.chooser.bytes_per_row == array_nbytes((1, int(pair.drafter.config.hidden_size)), dtype)


def test_narrower_than_the_drafter_is_refused(pair, tmp_path):
    from nodes.device import DeviceClient
    from runs.spec import SpecError, load_spec

    own = int(pair.drafter.config.hidden_size)
    with pytest.raises(ValueError, match="below the drafter"):
        DeviceClient(pair.drafter, RunConfig(hidden_wire_width=own - 1), pair.eos_token_id, transport=None)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"hidden_wire_width: {own - 1}\n")
    with pytest.raises(SpecError, match="hidden_wire_width"):
        load_spec(spec)
    spec.write_text("hidden_wire_width: 2048\nhidden_dtype: i8\n")
    cfg = load_spec(spec)[0].run_config(0, "x")
    assert cfg.hidden_wire_width == WIDE and RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def _session(edge, width: int):
    ack = decode(edge.handle_frames(b"d", encode(Hello("d", "wisv-full", 4, hidden_wire_width=width))))
    return ack


def test_edge_checks_the_padded_shape_and_drops_zero_padding(pair):
    from nodes.edge import EdgeServer
    from nodes.evaluate import encode_prompt
    from nodes.tasks import ArithTask

    own = int(pair.drafter.config.hidden_size)
    edge = EdgeServer(pair.target, pair.eos_token_id, bind=None)
    assert decode(edge.handle_frames(b"d", encode(Hello("d", "wisv-full", 4, hidden_wire_width=own - 1)))).code \
        == "bad_request"  # narrower than the head's drafter rows
    ack = _session(edge, WIDE)
    assert isinstance(ack, HelloAck)
    prompt = encode_prompt(pair, ArithTask().problems("test", 1)[0])

    def draft(hidden: np.ndarray, rid: str) -> object:
        assert isinstance(decode(edge.handle_frames(b"d", encode(Start(rid, prompt, 16, ack.secret)))), StartAck)
        return decode(edge.handle_frames(b"d", encode(Draft(rid, 0, [5, 6, 7, 8], CSI().to_wire(), hidden, None,
                                                            ack.secret))))

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((4, own)).astype(np.float32)
    assert draft(rows, "a").code == "bad_request"  # the drafter's own width where 2048 was announced
    noisy = np.concatenate([rows, rng.standard_normal((4, WIDE - own)).astype(np.float32)], axis=1)
    reply = draft(noisy, "b")
    assert isinstance(reply, Error) and reply.code == "bad_request" and "non-zero" in reply.message
    padded = np.concatenate([rows, np.zeros((4, WIDE - own), np.float32)], axis=1)
    assert isinstance(draft(padded, "c"), (Verdict, HiddenRequest))


def test_upload_chooser_prices_the_losses_of_the_extra_segments():
    from nodes.protocols.adaptive import UploadChooser, upload_costs_ms

    c = UploadChooser(bytes_per_row=4096)  # a 2048-wide f16 row
    clean = CSI(rate_up_mbps=20.0, delay_up_ms=10.0, delay_down_ms=10.0)
    lossy = CSI(rate_up_mbps=20.0, delay_up_ms=10.0, delay_down_ms=10.0, loss_up=0.2)
    assert c.choose(4, clean) == "all"  # 16 kB at 20 Mbit/s (7 ms) against half a 20 ms round trip
    full_ms, sel_ms = c.costs_ms(4, lossy)
    # 11 more segments than a bare draft, each lost with p 0.2 at a 200 ms RTO: ~440 ms more for full
    assert full_ms == pytest.approx(upload_costs_ms(clean, 4, 4096, 0.5, 1.0)[0] + 11 * 0.2 * 200.0)
    assert full_ms > sel_ms and c.choose(4, lossy) == "mismatch"


def test_upload_chooser_expects_fewer_mismatches_in_shorter_drafts():
    from nodes.protocols.adaptive import UploadChooser

    c = UploadChooser(bytes_per_row=4096)
    for first in [2, -1, 0, 3, -1, 1] * 10:  # 4-token rounds: 4 of 6 have a mismatch
        c.observe(4, first, rows=1 if first >= 0 else 0)
    assert 0.5 < c.p_mismatch(4) < 0.8 and c.p_mismatch(1) < 0.4 * c.p_mismatch(4)
    # at 7 Mbit/s and a 20 ms RTT a 4-token draft's rows (19 ms) cost more than a likely second exchange
    # (0.64 × 25 ms); one row (5 ms) costs less than an unlikely one (0.23 × 25 ms)
    slow = CSI(rate_up_mbps=7.0, delay_up_ms=10.0, delay_down_ms=10.0)
    assert c.choose(4, slow) == "mismatch" and c.choose(1, slow) == "all"


def test_crossover_interpolates_where_selective_stops_paying():
    from benchmarks.upload_crossover import crossover

    def row(axis, x, ratio, predicted, adaptive_lo):
        return {"axis": axis, "x": x, "hidden_dtype": "f16", "hidden_wire_width": WIDE, "gamma": 4,
                "ratio": ratio, "ratio_lo": ratio - 0.05, "ratio_hi": ratio + 0.05, "predicted_ratio": predicted,
                "adaptive_ratio": adaptive_lo + 0.01, "adaptive_ratio_lo": adaptive_lo, "adaptive_ratio_hi": adaptive_lo + 0.02}

    snr = [row("snr_db", -5, 0.6, 0.7, 0.98), row("snr_db", 5, 0.8, 0.9, 0.99), row("snr_db", 15, 1.2, 1.1, 0.99)]
    rate = [{**row("rate_mbps", r, q, q, lo), "rtt_ms": 20.0} for r, q, lo in ((1, 0.5, 0.99), (100, 1.5, 1.01))]
    res = crossover(snr + rate)
    s, r = res["curves"]["snr_db:f16/w2048/g4"], res["curves"]["rate_mbps:f16/w2048/g4/rtt20"]
    assert s["measured"] == pytest.approx(10.0) and s["predicted"] == pytest.approx(10.0)  # linear in dB
    assert s["selective_pays"] == [-5, 5] and s["full_pays"] == [15] and s["adaptive_ok"]
    assert r["measured"] == pytest.approx(10.0)  # geometric mean of 1 and 100: interpolated in log rate
    assert r["adaptive_worse_at"] == [100] and not res["adaptive_ok_everywhere"]
    assert res["adaptive_worst"]["setting"].startswith("rate_mbps")
