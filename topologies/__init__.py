"""Emulated topologies: Mininet hosts joined by trace-driven links (rate, delay, loss).

``topo`` declares topologies, ``net`` builds and tears them down, ``shapers`` shape one link
direction (backends ``netem`` and ``nfqueue``), ``replayer`` drives the shapers from a trace on a
monotonic clock, ``linkcheck`` measures what a link really does against what the trace intended.
"""
