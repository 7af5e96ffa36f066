"""How the simulation's groups train and aggregate, one flwr strategy instance per group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mycelium.learning.sim.federation import Federation, fedavg
from mycelium.learning.strategy import PROXIMAL_MU_KEY, GroupAggregator, Reply, StrategyConfig
from mycelium.learning.tasks.base import Weights

if TYPE_CHECKING:
    from flwr.app import ConfigRecordValues

__all__ = ["GroupTraining"]


class GroupTraining:
    """How one algorithm run's groups train and aggregate: each group (by key) keeps its own
    flwr strategy across rounds; members train with the config it sends (``proximal-mu``).

    Plain FedAvg (the default) aggregates with :func:`~mycelium.learning.sim.federation.fedavg`,
    flwr's legacy ``aggregate``: it equals ``FedAvg.aggregate_train`` up to float rounding
    (tested) and is what the FedAvg figures of docs/learning.md were measured with."""

    def __init__(self, fed: Federation, salt: int) -> None:
        self.fed, self.salt = fed, salt
        self.aggregators: dict[int, GroupAggregator] = {}
        self.plain = fed.config.strategy == StrategyConfig()

    def round(
        self, models: dict[int, Weights], members: dict[int, list[int]], round_: int
    ) -> dict[int, Weights]:
        """Every non-empty group's members train from its model (one batched call, clients
        in index order); returns each such group's aggregate."""
        groups = sorted(g for g, m in members.items() if m)
        configs: dict[int, dict[str, ConfigRecordValues]] = {}
        for g in [] if self.plain else groups:
            configs.update(self._aggregator(g).configure(models[g], members[g]))
        group_of = {i: g for g in groups for i in members[g]}
        who = sorted(group_of)
        mus = {_proximal_mu(configs.get(i, {})) for i in who}
        if len(mus) > 1:
            raise RuntimeError(f"groups of one simulation sent different proximal-mu {mus}")
        starts = [models[group_of[i]] for i in who]
        trained = self.fed.train(starts, who, round_, self.salt, mus.pop() if mus else 0.0)
        by_client = dict(zip(who, trained, strict=True))
        sizes = self.fed.sizes(round_, who)
        new: dict[int, Weights] = {}
        for g in groups:
            if self.plain:
                new[g] = fedavg([(by_client[i], sizes[i]) for i in members[g]])
                continue
            replies = [Reply(i, by_client[i], sizes[i]) for i in members[g]]
            merged = self._aggregator(g).aggregate(replies)
            if merged is None:  # only without replies, and every group here has members
                raise RuntimeError(f"group {g} aggregated nothing from {len(replies)} replies")
            new[g] = merged
        return new

    def _aggregator(self, group: int) -> GroupAggregator:
        if group not in self.aggregators:
            self.aggregators[group] = GroupAggregator(self.fed.config.strategy)
        return self.aggregators[group]


def _proximal_mu(config: Mapping[str, ConfigRecordValues]) -> float:
    """A node's train config's proximal-mu (0.0 when it has none)."""
    mu = config.get(PROXIMAL_MU_KEY, 0.0)
    if not isinstance(mu, int | float):
        raise TypeError(f"{PROXIMAL_MU_KEY} must be a number, got {mu!r}")
    return float(mu)
