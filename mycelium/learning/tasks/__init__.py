"""Learning tasks as plug-ins: what a node trains, on which data (see docs/tasks.md).

- ``base``: the ``Task`` protocol, ``Hyper``, ``DataRequest``, the ``ImageTask`` /
  ``BatchedImageTask`` base classes, weights and fingerprint helpers
- ``loader``: ``load_task("digits" | "mnist" | "pkg.module:attr" | "file.py:attr")``
- ``digits``, ``mnist``: the built-in tasks; ``batched``: a batched engine for stacked
  forwards and ``StackedTask``, the base class built on it (imports torch)
- ``ops``: a task's batched operations, or one model at a time when it has none

The model fingerprint itself is :mod:`mycelium.fingerprint` (no torch, no numpy), so the
registry and the ServerApp can check arrays without importing this package.
"""
