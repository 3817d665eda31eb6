"""Experiments: run protocols end to end over emulated links and collect their logs."""
