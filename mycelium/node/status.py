"""``status.json`` in the node's work dir, written on its own timer (not on the heartbeat path).

It compares the node's local-only model, its group's model and the model it predicts with
(the best of its personal, local-only and group models on validation, mycelium.learning.personal)
on the node's own validation and test data; the demo reads it for its report. Scoring a model
on the test split costs a torch forward pass, so the group model's test accuracy is computed
once per received model, not once per write (the personal scores come computed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mycelium.flower.trainer import LocalTrainer, PersonalScores

STATUS_FILE = "status.json"


@dataclass(frozen=True)
class NodeStatus:
    """What ``status.json`` holds (its keys are these field names)."""

    name: str
    node_id: int | None
    group_id: int | None
    local_val_accuracy: float
    local_test_accuracy: float | None
    group_val_accuracy: float | None
    group_test_accuracy: float | None
    # The model the node predicts with for its group's latest model: ``predicts_with`` its
    # personal model, its own local-only model or the plain group model, or (``ens``) the
    # ensemble "group", "group+personal" or "group+personal+local" (``uses_personal``: not the
    # group model alone), chosen on its val split (None before a round in the group).
    personal_val_accuracy: float | None
    personal_test_accuracy: float | None
    uses_personal: bool | None
    round: int | None
    moves: int
    hosting_group_id: int | None
    predicts_with: str | None = None


class StatusReporter:
    """Writes :class:`NodeStatus` atomically to ``work_dir/status.json``."""

    def __init__(self, work_dir: Path, trainer: LocalTrainer) -> None:
        self.path = Path(work_dir) / STATUS_FILE
        self._trainer = trainer
        self._local_test: float | None = None
        self._group_test: tuple[float | None, float | None] = (None, None)  # (fit time, acc)

    def local_model_trained(self) -> None:
        """Score the (warmed-up) local-only model on the test split, once."""
        self._local_test = self._trainer.test_accuracy(self._trainer.local_arrays())

    def write(
        self,
        *,
        name: str,
        node_id: int | None,
        group_id: int | None,
        moves: int,
        hosting_group_id: int | None,
        personal: PersonalScores | None = None,
    ) -> NodeStatus:
        trainer = self._trainer
        status = NodeStatus(
            name=name,
            node_id=node_id,
            group_id=group_id,
            local_val_accuracy=trainer.local_score(),
            local_test_accuracy=self._local_test,
            group_val_accuracy=trainer.group_score,
            group_test_accuracy=self._group_test_accuracy() if group_id is not None else None,
            personal_val_accuracy=personal.val_accuracy if personal else None,
            personal_test_accuracy=personal.test_accuracy if personal else None,
            uses_personal=personal.uses_personal if personal else None,
            round=trainer.last_round,
            moves=moves,
            hosting_group_id=hosting_group_id,
            predicts_with=personal.predicts_with if personal else None,
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(status), indent=2))
        tmp.replace(self.path)
        return status

    def _group_test_accuracy(self) -> float | None:
        """Test accuracy of the last group model received, computed once per model."""
        fitted_at, arrays = self._trainer.last_fit_at, self._trainer.last_group_arrays
        if arrays is None:
            return None
        if self._group_test[0] != fitted_at:
            self._group_test = (fitted_at, self._trainer.test_accuracy(arrays))
        return self._group_test[1]
