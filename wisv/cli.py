"""The ``wisv`` command line: one command group per part of the testbed."""
from __future__ import annotations

import argparse
import logging
import sys

from nodes import cli as models_cli
from runs import cli as run_cli
from runs import pcap_cli
from topologies import cli as link_cli
from traces import cli as trace_cli
from wisv import demo


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wisv-testbed")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group registered."""
    p = argparse.ArgumentParser(prog="wisv", description="WISV network-in-the-loop emulation testbed")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)
    trace_cli.register(sub)
    models_cli.register(sub)
    models_cli.register_node(sub)
    head_commands = models_cli.register_head(sub)
    link_cli.register(sub)
    run_cli.register(sub)
    run_cli.register_simulate(sub, head_commands)
    pcap_cli.register(sub)
    demo.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the command; user errors exit 2 with one clear line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (*trace_cli.USER_ERRORS, RuntimeError) as e:
        sys.stderr.write(f"wisv: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("wisv: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
