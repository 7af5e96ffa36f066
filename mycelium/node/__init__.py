"""The node agent: one long-lived process per learner.

- ``config``: :class:`NodeConfig` (every field is a ``node`` CLI option; paths made
  absolute on entry), the node's data, and this package's exception tree
  (:class:`FatalNodeError`);
- ``agent``: :class:`NodeAgent`, its life cycle (``NodeAgent.start`` returns a ready agent;
  loop, shutdown); ``actions``: what it does about groups (join, migrate, found, follow the
  registry);
- ``placement``: probe the live groups' models on the node's own data -> candidates ->
  :func:`mycelium.learning.policy.decide`, holding the node's one ``policy.NodeState``;
- ``membership``: the group the node trains in and its SuperNode; ``hosting``: the group
  this node founded;
- ``status``: ``status.json`` on its own timer, off the heartbeat path.
"""
