"""A decision head belongs to the pair it was trained on; other pairs are refused clearly, and
training refuses labels that cannot support a head."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "nodes" / "pretrained" / "default"


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny random-initialised Qwen2 models (hidden 96 and 160) with the default tokenizer:
    another architecture than the shipped Llama pair."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = json.loads((DEFAULT / "target" / "config.json").read_text())["vocab_size"]
    out = tmp_path_factory.mktemp("qwen")
    dirs = []
    for name, hidden, layers in (("drafter", 96, 1), ("target", 160, 2)):
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=320,
                          tie_word_embeddings=True)
        d = out / name
        Qwen2ForCausalLM(cfg).save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(DEFAULT / "target" / f, d / f)
        dirs.append(d)
    return dirs[0], dirs[1]


def test_shipped_head_is_refused_on_another_pair(qwen_pair, tmp_path):
    drafter, target = qwen_pair
    spec = tmp_path / "s.yaml"
    spec.write_text(f"protocols: [vanilla, wisv-full]\nmodels: {{drafter: {drafter}, target: {target}}}\n")
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "run", str(spec), "--simulate", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert r.returncode == 2
    assert "does not belong to this drafter/target pair" in r.stderr
    assert "target hidden size 160 ≠ 192" in r.stderr and "architecture 'Qwen2ForCausalLM'" in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # refused before anything ran


def test_the_edge_refuses_a_head_of_another_pair_at_hello(qwen_pair):
    from nodes.config import RunConfig
    from nodes.device import DeviceClient, EdgeError
    from nodes.edge import EdgeServer
    from nodes.models import load_pair
    from runs.simulate import AnalyticLink, SimTransport
    from traces.synthetic import step_trace

    pair = load_pair(*qwen_pair)
    cfg = RunConfig(protocol="wisv-full")
    transport = SimTransport(EdgeServer(pair.target, pair.eos_token_id, bind=None),
                             AnalyticLink(step_trace(100.0, 1.0, [10e6], [10.0], [0.0])), cfg)
    client = DeviceClient(pair.drafter, cfg, pair.eos_token_id, transport)
    with pytest.raises(EdgeError, match="does not belong to this drafter/target pair"):
        client.hello()


def test_training_refuses_too_few_labels(tmp_path):
    from nodes.head_train import MIN_PER_CLASS, TooLittleData, train_heads
    from safetensors.numpy import save_file

    n = 12
    rows = pd.DataFrame({"problem": np.arange(n) % 6, "position": 0, "draft_token": 1, "target_token": 2,
                         "p_draft": 0.1, "p_top": 0.8, "entropy": 1.0, "important": np.arange(n) % 2 == 0})
    rows.to_parquet(tmp_path / "shard-00000.parquet")
    save_file({"target_hidden": np.zeros((n, 8), np.float32), "drafter_hidden": np.zeros((n, 4), np.float32)},
              str(tmp_path / "shard-00000.safetensors"))
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [{"start": 0, "name": "shard-00000", "rows": n}]}))
    with pytest.raises(TooLittleData, match=f"at least {MIN_PER_CLASS} of each class"):
        train_heads(tmp_path, tmp_path / "heads")
    assert not (tmp_path / "heads").exists()


def test_head_train_never_writes_the_shipped_heads_unless_asked(tmp_path):
    before = (DEFAULT / "head-full.safetensors").read_bytes()
    r = subprocess.run([sys.executable, "-m", "wisv.cli", "head", "train", "--data", str(tmp_path), "-o", str(DEFAULT)],
                       capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert r.returncode == 2 and "--ship" in r.stderr
    assert (DEFAULT / "head-full.safetensors").read_bytes() == before


def test_each_node_loads_only_its_own_model_where_the_config_places_it():
    from nodes.config import ModelConfig
    from nodes.models import load_models

    edge = load_models(ModelConfig(target_dtype="bf16"), ("target",))
    assert edge.drafter is None and next(edge.target.parameters()).dtype.__str__() == "torch.bfloat16"
    dev = load_models(ModelConfig(), ("drafter",))
    assert dev.target is None and dev.drafter is not None and dev.eos_token_id == edge.eos_token_id
