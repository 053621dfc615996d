"""Host veths of released containers, deleted a moment later unless the kernel got there first.

A container's host veth normally goes with its network namespace: when the
last process in it ends, the kernel deletes both ends of the pair. But it tears
namespaces down asynchronously, and deleting the veth ourselves right after the
container exited waits for that teardown — 10 to 35 ms here, the largest part
of releasing a `run --rm` container. So a release that does not need the link
gone at once only notes it here; a thread deletes whatever is still there a
moment later (a namespace kept alive by something else, a container that never
started), and `flush` deletes all of them where someone must see them gone (an
engine stopping). An engine killed before that leaves nothing lasting: the next
one deletes this root's links that no record names (`NetworkManager.reconcile`).

A link is identified by its name and its index: a veth recreated under the same
name (the same container plugged in again) has another index and is left alone.
"""

from __future__ import annotations

import logging
import threading
import time

from orchestrator.runtime.network import links
from orchestrator.runtime.network.owner import Owner

DELAY = 2.0  # seconds a noted veth is given to go with its namespace
logger = logging.getLogger(__name__)


class StaleLinks:
    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._due: list[tuple[float, str, int]] = []  # (when, name, index), oldest first
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def note(self, name: str) -> None:
        """Delete the veth `name` later if it is still there, or now if it cannot wait."""
        index = links.host_index(name)
        if index is None:
            return  # gone with its namespace already
        with self._changed:
            self._due.append((time.monotonic() + DELAY, name, index))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="stale-links", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def flush(self) -> None:
        """Delete every noted veth still there, now."""
        with self._changed:
            due, self._due = self._due, []
        for _, name, index in due:
            self._delete(name, index)

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(timeout)
                _, name, index = self._due.pop(0)
            self._delete(name, index)

    def _delete(self, name: str, index: int) -> None:
        try:
            links.delete_link(name, self._owner, recorded=True, index=index)
        except Exception as error:  # a netlink failure must not end the thread
            logger.warning("link %s: deleting it: %s", name, error)
