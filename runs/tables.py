"""Gather the logs of run directories into the Parquet tables ``wisv report`` reads.

A run directory holds, per protocol (and per device when there are several: ``<protocol>-d<k>``),
``rounds-*.jsonl`` (one flat line per round), ``requests-*.json`` (per-request records and the
run config they ran under) and, emulated, ``link-steps-*.csv``. ``rounds.parquet``,
``requests.parquet`` and ``link_steps.parquet`` are those rows with the columns ``run``,
``rep``, ``mode``, ``gamma`` and ``lambda_ms`` added, and one column per swept spec key
(named by the dotted key, e.g. ``trace.generate.up.mean_snr_db``; docs/reports-and-sweeps.md: output schema). A
round's own ``gamma`` (the draft length its protocol asked that round) stays: the run's
configured γ is the ``gamma`` of its requests.

A round's ``csi_*`` columns are the report sampled at its start; ``csi_worst_*`` columns add the
worst link in force at any time during the round (lowest rate, longest delay, most loss, as
:meth:`channel_models.csi.CSI.worst`), so an outage within a round shows: from the steps the
replayer applied (emulated) or from the run's trace on the virtual clock (simulated).

A run that failed or was interrupted leaves partial files: an empty or header-only
``link-steps-*.csv``, a half-written last line in ``rounds-*.jsonl``, no ``requests-*.json``;
they are read as far as they go (never an error that hides the run's own).
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pandas as pd

TABLES = ("rounds", "requests", "link_steps")
log = logging.getLogger(__name__)
# csi_worst_<field>: (link-step / trace column, scale to the CSI field's unit, worst is the max?)
WORST_CSI = {"csi_worst_rate_up_mbps": ("rate_bps_up", 1e-6, False),
             "csi_worst_rate_down_mbps": ("rate_bps_down", 1e-6, False),
             "csi_worst_delay_up_ms": ("delay_ms_up", 1.0, True),
             "csi_worst_delay_down_ms": ("delay_ms_down", 1.0, True),
             "csi_worst_loss_up": ("loss_up", 1.0, True),
             "csi_worst_loss_down": ("loss_down", 1.0, True)}


def read_jsonl(path: Path) -> pd.DataFrame:
    """The records of a JSON-lines log; a line that does not parse (the half-written last line of
    a killed writer) is skipped with a warning."""
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        log.warning("%s: skipped %d line(s) that do not parse (a killed writer's last line)", path, bad)
    return pd.DataFrame(rows)


def read_csv_or_empty(path: Path) -> pd.DataFrame:
    """A CSV file as a DataFrame; an empty file (no header) is an empty frame, not an error."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _device_index(device_id: str) -> int:
    """Device ``dev<k>``'s index k (0 for anything else)."""
    m = re.fullmatch(r"dev(\d+)", str(device_id))
    return int(m.group(1)) if m else 0


def worst_csi_columns(rounds: pd.DataFrame, steps: pd.DataFrame, time_col: str,
                      period_s: float | None = None) -> pd.DataFrame:
    """:data:`WORST_CSI` columns for ``rounds`` (one device's) from ``steps``: the link values
    with the time each came into force (``time_col``, on the clock of the rounds'
    ``t_start``/``t_end``, seconds). With ``period_s`` the steps repeat (a looping trace on a
    virtual clock): the windows are folded into one period."""
    from traces.schedule import LinkSchedule

    return worst_csi_from_schedule(rounds, LinkSchedule.from_steps(steps, time_col, 1000.0,
                                                                   period_s * 1000.0 if period_s else None))


def worst_csi_from_schedule(rounds: pd.DataFrame, schedule) -> pd.DataFrame:
    """:data:`WORST_CSI` columns for ``rounds`` (one device's) from the link's
    :class:`traces.schedule.LinkSchedule`, whose ms are the rounds' ``t_start``/``t_end`` seconds
    × 1000 (a looping schedule folds the windows into its period)."""
    t0, t1 = rounds["t_start"].to_numpy(dtype=float) * 1000.0, rounds["t_end"].to_numpy(dtype=float) * 1000.0
    out = {}
    for col, (src, scale, take_max) in WORST_CSI.items():
        out[col] = schedule.worst_in_windows(src, t0, t1, take_max) * scale
    return pd.DataFrame(out, index=rounds.index)


def _with_worst_csi(df: pd.DataFrame, rd: Path, mode: str, steps_by_protocol: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """``df`` (rounds) with the :data:`WORST_CSI` columns where the link is known: the applied
    link steps (emulated, on the wall clock), or the run's trace (simulated, on the virtual
    clock, looping); unchanged otherwise."""
    from traces.schedule import LinkSchedule

    if not len(df) or not {"t_start", "t_end", "protocol", "device_id"} <= set(df.columns):
        return df
    parts = []
    for (protocol, device), g in df.groupby(["protocol", "device_id"], sort=False):
        k = _device_index(device)
        schedule = None
        if mode == "emulate":
            s = steps_by_protocol.get(protocol)
            if s is not None and "applied_epoch_s" in s.columns:
                schedule = LinkSchedule.from_steps(s[s["device"] == k] if "device" in s.columns else s)
        else:
            trace = _simulated_trace(rd, k)
            schedule = LinkSchedule.from_trace(trace) if trace is not None else None
        if schedule is not None:
            g = g.join(worst_csi_from_schedule(g, schedule))
        parts.append(g)
    return pd.concat(parts).loc[df.index]


def _simulated_trace(rd: Path, k: int):
    """The trace a simulated run replayed for device ``k`` (``trace-d<k>.parquet`` or
    ``trace.parquet``), or None."""
    from traces.format import read_trace

    for name in (f"trace-d{k}.parquet", "trace.parquet"):
        if (rd / name).exists():
            return read_trace(rd / name)
    return None


def run_dir_frames(rd: Path, run: str, rep: int, mode: str) -> dict[str, list[pd.DataFrame]]:
    """The rows of one run directory, tagged (see the module docstring). A file that cannot be
    read is skipped with a warning."""
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    tags: dict[str, dict] = {}
    for f in sorted(rd.glob("requests-*.json")):
        try:
            obj = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("%s: skipped (%s)", f, e)
            continue
        cfg = obj.get("config", {})
        tag = {"run": run, "rep": rep, "mode": mode, "gamma": cfg.get("gamma"), "lambda_ms": cfg.get("lambda_ms")}
        tags[f.stem[len("requests-"):]] = tag
        if obj.get("requests"):
            out["requests"].append(pd.DataFrame(obj["requests"]).assign(protocol=obj["protocol"], **tag))
    steps: dict[str, pd.DataFrame] = {}
    for f in sorted(rd.glob("link-steps-*.csv")):
        df = read_csv_or_empty(f)
        if len(df):
            steps[f.stem[len("link-steps-"):]] = df
            out["link_steps"].append(df.assign(protocol=f.stem[len("link-steps-"):], run=run, rep=rep, mode=mode))
    for f in sorted(rd.glob("rounds-*.jsonl")):
        df = read_jsonl(f)
        if len(df):
            suffix = f.stem[len("rounds-"):]
            try:
                df = _with_worst_csi(df, rd, mode, steps)
            except Exception:  # noqa: BLE001 - extra columns must never lose the rounds
                log.warning("%s: no csi_worst_* columns", f, exc_info=True)
            tag = tags.get(suffix, {"run": run, "rep": rep, "mode": mode})
            out["rounds"].append(df.assign(**{k: v for k, v in tag.items() if k not in df}))  # a round's gamma stays
    return out


def write_tables(out_dir: Path, frames: dict[str, list[pd.DataFrame]], meta: dict) -> None:
    """Write the gathered tables and ``meta.json`` into ``out_dir``."""
    for name, parts in frames.items():
        if parts:
            pd.concat(parts, ignore_index=True).to_parquet(out_dir / f"{name}.parquet")
    (out_dir / "meta.json").write_text(json.dumps({**meta, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2)
                                       + "\n")


def collect_tables(out_dir: Path, mode: str) -> None:
    """Gather every run of an experiment directory (``<run>/rep<k>/``) into its tables."""
    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    runs, swept_keys = set(), {}
    for spec_file in sorted(out_dir.glob("*/rep*/spec.json")):
        rd = spec_file.parent
        spec = json.loads(spec_file.read_text())
        runs.add(rd.parent.name)
        swept = spec.get("swept") or {}  # every swept key is a column, named by its dotted key
        swept_keys.update(dict.fromkeys(swept))  # in the spec's order
        for name, parts in run_dir_frames(rd, rd.parent.name, int(rd.name[3:]), spec.get("mode", mode)).items():
            frames[name] += [p.assign(**swept) for p in parts]
    write_tables(out_dir, frames, {"mode": mode, "runs": sorted(runs), "swept": list(swept_keys)})


def write_run_tables(rd: Path, mode: str = "emulate") -> None:
    """Gather one run directory (the Python API's) into its own tables."""
    write_tables(rd, run_dir_frames(rd, rd.name, 0, mode), {"mode": mode, "runs": [rd.name]})
