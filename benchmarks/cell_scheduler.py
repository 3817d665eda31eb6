"""Benchmark: the cell schedulers against ns-3 LENA's expectations, and the cell element on real
packets against the model.

Model (numpy, no root; LENA's ``lte-test-rr-ff-mac-scheduler.cc`` / ``lte-test-pf-ff-mac-scheduler.cc``,
tolerance 10 %):
1. round robin, equal static channels, N = 1, 3, 6, 9, 12, 15 backlogged devices: each gets the
   cell's rate ÷ N (and LENA's uplink figures, the cell taken as LENA's one-UE 2 292 000 B/s);
2. proportional fair, static channels at 1:3:4:5.5:18: equal time shares, throughput ∝ own rate;
3. independent Rayleigh fading (10 dB mean SNR, 1 ms blocks), N = 1…16: the sum throughput of
   proportional fair and max-rate rises with N (multi-user diversity), round robin's does not.
Element (root; skipped with a note otherwise), in scratch namespaces with real UDP:
4. per-device throughput measured vs the model for the same static cell (round robin, 3 equal
   devices; proportional fair, 2 devices at 1:3);
5. its cost: CPU per TTI when idle, CPU (% of a core, per packet) at several packet rates, with
   every TTI's scheduling counted in; and the alternative's
   (HTB classes re-rated per TTI): a ``class change`` through a persistent ``tc -batch``, and a
   read of the classes' backlogs (spawned ``tc -s class show``, or through a persistent batch).
Last line: one JSON object. Usage: python benchmarks/cell_scheduler.py [--skip-element]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channel_models.cell import (BACKLOGGED, ConstantChannel, RayleighChannel, make_scheduler,  # noqa: E402
                                 simulate_cell)

LENA_RR_UL_BPS = {1: 2_292_000, 3: 749_000, 6: 373_000, 9: 246_220, 12: 184_670, 15: 147_730}
CELL_BPS = 2_292_000 * 8


def _err_pct(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) / np.asarray(want) - 1.0)) * 100.0)


def round_robin_equal() -> dict:
    """Per-device throughput vs cell/N and vs LENA's uplink figures (max error %, per N)."""
    out = {}
    for n in LENA_RR_UL_BPS:
        run = simulate_cell(make_scheduler("round-robin", n), [ConstantChannel(CELL_BPS)] * n, [BACKLOGGED] * n, 1000.0)
        per = run.throughput_bps() / 8
        out[n] = {"per_device_Bps": round(float(per.mean())), "err_vs_cell_over_n_pct": round(_err_pct(per, CELL_BPS / 8 / n), 3),
                  "lena_ul_Bps": LENA_RR_UL_BPS[n], "err_vs_lena_pct": round(_err_pct(per, LENA_RR_UL_BPS[n]), 3)}
        print(f"round robin, N={n:2d}: {per.mean():9.0f} B/s per device (cell/N error {out[n]['err_vs_cell_over_n_pct']:.3f} %; "
              f"LENA uplink {LENA_RR_UL_BPS[n]} B/s, error {out[n]['err_vs_lena_pct']:.2f} %)")
    return out


def proportional_fair_unequal() -> dict:
    """Time shares and throughput of PF at 1:3:4:5.5:18 static rates."""
    rates = np.array([1.0, 3.0, 4.0, 5.5, 18.0]) * 1e6
    run = simulate_cell(make_scheduler("proportional-fair", 5), [ConstantChannel(r) for r in rates], [BACKLOGGED] * 5, 10_000.0)
    share, thr = run.time_share(300), run.throughput_bps(300)
    out = {"rates_mbps": (rates / 1e6).tolist(), "time_share": np.round(share, 4).tolist(),
           "share_err_pct": round(_err_pct(share, 0.2), 3), "throughput_mbps": np.round(thr / 1e6, 4).tolist(),
           "throughput_vs_rate_over_5_err_pct": round(_err_pct(thr, rates / 5), 3)}
    print(f"proportional fair, rates 1:3:4:5.5:18 Mbit/s: time shares {out['time_share']} (max error "
          f"{out['share_err_pct']:.2f} %), throughput {out['throughput_mbps']} Mbit/s")
    return out


def diversity(duration_ms: float = 4000.0) -> dict:
    """Sum throughput (Mbit/s) under independent Rayleigh fading, N = 1…16, per scheduler."""
    out: dict = {}
    for name in ("proportional-fair", "max-rate", "round-robin"):
        sums = []
        for n in range(1, 17):
            chans = [RayleighChannel(mean_snr_db=10.0, seed=1000 + i) for i in range(n)]
            run = simulate_cell(make_scheduler(name, n), chans, [BACKLOGGED] * n, duration_ms)
            sums.append(float(run.throughput_bps(300).sum() / 1e6))
        out[name] = [round(x, 3) for x in sums]
        print(f"Rayleigh 10 dB, {name:17s} sum Mbit/s N=1..16: " + " ".join(f"{x:.1f}" for x in sums))
    pf, rr = np.array(out["proportional-fair"]), np.array(out["round-robin"])
    out["pf_gain_16_over_1"] = round(float(pf[-1] / pf[0]), 3)
    out["pf_rises"] = bool(np.all(np.diff(pf[[0, 1, 3, 7, 15]]) > 0))
    out["rr_max_dev_from_n1_pct"] = round(_err_pct(rr, rr[0]), 3)
    # log log N: the sum rate against log(log(N)+1) is close to a line.
    x = np.log(np.log(np.arange(1, 17)) + 1.0)
    out["pf_loglog_fit_r2"] = round(float(np.corrcoef(x, pf)[0, 1] ** 2), 4)
    print(f"  PF gain N=16 over N=1: x{out['pf_gain_16_over_1']}; round robin within {out['rr_max_dev_from_n1_pct']:.2f} % "
          f"of N=1; PF vs log(log N + 1): r^2 {out['pf_loglog_fit_r2']}")
    return out


# ----------------------------------------------------------------------------------------------
# The element (root).


def _element(cell, rates, scheduler, queue_num=5):
    from topologies.cell_element import CellElement, iptables_rule

    el = CellElement.start(cell.exec_prefix(cell.receiver), queue_num, [cell.sender_ip(i) for i in range(cell.n_senders)],
                           rates, scheduler)
    cell.run_in(cell.receiver, "iptables", "-t", "mangle", "-A", *iptables_rule(queue_num, "-s 10.77.0.0/16").split())
    return el


def element_vs_model(size: int = 1000, duration_s: float = 4.0) -> dict:
    """Per-device throughput of the element on real UDP vs the fluid model, same static cell."""
    from topologies.cell_netns import scratch_cell, udp_load

    out = {}
    for name, rates, offered in (("round-robin", [8e6, 8e6, 8e6], 5e6), ("proportional-fair", [3e6, 9e6], 10e6)):
        n = len(rates)
        with scratch_cell(n) as cell:
            el = _element(cell, rates, name)
            try:
                r = udp_load(cell, list(range(n)), offered, size, duration_s)
                st = el.stats()
            finally:
                el.close()
        model = simulate_cell(make_scheduler(name, n), [ConstantChannel(x) for x in rates], [BACKLOGGED] * n,
                              duration_s * 1000).throughput_bps(300)
        out[name] = {"rates_mbps": [x / 1e6 for x in rates], "emulated_mbps": np.round(r.throughput_bps / 1e6, 4).tolist(),
                     "model_mbps": np.round(model / 1e6, 4).tolist(), "err_pct": round(_err_pct(r.throughput_bps, model), 3),
                     "owd_median_ms": [round(float(np.median(d)), 2) for d in r.owd_ms],
                     "late_ttis": st["late_ttis"], "skipped_ttis": st["skipped_ttis"]}
        print(f"element vs model, {name}, rates {out[name]['rates_mbps']} Mbit/s: emulated {out[name]['emulated_mbps']}, "
              f"model {out[name]['model_mbps']} Mbit/s, max error {out[name]['err_pct']:.2f} % "
              f"(late TTIs {st['late_ttis']} of {st['ttis']}, skipped {st['skipped_ttis']})")
    return out


def element_cost(size: int = 1400) -> dict:
    """CPU of the element: per second idle (1 000 TTIs), and per packet at several packet rates
    (3 devices, each channel 1 Gbit/s so the element is not the bottleneck)."""
    from topologies.cell_netns import scratch_cell, udp_load

    out: dict = {"loads": []}
    with scratch_cell(3) as cell:
        el = _element(cell, [1e9] * 3, "proportional-fair")
        try:
            a, t0 = el.stats(), time.monotonic()
            time.sleep(3.0)
            b, t1 = el.stats(), time.monotonic()
            idle = (b["cpu_s"] - a["cpu_s"]) / (t1 - t0)
            out["idle_cpu_pct"] = round(idle * 100, 2)
            out["idle_cpu_us_per_tti"] = round(idle / ((b["ttis"] - a["ttis"]) / (t1 - t0)) * 1e6, 2)
            print(f"element idle: {out['idle_cpu_pct']:.1f} % of a core ({out['idle_cpu_us_per_tti']:.1f} us CPU per TTI)")
            for total_mbps in (10, 30, 60):
                a, t0 = el.stats(), time.monotonic()
                r = udp_load(cell, [0, 1, 2], total_mbps * 1e6 / 3, size, 3.0)
                b, t1 = el.stats(), time.monotonic()
                pkts = sum(b["released_packets"]) - sum(a["released_packets"])
                cpu = b["cpu_s"] - a["cpu_s"]
                row = {"offered_mbps": total_mbps, "pps": round(float(r.packets.sum() / r.window_s)),
                       "cpu_pct": round(cpu / (t1 - t0) * 100, 2),
                       "cpu_us_per_packet": round(cpu / max(pkts, 1) * 1e6, 2),
                       "cpu_us_per_packet_above_idle": round((cpu - idle * (t1 - t0)) / max(pkts, 1) * 1e6, 2),
                       "received_mbps": round(float(r.throughput_bps.sum() / 1e6), 3),
                       "dropped": sum(b["dropped"]) - sum(a["dropped"])}
                out["loads"].append(row)
                print(f"element at {total_mbps} Mbit/s offered ({row['pps']} pkt/s of {size} B): {row['cpu_pct']:.1f} % of "
                      f"a core, {row['cpu_us_per_packet']:.1f} us CPU per packet ({row['cpu_us_per_packet_above_idle']:.1f} "
                      f"above idle), received {row['received_mbps']} Mbit/s")
        finally:
            el.close()
    return out


def htb_alternative(n_classes: int = 15, lines: int = 3000, reads: int = 30) -> dict:
    """Cost of re-rating HTB classes per TTI: a ``class change`` through a persistent batch,
    and reading the classes' backlogs by a spawned ``tc -s class show`` or a persistent batch."""
    from topologies.cell_netns import scratch_cell

    out: dict = {"n_classes": n_classes}
    with scratch_cell(1) as cell:
        ns = cell.receiver
        cell.run_in(ns, "tc", "qdisc", "add", "dev", "r0", "root", "handle", "1:", "htb", "default", "99")
        for i in range(n_classes):
            cell.run_in(ns, "tc", "class", "add", "dev", "r0", "parent", "1:", "classid", f"1:{10 + i}", "htb", "rate",
                        "1mbit", "quantum", "1514")
            cell.run_in(ns, "tc", "qdisc", "add", "dev", "r0", "parent", f"1:{10 + i}", "pfifo", "limit", "1000")
        p = subprocess.Popen(["tc", "-n", ns, "-force", "-batch", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        t = time.perf_counter()
        for k in range(lines):
            p.stdin.write(f"class change dev r0 parent 1: classid 1:{10 + k % n_classes} htb rate {1_000_000 + k}bit "
                          f"burst 3028 quantum 1514\n".encode())
        p.stdin.close()
        p.wait(timeout=60)
        out["class_change_us"] = round((time.perf_counter() - t) / lines * 1e6, 2)
        t = time.perf_counter()
        for _ in range(reads):
            text = subprocess.run(["tc", "-n", ns, "-s", "class", "show", "dev", "r0"], capture_output=True, text=True).stdout
        out["spawned_backlog_read_ms"] = round((time.perf_counter() - t) / reads * 1e3, 3)
        assert text.count("backlog") == n_classes
        q = subprocess.Popen(["tc", "-n", ns, "-s", "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        try:
            fd, times = q.stdout.fileno(), []
            for _ in range(reads):
                t = time.perf_counter()
                q.stdin.write(b"class show dev r0\n")
                q.stdin.flush()
                got = b""
                while got.count(b"backlog") < n_classes:
                    r, _, _ = select.select([fd], [], [], 2.0)
                    if not r:
                        raise RuntimeError("tc batch gave no class listing")
                    got += os.read(fd, 65536)
                times.append(time.perf_counter() - t)
            out["batch_backlog_read_ms"] = round(float(np.median(times)) * 1e3, 3)
        finally:
            q.kill()
            q.wait(timeout=5)
    out["per_tti_ms"] = round(out["class_change_us"] * n_classes / 1e3 + out["batch_backlog_read_ms"], 3)
    print(f"HTB alternative, {n_classes} classes: class change {out['class_change_us']:.1f} us per line (batch); backlog read "
          f"{out['spawned_backlog_read_ms']:.2f} ms spawned, {out['batch_backlog_read_ms']:.3f} ms through a batch; one TTI "
          f"(re-rate {n_classes} classes + one read) ≈ {out['per_tti_ms']:.2f} ms of tc work")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-element", action="store_true", help="model checks only")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: dict = {"round_robin_equal": round_robin_equal(), "pf_unequal": proportional_fair_unequal(),
                 "diversity": diversity()}
    rr = out["round_robin_equal"]
    out["rr_max_err_pct"] = max(v["err_vs_cell_over_n_pct"] for v in rr.values())
    out["rr_max_err_vs_lena_pct"] = max(v["err_vs_lena_pct"] for v in rr.values())
    out["pf_share_err_pct"] = out["pf_unequal"]["share_err_pct"]
    if a.skip_element:
        out["element"] = "skipped (--skip-element)"
    elif os.geteuid() != 0:
        out["element"] = "skipped: the element needs root (network namespaces, iptables, NFQUEUE)"
        print(out["element"])
    else:
        out["element"] = {"vs_model": element_vs_model(), "cost": element_cost(), "htb_alternative": htb_alternative()}
        out["element_vs_model_max_err_pct"] = max(v["err_pct"] for v in out["element"]["vs_model"].values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
