"""Nurseries whose failures read as one error, the way the code around them expects.

Since trio 0.25 a nursery always raises an `ExceptionGroup`, even when a single
child failed. Most of our nurseries run helpers of one operation (the layers of
a pull, the replicas of a `stop`, the copies of an attached session), and the
code around them handles one error: `except StackError` turns a user's mistake
into one line, `except trio.BrokenResourceError` notices a client that left, an
async generator's `aclose()` expects its own `GeneratorExit` back. A group would
slip past every one of those. `open_nursery` gives them the error itself.

Cancellation is not hidden: a lone `Cancelled` comes out as itself, for the
cancel scope that owns it; and when a real error travels with it, the scope is
still cancelled, so trio raises `Cancelled` again at the next checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import trio

from orchestrator.spec.errors import StackError


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def single_error(group: BaseExceptionGroup) -> BaseException:
    """The one error to raise for what a nursery's tasks raised together.

    A lone error is itself. Of several: what ends the process or the generator
    (Ctrl-C's `KeyboardInterrupt`, `SystemExit`, `GeneratorExit`) goes on whatever
    else failed; else the first user's mistake — parallel downloads from
    a registry that went away all fail at once, and the user needs one line, not
    one per layer; else, when all are cancellations, one of them. Anything else
    (several unexpected errors) stays a group, so that each can be seen.
    """
    leaves = list(_leaves(group))
    if len(leaves) == 1:
        return leaves[0]
    for leaf in leaves:
        if not isinstance(leaf, Exception | trio.Cancelled):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, StackError):
            return leaf
    if all(isinstance(leaf, trio.Cancelled) for leaf in leaves):
        return leaves[0]
    return group


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """`trio.open_nursery()`, raising `single_error` of what its tasks raised."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        raise single_error(group) from None
