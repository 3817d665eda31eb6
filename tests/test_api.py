"""The Python API (runs.api.Testbed) hands the devices the task its config names: a GSM8K run
driven through the API runs GSM8K, not the built-in arithmetic task."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nodes.config import RunConfig, TaskConfig


def _gsm8k_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-gsm.jsonl"
    rows = [{"question": "Tom has 40 apples and buys 2 more. How many apples does he have?",
             "answer": "40 + 2 = 42\n#### 42"},
            {"question": "What is 6 times 7?", "answer": "6 * 7 = 42\n#### 42"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _gsm8k_config(tmp_path: Path, chat_template: bool = False) -> RunConfig:
    return RunConfig(run_id="api", task=TaskConfig(kind="gsm8k", file=str(_gsm8k_file(tmp_path)),
                                                   chat_template=chat_template, max_new_tokens=16, problems=5))


def test_protocol_config_keeps_the_task_kind_file_and_template(tmp_path):
    from runs.api import Testbed

    tb = Testbed(run_dir=tmp_path / "run", config=_gsm8k_config(tmp_path, chat_template=True))  # the network starts only in start()
    cfg = tb.protocol_config("wisv-full", problems=1, gamma=6, split="validation", max_new_tokens=8)
    want = TaskConfig(kind="gsm8k", file=str(tmp_path / "tiny-gsm.jsonl"), chat_template=True, split="validation",
                      problems=1, max_new_tokens=8)
    assert cfg.task == want and (cfg.protocol, cfg.gamma) == ("wisv-full", 6)
    assert tb.protocol_config("vanilla").task == tb.config.task  # nothing given: nothing changed
    tb.trace_paths = [Path("t.csv")]  # what attach_trace records for a one-device network
    assert [d.config.task for d in tb.devices(cfg)] == [want]  # the config the device process is handed


def test_the_api_config_simulated_runs_the_gsm8k_problems(tmp_path):
    """The config the API resolves, run by the simulator: the round logs are those of the
    GSM8K file's problems (request ids ``<file stem>-<line>``)."""
    from nodes.models import load_pair
    from runs.api import Testbed
    from runs.simulate import simulate
    from traces.synthetic import step_trace

    cfg = Testbed(run_dir=tmp_path / "run", config=_gsm8k_config(tmp_path)).protocol_config("vanilla", problems=2)
    simulate(load_pair(), step_trace(100.0, 5.0, [10e6], [10.0], [0.0]), cfg, ["vanilla"], tmp_path / "sim")
    rounds = [json.loads(x) for x in open(tmp_path / "sim" / "rounds-vanilla.jsonl")]
    assert {r["request_id"] for r in rounds} == {"tiny-gsm-1", "tiny-gsm-2"}
    req = json.loads((tmp_path / "sim" / "requests-vanilla.json").read_text())
    assert req["config"]["task"]["kind"] == "gsm8k" and req["config"]["task"]["file"].endswith("tiny-gsm.jsonl")


@pytest.mark.skipif(os.geteuid() != 0, reason="emulation needs root")
def test_an_emulated_gsm8k_run_through_the_api(tmp_path):
    from runs.api import Testbed
    from topologies.probe import probe_backends
    from traces.format import write_trace
    from traces.synthetic import step_trace

    if not any(r is None for r in probe_backends().reasons.values()):
        pytest.skip("no shaping backend")
    trace = write_trace(step_trace(100.0, 10.0, [20e6], [5.0], [0.0]), tmp_path / "t.csv")
    with Testbed(run_dir=tmp_path / "run", config=_gsm8k_config(tmp_path)) as tb:
        tb.attach_trace(trace)
        tb.start_edge()
        s = tb.run_protocol("vanilla", problems=1)
        df = tb.rounds("vanilla")
    assert s.problems == 1 and s.failed == 0
    assert set(df["request_id"]) == {"tiny-gsm-1"}
    handed = json.loads((tmp_path / "run" / "config-vanilla.json").read_text())["task"]
    assert (handed["kind"], Path(handed["file"]).name) == ("gsm8k", "tiny-gsm.jsonl")
