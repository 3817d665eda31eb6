"""Importers of public trace formats into the canonical :class:`traces.Trace`.

Each importer is one function ``import_<format>(path, options) -> Trace``; :func:`detect_format`
recognises the formats by content, and :func:`import_trace` dispatches on it.
"""
from traces.importers.common import ImportOptions
from traces.importers.detect import FORMATS, detect_format, import_to_file, import_trace

__all__ = ["ImportOptions", "FORMATS", "detect_format", "import_to_file", "import_trace"]
