"""ServerApp of a Mycelium Net group: open-ended FedAvg rounds over the group's live members.

The strategy (:mod:`mycelium.flower.strategy`) and the round loop
(:mod:`mycelium.flower.rounds`) live in the ``mycelium`` package; see docs/flower.md.
No torch here.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from mycelium.flower.rounds import RoundLoop, Settings, setup_app_logging
from mycelium.flower.strategy import LiveMembersFedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the group's rounds until stopped, ``num-rounds`` done, or the group ended."""
    setup_app_logging()
    settings = Settings.from_run_config(context.run_config)
    strategy = LiveMembersFedAvg(unclaimed_grace=settings.unclaimed_grace)
    with settings.registry() as registry:
        RoundLoop(grid, strategy, registry, settings).run()
