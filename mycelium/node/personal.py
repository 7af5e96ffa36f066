"""The node's personal model, kept up to date off the agent's loop.

After each fit (a new group model), :class:`Personaliser`'s thread has the warm trainer adapt
that model to the node's data (:meth:`~mycelium.flower.trainer.LocalTrainer.personalise`, at
most once per group model, on a module and lock of its own), so neither heartbeats, the
status file nor the next fit wait for it. What the agent reports of it is
:func:`personal_in_group`: scores of a group model received in the node's current group.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mycelium.flower.trainer import LocalTrainer, PersonalScores

logger = logging.getLogger(__name__)

WAIT_S = 0.5  # how often the thread looks at its stop flag while no model comes
STOP_DEADLINE_S = 10.0  # an adaptation under way is waited for this long at shutdown


class Personaliser:
    """A daemon thread calling ``trainer.personalise()`` whenever a fit brought a new group
    model; :meth:`stop` ends it (with a deadline)."""

    def __init__(self, trainer: LocalTrainer) -> None:
        self._trainer = trainer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Personaliser:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="personalise", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_DEADLINE_S)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._trainer.wait_for_group_model(WAIT_S):
                continue
            try:
                self._trainer.personalise()
            except Exception:  # a bad adaptation must not end the node: its group model holds
                logger.exception("personal model not updated")


def personal_in_group(trainer: LocalTrainer, fit_mark: float | None) -> PersonalScores | None:
    """The trainer's personal scores when they are of a group model received after
    ``fit_mark`` (the last fit before the node joined its current group), else None."""
    scores = trainer.personal
    if scores is None or (fit_mark is not None and scores.fitted_at <= fit_mark):
        return None
    return scores
