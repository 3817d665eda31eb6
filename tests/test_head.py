"""The WISV decision head: label mining, the head file, training, and its effect end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from channel_models.csi import CSI
from nodes.head import DecisionHead, HeadPolicy, HeadSpec, round_cost_ms


@pytest.fixture(scope="module")
def pair():
    from nodes.models import load_pair

    return load_pair()


@pytest.fixture(scope="module")
def mined(pair, tmp_path_factory):
    from nodes.mining import mine

    d = tmp_path_factory.mktemp("mined")
    first = mine(pair, d, 4, shard_size=2, progress=False)
    assert len(first["shards"]) == 2
    # resumes: only the new shards are mined. 20 problems give the default pair (few, mostly
    # harmless mismatches, like a 1B/8B pair) the 20 labels of each class training needs.
    again = mine(pair, d, 20, shard_size=2, progress=False)
    assert [s["start"] for s in again["shards"]] == list(range(0, 20, 2))
    return d


def test_mined_labels(mined):
    from nodes.mining import load_dataset

    rows, th, dh = load_dataset(mined)
    assert len(rows) == len(th) == len(dh) > 20
    assert th.shape[1] == 192 and dh.shape[1] == 64
    assert 0.05 < rows["important"].mean() < 0.95  # both kinds of mismatch occur
    assert (rows["draft_token"] != rows["target_token"]).all()
    assert (rows["p_top"] >= rows["p_draft"]).all()
    manifest = json.loads((mined / "manifest.json").read_text())
    assert manifest["labelled"] == len(rows) and manifest["seconds_per_label"] > 0
    assert manifest["scored_problems"] == 20 and manifest["unscorable_share"] < 0.5  # the target writes "#### n"


def test_train_heads_reports_and_saves(mined, tmp_path):
    from nodes.head_train import train_heads

    r = train_heads(mined, tmp_path, lam=1000.0)
    assert set(r.auc) == {"scalars", "target", "full"}
    kind, scheme = r.chosen.split("/")
    assert kind in ("logistic", "mlp") and scheme in ("cost", "threshold")
    assert set(r.comparison) == {"logistic", "mlp"}
    for name in ("full", "target"):
        head = DecisionHead.load(r.shipped[name])
        assert ("drafter_hidden" in head.spec.features) == (name == "full")
    report = json.loads((tmp_path / "head-report.json").read_text())
    assert report["chosen"] == r.chosen
    assert report["unscorable"]["of"] == 20 and report["unscorable"]["share"] < 0.5  # the share is stated


def test_head_file_round_trip_and_version(tmp_path):
    spec = HeadSpec("mlp", ["p_draft", "p_top", "entropy"], {"p_draft": 1, "p_top": 1, "entropy": 1}, 0.6,
                    decision={"mode": "csi_cost", "lambda_ms": 500.0})
    head = DecisionHead(spec, hidden_units=8)
    x = torch.randn(5, 3)
    path = head.save(tmp_path / "h.safetensors")
    back = DecisionHead.load(path)
    assert torch.allclose(head(x), back(x)) and back.spec.decision["lambda_ms"] == 500.0
    from safetensors.torch import save_file

    save_file({"mean": torch.zeros(1)}, str(tmp_path / "bad.safetensors"), metadata={"wisv_head": '{"version": 99}'})
    with pytest.raises(ValueError, match="version"):
        DecisionHead.load(tmp_path / "bad.safetensors")


def test_csi_cost_threshold_accepts_more_when_rounds_are_expensive():
    spec = HeadSpec("logistic", ["p_draft"], {"p_draft": 1}, decision={"mode": "csi_cost", "lambda_ms": 1000.0})
    policy = HeadPolicy(DecisionHead(spec))
    cheap = policy.round_threshold(CSI(100.0, 100.0, 2.5, 2.5))
    dear = policy.round_threshold(CSI(0.5, 0.5, 150.0, 150.0, loss_up=0.2))
    assert dear < cheap
    assert round_cost_ms(CSI(delay_up_ms=10.0, delay_down_ms=10.0), {}) > 20.0


def test_shipped_head_is_trained_and_channel_aware(pair):
    """The shipped full head is trained (not the placeholder) and its policy accepts mismatches
    more readily when an extra round is expensive — through CSI inputs (the cost-sensitive
    scheme) or a CSI-dependent threshold (the threshold scheme), whichever training shipped."""
    from nodes.decoding import Drafter, Verifier, VerifyContext
    from nodes.decoding.policies import exact_prefix
    from nodes.evaluate import encode_prompt
    from nodes.protocols import PROTOCOLS, head_file
    from nodes.tasks import ArithTask

    head = DecisionHead.load(head_file(None, PROTOCOLS["wisv-full"].head))
    policy = HeadPolicy(head)
    assert "trained on" in head.spec.note
    assert "csi" in head.spec.features or policy.decision.get("mode") == "csi_cost"
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    good = CSI(80.0, 80.0, 2.0, 2.0, snr_db=20.0)
    bad = CSI(0.5, 1.0, 125.0, 125.0, snr_db=-5.0)
    p_good, p_bad = [], []
    for prob in ArithTask().problems("validation", 6):
        seq = encode_prompt(pair, prob)
        d.reset()
        v.reset()
        for _ in range(12):
            block = d.draft(seq, 4)
            logits, hidden, _ = v.score(seq, block.tokens)
            ctx = VerifyContext(torch.tensor(block.tokens), logits, hidden, None, block.hidden)
            n, first, greedy = exact_prefix(ctx)
            if first is not None:
                for csi, acc in ((good, p_good), (bad, p_bad)):
                    ctx.csi = csi
                    with torch.inference_mode():  # margin over the threshold the policy applies here
                        acc.append(float(head(head.features(ctx, torch.tensor([first])))[0])
                                   - policy.round_threshold(csi))
            seq += block.tokens[:n] + [int(greedy[n])]
            v.commit(len(seq))
            d.commit(len(seq))
    assert len(p_good) >= 5
    assert np.mean(p_bad) > np.mean(p_good)


def test_wisv_full_accepts_more_than_vanilla_without_losing_accuracy(pair):
    from nodes.config import RunConfig, TaskConfig
    from runs.simulate import simulate
    from traces.synthetic import step_trace

    res = simulate(pair, step_trace(100.0, 5.0, [10e6], [20.0], [0.0]), RunConfig(task=TaskConfig(problems=12)),
                   ["vanilla", "wisv-full"])
    assert res["wisv-full"].mean_accepted_len > 1.05 * res["vanilla"].mean_accepted_len
    assert res["wisv-full"].accuracy >= res["vanilla"].accuracy - 1 / 12
