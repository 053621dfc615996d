"""Run a plan: every action as soon as the actions it waits for are done.

Independent services start side by side; a service waits only for what its
`depends_on` names. Concurrency is bounded (creating containers is disk and
fork work; two cores do not get faster with fifty at once). An action that
fails fails the actions that wait for it, and they say why; actions that do
not depend on it carry on, as compose does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

DEFAULT_CONCURRENCY = 8


class SchedulableAction(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def after(self) -> Sequence[str]: ...


@dataclass
class Outcome:
    action: Any
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


async def run_plan(
    actions: Sequence[SchedulableAction],
    execute: Callable[[Any], Awaitable[None]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    optional: Callable[[Any, str], bool] = lambda action, prerequisite: False,
) -> list[Outcome]:
    """Execute every action once its prerequisites succeeded; the outcome of each.

    `optional(action, prerequisite)` says when a failed prerequisite must not
    stop an action (`depends_on` with `required: false`).
    """
    by_id = {action.id: action for action in actions}
    for action in actions:
        for prerequisite in action.after:
            if prerequisite not in by_id:
                raise ValueError(f"action {action.id} waits for unknown {prerequisite}")
    done = {action.id: trio.Event() for action in actions}
    outcomes: dict[str, Outcome] = {}
    limiter = trio.CapacityLimiter(max(1, concurrency))

    async def one(action: Any) -> None:
        try:
            for prerequisite in action.after:
                await done[prerequisite].wait()
                failed = outcomes[prerequisite]
                if not failed.ok and not optional(action, prerequisite):
                    outcomes[action.id] = Outcome(
                        action, f"not done: {prerequisite} failed ({failed.error})"
                    )
                    return
            async with limiter:
                try:
                    await execute(action)
                except StackError as error:
                    outcomes[action.id] = Outcome(action, str(error))
                    return
                except OSError as error:
                    outcomes[action.id] = Outcome(action, f"{error}")
                    return
            outcomes[action.id] = Outcome(action)
        finally:
            done[action.id].set()

    async with open_nursery() as nursery:
        for action in actions:
            nursery.start_soon(one, action)
    return [outcomes[action.id] for action in actions]
