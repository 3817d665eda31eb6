"""Bring your own pair, without large weights: a Qwen2-style pair (another architecture than the
shipped Llama pair; hidden sizes 96 and 160; the default tokenizer), briefly trained on the
built-in task so that both label classes occur, goes the whole way: labels mined with
``wisv head mine``, a head trained on them that records this pair, wisv-full simulated with that
head and no failed request; the shipped head is refused on this pair with the clear error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
PROBLEMS = 64  # mined training problems: enough for MIN_PER_CLASS labels of each class with this pair


@pytest.fixture(scope="module")
def qwen_trained(tmp_path_factory) -> tuple[Path, Path]:
    """The pair, trained for a few hundred steps (seeded; one thread: fastest on a shared host)."""
    from nodes.training import ArchSpec, PairSpec, TrainSpec, train_pair

    out = tmp_path_factory.mktemp("qwen-trained")
    spec = PairSpec(target=TrainSpec(ArchSpec(160, 480, 2, 4, family="qwen2"), steps=400, lr=6e-3, seed=1),
                    drafter=TrainSpec(ArchSpec(96, 192, 1, 4, family="qwen2"), steps=100, lr=6e-3, seed=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_pair(out, spec)
    finally:
        torch.set_num_threads(threads)
    return out / "drafter", out / "target"


def test_a_qwen2_pair_from_mining_to_a_simulated_wisv_full(qwen_trained, tmp_path):
    from nodes.config import RunConfig, TaskConfig
    from nodes.head import DecisionHead
    from nodes.head_train import train_heads
    from nodes.models import load_pair, pair_identity
    from nodes.protocols import check_heads
    from runs.simulate import simulate
    from traces.synthetic import step_trace

    drafter, target = qwen_trained
    mined, heads = tmp_path / "mined", tmp_path / "heads"
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "head", "mine", "--drafter", str(drafter), "--target",
                        str(target), "-o", str(mined), "--problems", str(PROBLEMS), "--batch-size", "32",
                        "--shard-size", "32", "--device", "cpu", "--dtype", "fp32", "--threads", "1", "--no-progress"],
                       capture_output=True, text=True, cwd=str(REPO), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["labelled"] > 0
    assert "shard-00032: problems 32-63" in r.stderr and "s left (estimated)" in r.stderr

    report = train_heads(mined, heads, kind="logistic")  # one head kind: the path, not the model choice, is tested
    ident = pair_identity(drafter, target)
    head = DecisionHead.load(report.shipped["full"])
    assert head.spec.pair["target"] == ident["target"] and head.spec.pair["drafter"] == ident["drafter"]
    assert ident["target"]["architecture"] == "Qwen2ForCausalLM" and ident["target"]["hidden_size"] == 160
    check_heads(["wisv-full", "wisv-target"], heads, ident)  # this pair's heads pass the pre-run check
    with pytest.raises(ValueError, match="does not belong to this drafter/target pair"):
        check_heads(["wisv-full"], None, ident)  # the shipped head does not

    pair = load_pair(drafter, target)
    cfg = RunConfig(protocol="wisv-full", head_dir=str(heads), task=TaskConfig(problems=3))
    res = simulate(pair, step_trace(100.0, 5.0, [10e6], [10.0], [0.0]), cfg, ["vanilla", "wisv-full"])
    assert res["wisv-full"].failed == 0 and res["wisv-full"].problems == 3
    assert res["vanilla"].failed == 0 and res["wisv-full"].tokens > 0
