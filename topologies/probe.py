"""Start-up probe: which shaping backends this kernel supports, each asked through its own
:meth:`~topologies.shapers.LinkShaper.probe` in a throwaway network namespace that is always
removed; its name carries the probing process's pid, so the namespace of a probe killed half-way
is removed by the next run's cleanup (:func:`stale_probe_namespaces`)."""
from __future__ import annotations

import functools
import logging
import os
import uuid
from dataclasses import dataclass

from topologies.shapers import BACKENDS, _run

log = logging.getLogger(__name__)
PROBE_PREFIX = "wisvprobe-"


@dataclass(frozen=True)
class BackendSupport:
    """Probe results: per backend, None when it works, else the reason it does not."""

    reasons: dict[str, str | None]

    def available(self, backend: str) -> bool:
        """True when ``backend`` works here."""
        return self.reasons.get(backend, "unknown backend") is None

    def choose(self, requested: str = "auto") -> str:
        """The backend to use: ``requested``, or the first that works, in :data:`BACKENDS` order."""
        if requested == "auto":
            for name in BACKENDS:
                if self.available(name):
                    return name
            raise RuntimeError(f"no link-shaping backend works here: {self.reasons}")
        if requested not in BACKENDS:
            raise ValueError(f"unknown backend {requested!r}: use auto, {', '.join(BACKENDS)}")
        if not self.available(requested):
            raise RuntimeError(f"backend {requested} is not available: {self.reasons.get(requested)}")
        return requested


@functools.lru_cache(maxsize=1)
def probe_backends() -> BackendSupport:
    """Probe once per process (needs root); see the module docstring."""
    if os.geteuid() != 0:
        return BackendSupport({name: "not root" for name in BACKENDS})
    ns = f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
    try:
        r = _run("ip", "netns", "add", ns)
        if r.returncode:
            return BackendSupport({name: f"ip netns add failed: {r.stderr.strip()}" for name in BACKENDS})
        _run("ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pa-peer")
        _run("ip", "-n", ns, "link", "set", "pa", "up")
        reasons = {name: cls.probe(ns, "pa") for name, cls in BACKENDS.items()}
    finally:
        _run("ip", "netns", "del", ns)
    log.info("link backends: %s", {k: v or "ok" for k, v in reasons.items()})
    return BackendSupport(reasons)


def stale_probe_namespaces() -> list[str]:
    """Probe namespaces whose probing process is gone."""
    r = _run("ip", "netns", "list")
    out = []
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PROBE_PREFIX):
            continue
        pid = name[len(PROBE_PREFIX):].split("-")[0]
        if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
            out.append(name)
    return out
