"""The learning core, free of processes and HTTP: what every node and the simulation share.

- ``data``: the clustered digits scenarios (rotate, permute, mixed) and a user's own ``.npz``;
- ``model``: the MLP, local training and evaluation (torch);
- ``codec``: model weights to and from ``.npz`` bytes (the registry's model format);
- ``policy``: the pure migration policy (``decide``) the node agent and the simulation call;
- ``candidates``: the pure candidate choice (which groups a node probes), shared likewise;
- ``sim/``: the in-process simulation of migration policies (``bench learning``), one
  module per part (its ``__init__`` lists them).
"""
