"""The one-command demo: a registry and N node agents on one machine, watched live.

- ``config``: :class:`DemoConfig` and the node plan (clusters, shards, the misplaced node);
- ``run``: starting and stopping the processes, watching until stable or failed (``run_demo``);
- ``observation``: snapshots of the registry, purity and the stability rule;
- ``report``: the JSON report, also for a failed run;
- ``live``: the terminal view (rich) and the final summary; ``figure``: the PNG.

It starts real processes only through :mod:`mycelium.launch` and reads the network only
through the registry's HTTP API. Nothing here imports torch, flwr or fastapi.
"""
