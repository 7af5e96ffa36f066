"""The in-process simulation of migration policies (``bench learning``).

- ``run``: every algorithm (local, global, oracle, IFCA, naive, first-k, mycelium) over one
  :class:`~mycelium.learning.sim.federation.Federation`, and :func:`simulate`;
- ``federation``: the run's flags (:class:`SimConfig`), the clients' data per phase;
- ``timeline``: arrivals, departures, drift and lying groups;
- ``policy``: the policy-driven runs, calling the real ``decide`` each round;
- ``groups``: how each simulated group trains and aggregates (one flwr strategy per group);
- ``registry``: what the simulated registry publishes (claims beside verified accuracy);
- ``metrics``: moves, settled newcomers, re-homed drifted nodes.
"""

from mycelium.learning.sim.run import (
    ALGORITHMS,
    Federation,
    GroupTraining,
    RunResult,
    SimConfig,
    Weights,
    purity,
    run_all,
    run_oracle,
    simulate,
)

__all__ = [
    "ALGORITHMS",
    "Federation",
    "GroupTraining",
    "RunResult",
    "SimConfig",
    "Weights",
    "purity",
    "run_all",
    "run_oracle",
    "simulate",
]
