"""Run one :class:`~mycelium.flower.group_host.GroupHost` in the foreground until a signal
(the ``group`` command): SIGINT/SIGTERM stop it cleanly, a dead SuperLink ends it."""

from __future__ import annotations

import logging
import signal
import threading

from mycelium.flower.group_host import GroupHost

logger = logging.getLogger(__name__)


def host_until_signalled(host: GroupHost, *, check_interval: float = 1.0) -> int:
    """Start ``host`` and keep it until SIGINT/SIGTERM (returns 0) or until its SuperLink
    dies (returns 1). Always stops it. Start-up errors propagate."""
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
    try:
        host.start()
        while not stop.wait(check_interval):
            if not host.is_healthy():
                logger.error(
                    "group %s: its superlink or serverapp ended (stopped, or the registry "
                    "failed/dissolved the group); see %s",
                    host.group_id,
                    host.work_dir,
                )
                return 1
        logger.info("group %s: stopping on signal", host.group_id)
        return 0
    finally:
        try:
            host.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
