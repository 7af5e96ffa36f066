"""Benchmarks that print figures (run through `python mycelium_net.py bench ...`)."""
