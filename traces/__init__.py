"""Link traces: the canonical format, readers/writers, importers of public formats, operations.

A trace is a table with a row per step: ``t_ms`` and, per direction (``up`` = device→edge,
``down`` = edge→device), ``rate_bps_*``, ``delay_ms_*`` and ``loss_*``; a row holds until
the next row's ``t_ms`` (the last one for ``step_ms``). See docs/traces.md "Trace format".
"""
from traces.format import Trace, TraceFormatError, read_trace, write_trace

__all__ = ["Trace", "TraceFormatError", "read_trace", "write_trace"]
