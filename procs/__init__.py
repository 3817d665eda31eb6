"""Process and interface utilities every layer may import (it imports nothing of the project):
processes that die with their orchestrator and are known by pid and start time
(:mod:`procs.lifecycle`), and a namespace's interface counters (:mod:`procs.netdev`)."""
