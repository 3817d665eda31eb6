"""The paper's evaluation: the spec loads as one experiment of several documents, and the best
setting is taken the paper's way (accuracy drop < 1 pp, nothing failed)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from runs.paper import MAX_DROP_PP, SPEC, best_settings, headline_markdown, update_readme
from runs.spec import SpecError, load_spec


def test_paper_spec_expands_every_document(tmp_path, monkeypatch):
    """examples/paper.yaml: regimes × SNR × γ, the real traces × γ, the λ sweep; ≥ 3 repetitions;
    the oracle beside the WISV protocols."""
    traces = tmp_path / "runs" / "out" / "traces"
    traces.mkdir(parents=True)
    from channel_models.generator import ChannelSpec
    from traces.format import write_trace
    from traces.ops import from_channel

    for name in ("paper-lte.parquet", "paper-5g-driving.parquet"):
        write_trace(from_channel(ChannelSpec.from_dict({"duration_s": 2, "step_ms": 10})), traces / name)
    monkeypatch.chdir(tmp_path)  # the real traces resolve here when the repository has none
    runs = load_spec(SPEC)
    names = [r.name for r in runs]
    assert len(names) == len(set(names)) == 4 * 4 * 2 + 2 * 2 + 6
    assert not any("/" in n for n in names)  # run names are folder names: a trace path by its name only
    assert all(r.repetitions >= 3 for r in runs)
    assert {"wisv-full", "wisv-selective", "wisv-adaptive", "wisv-target", "oracle", "vanilla"} <= set(runs[0].protocols)
    assert {r.values["trace"]["generate"]["preset"] for r in runs if r.values["trace"]["generate"]} >= \
        {"static", "pedestrian", "vehicular", "bursty"}
    assert sorted({r.values["gamma"] for r in runs}) == [4, 8]


def test_documents_of_a_spec_need_their_own_names(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("name: a\ntask: {problems: 1}\n---\nname: a\ntask: {problems: 1}\n")
    with pytest.raises(SpecError, match="run names repeat"):
        load_spec(spec)
    spec.write_text("name: a\n---\nname: b\ngamma: 0\n")
    with pytest.raises(SpecError, match=r"document 2"):
        load_spec(spec)


def _row(run, protocol, lat, acc_diff=0.0, failed=0, acc=0.9):
    r = {"run": run, "protocol": protocol, "failed": failed, "requests": 15, "mean_accepted_len": 4.0,
         "rounds_per_request": 10.0, "rounds_per_100_tokens": 25.0, "latency_ms_mean": 1000.0 * lat,
         "accuracy": acc}
    if protocol != "vanilla":
        for k, v in (("latency_ratio", lat), ("accepted_len_ratio", 1 / lat), ("rounds_ratio", lat),
                     ("accuracy_diff_pp", acc_diff)):
            r.update({k: v, f"{k}_lo": v - 0.05, f"{k}_hi": v + 0.05})
    return r


def test_best_setting_is_taken_only_where_accuracy_holds_and_nothing_failed():
    df = pd.DataFrame([
        _row("s1", "vanilla", 1.0), _row("s1", "wisv-full", 0.6, acc_diff=-6.7), _row("s1", "oracle", 0.7),
        _row("s2", "vanilla", 1.0), _row("s2", "wisv-full", 0.8), _row("s2", "oracle", 0.75),
        _row("s3", "vanilla", 1.0, failed=1), _row("s3", "wisv-full", 0.5),
        _row("s4", "vanilla", 1.0), _row("s4", "wisv-full", 0.4, failed=2),
    ])
    best = best_settings(df)
    assert best["wisv-full"]["setting"] == "s2"  # s1 loses accuracy, s3's vanilla and s4's wisv-full failed
    assert math.isclose(best["wisv-full"]["latency_ratio"], 0.8)
    assert best["wisv-full"]["oracle"]["latency_ratio"] == 0.75
    assert best["wisv-full"]["vanilla"]["accuracy"] == 0.9
    assert best["oracle"]["setting"] == "s1"
    assert "-6.7" not in headline_markdown(best, 4, 15)
    assert MAX_DROP_PP == 1.0


def test_readme_block_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- paper-eval:begin -->\nold\n<!-- paper-eval:end -->\nb\n")
    update_readme(readme, "new")
    assert readme.read_text() == "a\n<!-- paper-eval:begin -->\nnew\n<!-- paper-eval:end -->\nb\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, "new")
