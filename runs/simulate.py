"""``wisv simulate`` and ``wisv run --simulate``: the same device and edge code with the link
modelled analytically from a trace and a virtual clock — fast sweeps without root, logs in the
emulated runs' schema.

Each message is charged :func:`channel_models.csi.transfer_ms` at the trace row in force when
it is sent (the trace loops), with losses drawn from a seeded generator. Compute is charged
from the run's compute profiles exactly (measured only where a node's profile is
``measured``), so with profiles a simulation is a pure function of its spec: no wall clock. Messages go
through the real encoder and the real edge handler, so byte counts and decisions are those of
an emulated run; ``t_start``/``t_end`` in the logs are virtual seconds. Every protocol starts
at the trace's beginning, so all protocols see the same channel. Every device of the run is
simulated (:mod:`runs.devices`: the configs and traces an emulated run gives its devices), each
over its own link and virtual clock, all served by one edge; the edge does not make devices
wait for each other (no queueing between sessions is modelled).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from channel_models.csi import CSI, RTO_MS, segments, transfer_ms
from nodes.config import RunConfig
from nodes.decoding.stopping import stop_criteria_for
from nodes.device import DeviceClient, EdgeError, ExchangeCounts, matches, run_problems
from nodes.edge import EdgeServer
from nodes.oracle import AnswerOracle
from nodes.models import ModelPair
from nodes.telemetry import RoundLogger
from nodes.wire import Error, HiddenRequest, Message, Result, Verdict, decode, encode, encoded_size
from runs.devices import device_tag, resolve_devices
from runs.summary import ProtocolSummary, summarise
from traces.format import Trace
from traces.schedule import LinkSchedule

log = logging.getLogger(__name__)


@dataclass
class AnalyticLink:
    """A trace-driven link model (see the module docstring); the trace loops (its
    :class:`traces.schedule.LinkSchedule`, the one the replayer walks)."""

    trace: Trace
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    schedule: LinkSchedule = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.schedule = LinkSchedule.from_trace(self.trace)

    def csi(self, t_ms: float) -> CSI:
        """The channel in force at virtual time ``t_ms`` (the report a device would send)."""
        return self.schedule.csi_at(t_ms)

    def transfer_ms(self, t_ms: float, nbytes: int, direction: str, expected: bool = False) -> float:
        """Time for ``nbytes`` application bytes sent at ``t_ms`` to arrive, in ms (losses drawn,
        or their expectation when ``expected``). Sent during an outage (rate 0), the message
        waits for the link to return and pays one retransmission timeout, as TCP does over the
        emulated link (which drops everything while the rate is 0)."""
        end = self.schedule.outage_end_ms(t_ms, direction)
        if end is not None:
            wait = end - t_ms + RTO_MS
            return wait + self.transfer_ms(end, nbytes, direction, expected) if wait < float("inf") else wait
        csi = self.csi(t_ms)
        lost = None if expected else int(self.rng.binomial(segments(nbytes), csi.loss(direction)))
        return transfer_ms(csi, nbytes, direction, lost)


class SimTransport:
    """Hands encoded frames straight to an edge handler, charging link time and the compute the
    nodes report (their profiles' times, or measured ones) to a virtual clock. The edge's times
    in a reply are virtual too: no queue (one device), a stay of its charged compute, arrival
    and reply on the virtual clock."""

    virtual = True  # compute profiles set the time exactly

    def __init__(self, edge: EdgeServer, link: AnalyticLink, cfg: RunConfig):
        self.edge, self.link, self.cfg = edge, link, cfg
        self.t_ms = 0.0
        self.ident = cfg.device_id.encode()
        self._round_arrival_s: float | None = None  # a round's first arrival at the edge, across its exchanges

    def now_ms(self) -> float:
        """Virtual time in ms."""
        return self.t_ms

    def wall_s(self) -> float:
        """Virtual time in seconds (the logs' t_start/t_end in simulation)."""
        return self.t_ms / 1000.0

    def compute(self, charged_ms: float, pad_ms: float) -> None:
        """Device compute advances the virtual clock by what the profile charged."""
        self.t_ms += charged_ms

    def csi(self) -> CSI:
        """CSI in force now."""
        return self.link.csi(self.t_ms)

    def exchange(self, msg: Message, expect: tuple[type, ...], counts: ExchangeCounts) -> Message:
        """Uplink, edge handling (the compute the edge reports: ``verify_ms`` of a verdict or a
        result), downlink — no wall clock anywhere; bytes and round trips counted in ``counts``."""
        frames = encode(msg, {"hidden": self.cfg.hidden_dtype, "probs": "f32"})
        up = encoded_size(frames)
        counts.up_bytes += up
        self.t_ms += self.link.transfer_ms(self.t_ms, up, "up")
        arrival_s = self.wall_s()
        reply_frames = self.edge.handle_frames(self.ident, frames)
        if reply_frames is None:
            raise EdgeError("internal", "the edge sent no reply")
        reply = decode(reply_frames)
        self.t_ms += getattr(reply, "verify_ms", 0.0)
        if isinstance(reply, HiddenRequest):
            self._round_arrival_s = arrival_s
        elif isinstance(reply, (Verdict, Result)):  # the edge's clock is the virtual one
            reply.t_edge_arrival = arrival_s if self._round_arrival_s is None else self._round_arrival_s
            reply.t_edge_reply, self._round_arrival_s = self.wall_s(), None
        down = encoded_size(reply_frames)
        counts.down_bytes += down
        self.t_ms += self.link.transfer_ms(self.t_ms, down, "down")
        if isinstance(reply, Error):
            raise EdgeError(reply.code, reply.message)
        if not (isinstance(reply, expect) and matches(msg, reply)):
            raise EdgeError("internal", f"unexpected reply {reply.TYPE} to {msg.TYPE}")
        counts.round_trips += 1
        return reply

    def send_only(self, msg: Message) -> None:
        """Deliver a message that gets no reply."""
        self.edge.handle_frames(self.ident, encode(msg))

    def close(self) -> None:
        """Nothing to close."""


def simulate_protocol(pair: ModelPair, trace: Trace | list[Trace], cfg: RunConfig, out_dir: Path | None = None,
                      oracle: AnswerOracle | None = None) -> ProtocolSummary:
    """One protocol (``cfg.protocol``) with the analytic link, for every device: ``trace`` (one
    device), or one trace per device of a list. Device k runs its own config
    (:func:`runs.devices.resolve_devices`: ``cfg.for_device(k)``, its own slice of the problems)
    over its own link (trace k, loss seed :func:`runs.devices.link_seed`) and its own virtual
    clock, each a session of one edge. Per-round logs go to ``out_dir/rounds-<tag>.jsonl``, the
    requests and the device's config to ``out_dir/requests-<tag>.json`` (tag: the protocol, or
    ``<protocol>-d<k>`` with several devices, as emulated); the summary covers every device.
    ``oracle``: the edge's judge for the oracle protocol (default: a new one for ``cfg.task``;
    pass one to share its labels between runs)."""
    traces = trace if isinstance(trace, list) else [trace]
    devices = resolve_devices(cfg, traces)
    oracle = oracle or AnswerOracle(pair.target, pair.tokenizer, pair.eos_token_id, cfg.task)
    edge = EdgeServer(pair.target, pair.eos_token_id, bind=None, head_dir=cfg.head_dir, profile=cfg.compute.edge,
                      lambda_ms=cfg.lambda_ms, oracle=oracle,
                      stop_rules=stop_criteria_for(cfg.task.make(), pair.tokenizer, pair.target, cfg.task.chat_template))
    tags = [device_tag(cfg.protocol, d.index, len(devices)) for d in devices]
    loggers = [RoundLogger(out_dir / f"rounds-{tag}.jsonl") if out_dir else None for tag in tags]
    clients = []
    requests: list[dict] = []
    rounds: list[dict] = []
    try:
        for d, logger in zip(devices, loggers):  # every device holds a session, as in an emulated run
            transport = SimTransport(edge, AnalyticLink(d.trace, seed=d.link_seed), d.config)
            clients.append(DeviceClient(pair.drafter, d.config, pair.eos_token_id, transport, round_logger=logger,
                                        csi=transport.csi))
            clients[-1].hello()
        for d, client, tag in zip(devices, clients, tags):
            reqs, results = run_problems(client, pair, d.config.task)
            requests += reqs
            rounds += [x.to_record() for r in results for x in r.rounds]
            if out_dir:
                write_requests(out_dir / f"requests-{tag}.json", d.config, reqs)
        for client in clients:
            client.close()
    finally:
        for logger in loggers:
            if logger:
                logger.close()
    summary = summarise(cfg.protocol, requests, rounds)
    log.info("%s: %s", cfg.protocol, summary)
    return summary


def write_requests(path: Path, cfg: RunConfig, requests: list[dict]) -> None:
    """The per-request records of one device and protocol, with the config they ran under."""
    path.write_text(json.dumps({"protocol": cfg.protocol, "config": cfg.to_dict(), "requests": requests}, indent=1)
                    + "\n")


def simulate(pair: ModelPair, trace: Trace | list[Trace], cfg: RunConfig, protocols: list[str],
             out_dir: Path | None = None, oracle: AnswerOracle | None = None) -> dict[str, ProtocolSummary]:
    """Every protocol over the same trace segment(s) with the analytic link, every device of the
    run (``trace``: one device; a list: one trace per device; see :func:`simulate_protocol`,
    also for ``oracle``); the summaries go to ``out_dir/summary.json``."""
    import torch

    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.compute.device.enabled and cfg.compute.edge.enabled:
        torch.set_num_threads(1)  # time comes from the profiles: one thread is fastest on a shared host
    try:
        out = {p: simulate_protocol(pair, trace, cfg.with_protocol(p), out_dir, oracle) for p in protocols}
    finally:
        torch.set_num_threads(threads)
    if out_dir:
        (out_dir / "summary.json").write_text(json.dumps({k: v.__dict__ for k, v in out.items()}, indent=2) + "\n")
    return out
