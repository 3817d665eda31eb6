"""Property-based fuzzing of every trace importer and the canonical CSV reader (hypothesis):
any input imports to a valid trace or raises TraceFormatError naming the file — nothing else.
A few hundred cases here; benchmarks/fuzz_traces.py runs ≥ 10 000 per importer."""
from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from traces.fuzzing import SEEDS, TARGETS, case_folder, file_strategy, run_case  # noqa: E402

CASES_PER_TARGET = 60  # x 7 targets


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_importer_never_crashes(name, fuzz_root):
    target, folder = TARGETS[name], case_folder(fuzz_root, name)

    @settings(max_examples=CASES_PER_TARGET, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=file_strategy(name))
    def check(data: bytes) -> None:
        run_case(target, data, folder)

    check()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files_import(name, fuzz_root):
    """The unmutated seeds are valid files of their format (so mutations start from valid input)."""
    folder = case_folder(fuzz_root, "seed-" + name)
    for seed in SEEDS[name]:
        assert run_case(TARGETS[name], seed.encode(), folder) == "ok"
