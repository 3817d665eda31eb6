"""``wisv trace …``: generate, import, show and fit link traces."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from traces.format import TraceFormatError, read_trace, write_trace


def _load_spec_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _kv(items: list[str], cast=str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = cast(v.strip())
    return out


def cmd_generate(a: argparse.Namespace) -> int:
    from channel_models.generator import PRESETS, ChannelSpec
    from traces.ops import from_channel

    d: dict = {}
    if a.preset:
        d.update(PRESETS[a.preset])
    if a.spec:
        d.update(_load_spec_file(a.spec))
    for key in ("step_ms", "duration_s", "seed", "mapping", "base_delay_ms"):
        v = getattr(a, key)
        if v is not None:
            d[key] = v
    for direction in ("up", "down"):
        v = getattr(a, f"{direction}_snr_db")
        if v is not None:
            d.setdefault(direction, {})
            d[direction] = {**(d[direction] if isinstance(d[direction], dict) else {}), "mean_snr_db": v}
    spec = ChannelSpec.from_dict(d)
    trace = from_channel(spec)
    trace.meta["preset"] = a.preset
    write_trace(trace, a.output)
    sys.stdout.write(f"wrote {a.output}: {len(trace)} rows, {trace.duration_ms / 1000:g} s at {trace.step_ms:g} ms\n")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    """Import a recorded trace into a canonical file (two-column logs are streamed)."""
    from traces.importers import ImportOptions, import_to_file

    opts = ImportOptions(rate_from=a.rate_from, rate_unit=a.rate_unit, time_unit=a.time_unit,
                         delay_ms=a.delay_ms, loss=a.loss, step_ms=a.step_ms, mapping=a.mapping,
                         bandwidth_hz=a.bandwidth_hz, other_direction=a.other_direction,
                         direction=a.direction, columns=_kv(a.map), scales=_kv(a.scale, float),
                         floor_outages=a.floor_outages)
    meta = import_to_file(a.input, a.output, opts, a.format)
    outages = meta.get("outage_rows", 0)
    sys.stdout.write(f"wrote {a.output}: {meta['rows']} rows, {meta['duration_ms'] / 1000:g} s "
                     f"from {meta.get('source')} (rate from {meta.get('rate_from')})"
                     + (f", {outages} outage row(s) kept (rate 0)" if outages else "") + "\n")
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    """Summarise a trace (a Parquet one column by column, so a large trace fits), and plot it."""
    from traces.ops import summary, summary_file

    if a.plot:
        from traces.plot import plot_trace

        trace = read_trace(a.trace)
        s = summary(trace)
        plot_trace(trace, a.plot, title=Path(a.trace).name)
    else:
        s = summary_file(a.trace)
    if a.json:
        sys.stdout.write(json.dumps(s) + "\n")
    else:
        sys.stdout.write(f"{a.trace}: {s['rows']} rows, {s['duration_s']:g} s, step {s['step_ms']:g} ms, "
                         f"source {s['source']}, rate from {s['rate_from']}\n")
        for d in ("up", "down"):
            b = s[d]
            line = f"  {d:>4}: rate {b['rate_bps']['mean'] / 1e6:8.3f} Mbit/s (p5 {b['rate_bps']['p5'] / 1e6:.3f}, " \
                   f"p95 {b['rate_bps']['p95'] / 1e6:.3f})  delay {b['delay_ms']['mean']:.2f} ms  " \
                   f"loss {b['loss']['mean'] * 100:.3f} %"
            if b["snr_db"]:
                line += f"  SNR {b['snr_db']['mean']:.1f} dB"
            sys.stdout.write(line + "\n")
        if a.plot:
            sys.stdout.write(f"plot: {a.plot}\n")
    return 0


def cmd_fit(a: argparse.Namespace) -> int:
    from traces.fit import TraceFitError, fit_channel

    trace = read_trace(a.trace)
    try:
        spec, report = fit_channel(trace, bandwidth_hz=a.bandwidth_hz)
    except TraceFitError as e:
        raise ValueError(f"{a.trace}: {e}") from None
    Path(a.output).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``trace`` command group to the top-level parser."""
    from channel_models.generator import PRESETS
    from traces.importers import FORMATS

    p = sub.add_parser("trace", help="generate, import, show and fit link traces")
    ts = p.add_subparsers(dest="trace_cmd", required=True)

    g = ts.add_parser("generate", help="generate a trace from a channel model")
    g.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    g.add_argument("--preset", choices=sorted(PRESETS), default="pedestrian", help="channel preset")
    g.add_argument("--spec", help="channel spec (JSON or YAML) overriding the preset")
    g.add_argument("--step-ms", type=float, help="trace step, ms")
    g.add_argument("--duration-s", type=float, help="trace length, s")
    g.add_argument("--seed", type=int, help="generator seed")
    g.add_argument("--mapping", choices=["shannon", "cqi1", "cqi2"], help="SNR → rate mapping")
    g.add_argument("--base-delay-ms", type=float, help="one-way delay before HARQ, ms")
    g.add_argument("--up-snr-db", type=float, help="uplink mean SNR, dB")
    g.add_argument("--down-snr-db", type=float, help="downlink mean SNR, dB")
    g.set_defaults(func=cmd_generate)

    i = ts.add_parser("import", help="import a recorded trace (format detected by content)")
    i.add_argument("input", help="recorded trace file")
    i.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    i.add_argument("--format", choices=sorted(FORMATS), help="source format (default: detected from the content)")
    i.add_argument("--rate-from", choices=["throughput", "csi"], default="throughput",
                   help="rate from recorded throughput, or from recorded CSI through the mapping")
    i.add_argument("--rate-unit", help="unit of recorded throughput: bps, kbps, mbps, Bps, kBps, MBps")
    i.add_argument("--time-unit", choices=["s", "ms", "us"], default="s", help="unit of the source's time column")
    i.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay where the source has none")
    i.add_argument("--loss", type=float, default=0.0, help="loss probability where the source has none")
    i.add_argument("--step-ms", type=float, help="resample to this step")
    i.add_argument("--mapping", choices=["shannon", "cqi1", "cqi2"], default="cqi1", help="CSI → rate mapping")
    i.add_argument("--bandwidth-hz", type=float, default=20e6, help="channel bandwidth for the mapping, Hz")
    i.add_argument("--other-direction", default="mirror", help="'mirror' or a rate in bit/s")
    i.add_argument("--direction", choices=["both", "up", "down"], default="both",
                   help="which direction the source records")
    i.add_argument("--map", action="append", help="generic: CANONICAL=source_column (repeat)")
    i.add_argument("--scale", action="append", help="generic: CANONICAL=factor (repeat)")
    i.add_argument("--floor-outages", action="store_true",
                   help="raise rate-0 rows (outages) to the smallest link rate, 8 kbit/s, like slower rates "
                        "(default: an outage stays rate 0; the metadata's 'outages' says which)")
    i.set_defaults(func=cmd_import)

    s = ts.add_parser("show", help="summarise (and plot) a trace")
    s.add_argument("trace", help="trace file")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--plot", metavar="PNG", help="also plot rates, delays, losses and SNR to this PNG")
    s.set_defaults(func=cmd_show)

    f = ts.add_parser("fit", help="fit a channel model to a trace (JSON spec for --spec)")
    f.add_argument("trace", help="trace file")
    f.add_argument("-o", "--output", required=True, help="fitted channel spec (JSON; wisv trace generate --spec)")
    f.add_argument("--bandwidth-hz", type=float, help="channel bandwidth, Hz (default: from the trace metadata)")
    f.set_defaults(func=cmd_fit)


USER_ERRORS = (TraceFormatError, ValueError, FileNotFoundError)
