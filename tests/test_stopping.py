"""Stop sequences and several EOS ids end outputs where the field's conventions say (lm-eval
``until``, HumanEval's stop list): in the in-process loops, batched mining and the device; the
cut text is what is scored and run; mining refuses a task whose answers cannot be scored."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chain_pair  # noqa: E402


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The crafted pair (drafter = target) and a one-problem HumanEval-format file for it."""
    root = tmp_path_factory.mktemp("chain")
    drafter, target = chain_pair.save_pair(root)
    f = root / "inc.jsonl"
    f.write_text(json.dumps({"task_id": "Chain/0", "prompt": chain_pair.PROMPT, "entry_point": "inc",
                             "test": chain_pair.TESTS}) + "\n")
    return drafter, target, f


def test_stop_criteria_rules():
    from nodes.decoding.stopping import StopCriteria

    pieces = ["a", "\n", "de", "f", "b", "<e>"]
    s = StopCriteria([5, 7], ["\ndef"], lambda ids: "".join(pieces[i] for i in ids if i < len(pieces)))
    assert s.check([0, 1, 2, 3, 4]).keep == 4 and s.check([0, 1, 2, 3, 4]).reason == "stop"  # 'f' completes it
    assert s.check([0, 1, 2]) is None
    assert s.check([0, 7, 1]).keep == 2 and s.check([0, 7, 1]).reason == "eos"  # any listed EOS id
    assert s.check([0, 5, 1, 2, 3]).reason == "eos"  # nothing after an EOS is read
    assert s.check([0, 1, 2, 3], start=3).keep == 4
    assert s.continuing([0, 1]).check([2, 3, 4]).keep == 2  # a rollout after a prefix
    fence = StopCriteria([], [], lambda ids: "".join(pieces[i] for i in ids), fence_closes=True)
    assert fence.text_stop("Here:\n```python\nx = 1\n```\nMore") == len("Here:\n```python\nx = 1\n```")
    assert StopCriteria([], ["Question:"], str).cut_text("4.\n\nQuestion: next") == "4.\n\n"


def test_eos_ids_come_from_the_generation_config():
    from types import SimpleNamespace

    from nodes.decoding.stopping import eos_ids_of

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[151645, 151643]))
    assert eos_ids_of(model, SimpleNamespace(eos_token_id=151643)) == [151645, 151643]


def test_a_completion_is_cut_at_a_stop_sequence_and_the_cut_text_runs(chain):
    from nodes.config import TaskConfig
    from nodes.decoding import Drafter, ExactMatch, Verifier, autoregressive_generate, speculative_generate
    from nodes.decoding.stopping import stop_criteria_for
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.tasks.filters import get_filter

    drafter, target, f = chain
    pair = load_pair(drafter, target)
    task = TaskConfig(kind="humaneval", file=str(f)).make()
    (p,) = task.problems("test", 1)
    prompt = encode_prompt(pair, p)
    stop = stop_criteria_for(task, pair.tokenizer, pair.target)
    free = autoregressive_generate(pair.target, prompt, 12, pair.eos_token_id)  # no stop rules: runs on
    assert len(free) == 12 and "\nprint(inc(2)) junk" in pair.tokenizer.decode(free)
    cut = autoregressive_generate(pair.target, prompt, 12, pair.eos_token_id, stop=stop)
    assert pair.tokenizer.decode(cut) == "    return x + 1\nprint(inc(2))"  # ends at the token completing "\nprint"
    # γ = 8: the drafter stops drafting at that token; the bonus token after it is not output
    r = speculative_generate(Drafter(pair.drafter), Verifier(pair.target), ExactMatch(), prompt, 8, 12,
                             pair.eos_token_id, stop=stop)
    assert r.tokens == cut and len(r.rounds) == 1
    assert r.rounds[0].drafted == 5 and r.rounds[0].tokens_out == 5 and r.rounds[0].end_reason == "stop"
    budget = speculative_generate(Drafter(pair.drafter), Verifier(pair.target), ExactMatch(), prompt, 4, 12,
                                  pair.eos_token_id)
    assert len(budget.tokens) == 12 and budget.rounds[-1].end_reason == "budget"
    # what runs is the prompt and the text before the stop sequence, and it passes
    text = pair.tokenizer.decode(cut, skip_special_tokens=True)
    assert get_filter("completion").extract(text, p) == chain_pair.PROMPT + "    return x + 1"
    assert task.correct(text, p)


def test_evaluate_reports_stops_filters_and_tokens(chain):
    from nodes.config import TaskConfig
    from nodes.evaluate import evaluate_pair

    drafter, target, f = chain
    task = TaskConfig(kind="humaneval", file=str(f))
    on = evaluate_pair(drafter, target, n_problems=1, gamma=4, max_new_tokens=16, task=task)
    off = evaluate_pair(drafter, target, n_problems=1, gamma=4, max_new_tokens=16, task=task, use_stops=False)
    assert on["answer_filter"] == "completion" and set(on["acc_by_filter"]["target"]) == {"completion", "code-block"}
    assert on["acc_target"] == on["acc_spec"] == 1.0 and on["greedy_exact"]
    assert on["end_reasons"] == {"stop": 1} and off["end_reasons"] == {"budget": 1}
    assert on["tokens_per_request"] == 5 and off["tokens_per_request"] == 16
    assert on["rounds_per_request"] < off["rounds_per_request"]


def test_the_device_stops_at_a_stop_sequence(chain, tmp_path):
    """The device loop (through the simulator's transport) ends the request at the stop."""
    from nodes.config import RunConfig, TaskConfig
    from nodes.models import load_pair
    from runs.simulate import simulate_protocol
    from traces.synthetic import step_trace

    drafter, target, f = chain
    pair = load_pair(drafter, target)
    cfg = RunConfig(run_id="stop", protocol="vanilla", gamma=8,
                    task=TaskConfig(problems=1, max_new_tokens=16, kind="humaneval", file=str(f)))
    simulate_protocol(pair, step_trace(100.0, 5.0, [10e6], [10.0], [0.0]), cfg, tmp_path)
    (req,) = json.loads((tmp_path / "requests-vanilla.json").read_text())["requests"]
    assert req["n_tokens"] == 5 and req["correct"] and req["rounds"] == 1  # 16 tokens and 4 rounds without stops
    rounds = [json.loads(line) for line in (tmp_path / "rounds-vanilla.jsonl").read_text().splitlines()]
    assert [r["drafted"] for r in rounds] == [5]  # no draft past the stop


def test_mining_refuses_a_task_whose_answers_cannot_be_extracted(chain, tmp_path):
    from nodes.config import TaskConfig
    from nodes.mining import MiningRefused, mine
    from nodes.models import load_pair

    drafter, target, _ = chain
    f = tmp_path / "g.jsonl"
    f.write_text("".join(json.dumps({"question": f"How many? {i}", "answer": f"#### {i}"}) + "\n" for i in range(4)))
    pair = load_pair(drafter, target)
    with pytest.raises(MiningRefused, match=r"unscorable on 4 of 4 problems \(100 %, more than the 50 % allowed\) "
                                            r"under filter strict-match.*Likely cause: .*flexible-extract"):
        mine(pair, tmp_path / "mined", 4, 4, shard_size=4, max_new_tokens=8, progress=False,
             task=TaskConfig(split="train", kind="gsm8k", file=str(f)))
    assert not (tmp_path / "mined" / "manifest.json").exists()  # nothing written


def test_the_edge_decoding_alone_stops_at_the_task_s_stop_rules(chain):
    """ar-edge: the edge given the run's stop rules decodes no further than the stop (without
    them, to the budget); the device keeps what the rules keep."""
    from nodes.config import TaskConfig
    from nodes.decoding.stopping import stop_criteria_for
    from nodes.edge import EdgeServer
    from nodes.evaluate import encode_prompt
    from nodes.models import load_pair
    from nodes.wire import Hello, Start, decode, encode

    drafter, target, f = chain
    pair = load_pair(drafter, target)
    task = TaskConfig(problems=1, max_new_tokens=16, kind="humaneval", file=str(f))
    t = task.make()
    prompt = encode_prompt(pair, t.problems(task.split, 1, 0)[0], False)
    stop = stop_criteria_for(t, pair.tokenizer, pair.target)

    def decoded(rules) -> list[int]:
        edge = EdgeServer(pair.target, pair.eos_token_id, bind=None, stop_rules=rules)
        ack = decode(edge.handle_frames(b"d", encode(Hello("dev0", "ar-edge", 4, 0.0, "f16", "", 0, 0))))
        return list(decode(edge.handle_frames(b"d", encode(Start("r", prompt, 16, ack.secret)))).tokens)

    alone, stopped = decoded(None), decoded(stop)
    assert len(alone) == 16 and stopped == alone[: len(stopped)] and len(stopped) < 16
    assert stop.check(stopped).keep == 5  # what the device keeps, as in the speculative loop
