"""WISV testbed: shared utilities and the command-line entry point."""
