"""Mycelium Net shared code: learning core, registry storage and client, Flower glue."""
