"""ServerApp of a Mycelium Net group: open-ended rounds of the group's flwr strategy over its
live members.

The strategy (:mod:`mycelium.flower.strategy`) and the round loop
(:mod:`mycelium.flower.rounds`) live in the ``mycelium`` package; see docs/flower.md.
No torch here.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from mycelium.flower.protocol import RunConfig
from mycelium.flower.rounds import RoundLoop, build_strategy, open_registry, setup_app_logging

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the group's rounds until stopped, ``num-rounds`` done, or the group ended."""
    setup_app_logging()
    settings = RunConfig.from_run_config(context.run_config)
    strategy = build_strategy(settings)
    with open_registry(settings) as registry:
        RoundLoop(grid, strategy, registry, settings).run()
