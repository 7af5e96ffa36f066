"""Learning tasks as plug-ins: what a node trains, on which data, and the model's fingerprint.

- ``base``: the ``Task`` protocol, the ``ImageTask`` base class, weights helpers
- ``loader``: ``load_task("digits" | "mnist" | "pkg.module:attr" | "file.py:attr")``
- ``fingerprint``: torch-free ``ModelSpec`` (names, shapes, dtypes) and its hash
- ``digits``, ``mnist``: the built-in tasks; ``batched``: a batched engine for stacked forwards
- ``ops``: a task's batched operations, or one model at a time when it has none

Importing this package imports neither torch nor flwr (the registry and ServerApp use
``fingerprint``). See docs/tasks.md.
"""
