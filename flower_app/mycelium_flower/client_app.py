"""ClientApp of a Mycelium Net group: forwards each TRAIN message to the node's warm trainer
(:mod:`mycelium.flower.client_fit`). Any failure becomes an error reply, never a crash."""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from mycelium.flower.client_fit import fit_message, reply_content

logger = logging.getLogger(__name__)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received group model locally; reply with arrays + metrics or an error."""
    try:
        return Message(reply_content(fit_message(msg, context)), reply_to=msg)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
        logger.warning("train failed on node %s: %s", context.node_id, exc)
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
