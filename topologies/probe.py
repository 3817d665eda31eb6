"""Start-up probe: which shaping backends this kernel supports (netem? NFQUEUE?), tried in a
throwaway network namespace that is always removed."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import uuid
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSupport:
    """Probe results; ``reasons`` says why a backend is missing."""

    netem: bool
    nfqueue: bool
    reasons: dict[str, str]

    def choose(self, requested: str = "auto") -> str:
        """The backend to use: ``requested``, or netem when present, else nfqueue (auto)."""
        if requested == "auto":
            if self.netem:
                return "netem"
            if self.nfqueue:
                return "nfqueue"
            raise RuntimeError(f"no link-shaping backend works here: {self.reasons}")
        if requested not in ("netem", "nfqueue"):
            raise ValueError(f"unknown backend {requested!r}: use auto, netem or nfqueue")
        if not getattr(self, requested):
            raise RuntimeError(f"backend {requested} is not available: {self.reasons.get(requested)}")
        return requested


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


@functools.lru_cache(maxsize=1)
def probe_backends() -> BackendSupport:
    """Probe once per process (needs root); see the module docstring."""
    reasons: dict[str, str] = {}
    if os.geteuid() != 0:
        return BackendSupport(False, False, {"netem": "not root", "nfqueue": "not root"})
    ns = f"wisvprobe-{uuid.uuid4().hex[:8]}"
    netem = nfq = False
    try:
        r = _run("ip", "netns", "add", ns)
        if r.returncode:
            reasons["netem"] = reasons["nfqueue"] = f"ip netns add failed: {r.stderr.strip()}"
            return BackendSupport(False, False, reasons)
        _run("ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
        _run("ip", "-n", ns, "link", "set", "pa", "up")
        r = _run("tc", "-n", ns, "qdisc", "add", "dev", "pa", "root", "netem", "delay", "1ms")
        netem = r.returncode == 0
        if not netem:
            reasons["netem"] = r.stderr.strip() or "tc netem failed"
        try:
            import netfilterqueue  # noqa: F401
            r = _run("ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "pb",
                     "-j", "NFQUEUE", "--queue-num", "7")
            nfq = r.returncode == 0
            if not nfq:
                reasons["nfqueue"] = r.stderr.strip() or "iptables NFQUEUE failed"
        except ImportError as e:
            reasons["nfqueue"] = f"python NetfilterQueue missing: {e}"
    finally:
        _run("ip", "netns", "del", ns)
    log.info("link backends: netem=%s nfqueue=%s %s", netem, nfq, reasons or "")
    return BackendSupport(netem, nfq, reasons)
