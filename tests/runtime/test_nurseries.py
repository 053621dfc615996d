"""What leaves a nursery is the error its caller handles, whichever trio groups exceptions."""

from __future__ import annotations

import pytest
import trio

from orchestrator.runtime.nurseries import open_nursery, single_error
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def fail(error: BaseException, delay: float | None = None) -> None:
    """Raise `error` after `delay` seconds; with no delay, before any checkpoint, so that
    tasks started together all fail before the nursery can cancel them."""
    if delay is not None:
        await trio.sleep(delay)
    raise error


async def test_one_failing_task_raises_its_own_error() -> None:
    with pytest.raises(StackError, match="no such image") as caught:
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(fail, StackError("no such image"))
    assert type(caught.value) is StackError


async def test_an_error_in_the_body_is_raised_as_itself() -> None:
    with pytest.raises(OSError, match="gone"):
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise OSError("gone")


async def test_of_errors_raised_together_the_users_mistake_is_the_one_reported() -> None:
    with pytest.raises(StackError, match="registry gone") as caught:
        async with open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("a bug"))
            nursery.start_soon(fail, StackError("registry gone (layer 1)"))
            nursery.start_soon(fail, StackError("registry gone (layer 2)"))
    assert type(caught.value) is StackError


async def test_an_interrupt_wins_over_other_errors() -> None:
    with pytest.raises(KeyboardInterrupt):
        async with open_nursery() as nursery:
            nursery.start_soon(fail, StackError("a mistake"))
            nursery.start_soon(fail, KeyboardInterrupt())


async def test_several_unexpected_errors_stay_a_group_so_each_is_seen() -> None:
    with pytest.raises(BaseExceptionGroup) as caught:
        async with open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("one"))
            nursery.start_soon(fail, OSError("two"))
    assert {type(error) for error in caught.value.exceptions} == {ValueError, OSError}


async def test_cancellation_from_outside_reaches_its_scope() -> None:
    with trio.move_on_after(0.05) as scope:
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_mistake_during_cancellation_still_leaves_cancelled() -> None:
    """The error is reported, and the cancelled scope cancels what comes after it."""
    async def finish_then_fail() -> None:
        with trio.CancelScope(shield=True):  # still at work when the cancellation comes
            await trio.sleep(0.02)
        raise StackError("a mistake")

    reached_after = False
    with trio.CancelScope() as scope:
        try:
            async with open_nursery() as nursery:
                nursery.start_soon(finish_then_fail)
                await trio.sleep(0.01)
                scope.cancel()
                await trio.sleep_forever()
        except StackError:
            await trio.sleep(0)  # a checkpoint in a cancelled scope raises Cancelled again
            reached_after = True
    assert scope.cancelled_caught
    assert not reached_after


async def test_an_async_generator_holding_a_nursery_closes_cleanly() -> None:
    """A stream's reader that stops early closes the generator: no error from aclose."""

    async def lines():
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            yield 1
            yield 2

    stream = lines()
    assert await stream.__anext__() == 1
    await stream.aclose()


async def test_a_lone_error_in_nested_groups_is_found() -> None:
    error = StackError("deep")
    group = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [error])])
    assert single_error(group) is error
