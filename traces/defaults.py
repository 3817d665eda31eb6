"""The project's own shipped trace, the default of every command that needs one."""
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
DEFAULT_TRACE = BUILTIN_DIR / "pedestrian_3p5ghz_60s.csv"
