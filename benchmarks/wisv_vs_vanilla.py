"""Benchmark: WISV against vanilla speculative decoding, the paper's way, over the evaluation grid
of ``examples/paper.yaml`` (channel regimes × mean SNR, two real imported traces, γ ∈ {4, 8}, a λ
sweep; protocols vanilla, wisv-full, wisv-selective, wisv-adaptive, wisv-target and the oracle
bound), simulated: same nodes, same wire, virtual clock, the paper's compute profiles.

Prints every setting's paired ratios to vanilla, then per protocol the best setting (lowest
latency ratio among settings with accuracy drop < 1 pp and no failures) next to the oracle in the
same setting and the paper's ×1.608 / ×0.627 / ×0.686. Last line: one JSON object mapping each
protocol to mean_accepted_len, rounds, latency_s, accuracy of its best setting, with the vanilla
(and oracle) rows of that setting and the setting named.

Usage: python benchmarks/wisv_vs_vanilla.py [--jobs 2] [--out runs/out/paper] [--readme]
  --readme also writes the figures to docs/img/ and the README's headline table (make paper).
Runs already complete in --out are kept (delete the folder, or --fresh, to rerun everything).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.experiment import run_experiment  # noqa: E402
from runs.paper import (PAPER, REPO, SPEC, best_settings, headline_markdown, import_real_traces,  # noqa: E402
                        paper_plots, settings_lines, update_readme)
from runs.report import load, swept_columns, table  # noqa: E402
from runs.spec import load_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(SPEC), help="evaluation spec (default: examples/paper.yaml)")
    ap.add_argument("--out", default="runs/out/paper", help="experiment folder (complete runs are kept)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel on this machine")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    ap.add_argument("--readme", action="store_true", help="write docs/img/paper_*.png and the README table")
    ap.add_argument("--shared-traces", default=str(REPO.parent / "shared" / "traces"),
                    help="the public traces the real-trace settings import")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    import_real_traces(Path(a.shared_traces))
    runs = load_spec(a.spec)
    t0 = time.perf_counter()
    run_experiment(runs, out, mode="simulate", progress=False, resume=out.exists(), jobs=a.jobs)
    wall_s = time.perf_counter() - t0
    rounds, requests, meta = load([out])
    df = table(rounds, requests, swept_columns(requests, meta))
    df.to_csv(out / "paper.csv", index=False)
    for line in settings_lines(df):
        print(line)
    best = best_settings(df)
    print(f"\nbest setting per protocol (accuracy drop < 1 pp, no failures), {df['run'].nunique()} settings:")
    for p, e in best.items():
        if e.get("setting") is None:
            print(f"{p:>15}: {e['why']}")
            continue
        o = e.get("oracle")
        print(f"{p:>15}: {e['setting']}: accepted length ×{e['accepted_len_ratio']:.3f}, rounds ×{e['rounds_ratio']:.3f}, "
              f"latency ×{e['latency_ratio']:.3f}, accuracy {e['accuracy_diff_pp']:+.1f} pp"
              + (f"; oracle there ×{o['accepted_len_ratio']:.3f} / ×{o['rounds_ratio']:.3f} / ×{o['latency_ratio']:.3f}"
                 if o else "")
              + f"; up to ×{e['up_to']['accepted_len_ratio']['value']:.3f} accepted length, "
                f"×{e['up_to']['rounds_ratio']['value']:.3f} rounds, ×{e['up_to']['latency_ratio']['value']:.3f} latency")
    print(f"paper (1B/8B): accepted length ×{PAPER['accepted_len_ratio']}, rounds ×{PAPER['rounds_ratio']}, "
          f"latency ×{PAPER['latency_ratio']}, accuracy drop < {PAPER['max_accuracy_drop_pp']} pp")
    plots = paper_plots(df, REPO / "docs" / "img" if a.readme else out / "plots")
    print("figures: " + ", ".join(str(p) for p in plots))
    n_per = int(df["requests"].median())
    if a.readme:
        update_readme(REPO / "README.md", headline_markdown(best, df["run"].nunique(), n_per))
        print("README table updated")
    print(f"wall time {wall_s:.0f} s for {len(runs)} settings (runs kept from before are not rerun)")
    print(json.dumps({**best, "_extra": {"paper": PAPER, "settings": int(df["run"].nunique()),
                                         "requests_per_setting": n_per, "wall_s": round(wall_s, 1)}}))


if __name__ == "__main__":
    main()
