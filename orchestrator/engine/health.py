"""Healthchecks: which probe a container runs, what its results mean, and the loop.

The rules are Docker's, so a stack file behaves here as under Docker Compose:

- the service's `healthcheck` overrides the image's HEALTHCHECK one field at a
  time; a field left unset (or zero) falls back to the image's, then to the
  default (interval 30s, timeout 30s, retries 3, start_period 0,
  start_interval 5s);
- `disable: true` or a test of `["NONE"]` means no healthcheck at all;
- `CMD` runs its arguments as they are, `CMD-SHELL` runs them with `/bin/sh -c`;
- a container is `starting` until its first success; `retries` failures in a
  row make it `unhealthy`, one success makes it `healthy` again; failures
  inside the start period do not count, unless the container was already
  healthy; a probe that outlives its timeout has failed.

`healthcheck_of` and `HealthState` are pure. `run_healthchecks` is the only part
that waits; the probe itself is injected, so the runtime stays at the edge and
the loop can be tested with a fake.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import trio

from orchestrator.runtime.images.image_config import Healthcheck
from orchestrator.spec.errors import Path, StackError
from orchestrator.spec.units import format_duration, parse_duration

Status = Literal["starting", "healthy", "unhealthy"]

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
DEFAULT_SHELL = ("/bin/sh", "-c")
# What `inspect` keeps of a container's probes: the last few, each output cut short,
# so a chatty probe that runs every second cannot grow the state without bound.
MAX_LOG_ENTRIES = 5
MAX_OUTPUT_BYTES = 4096
# Docker refuses shorter non-zero durations: a probe every microsecond is a typo.
_MIN_DURATION_NS = 1_000_000
_NS_PER_SECOND = 1_000_000_000
_PROBE_TYPES = ("CMD", "CMD-SHELL")


@dataclass(frozen=True)
class HealthcheckSpec:
    """A container's healthcheck once service and image are merged; durations in seconds."""

    test: tuple[str, ...]  # ("CMD", argv...) or ("CMD-SHELL", command...)
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES
    shell: tuple[str, ...] = DEFAULT_SHELL

    @property
    def argv(self) -> tuple[str, ...]:
        """What to execute in the container for one probe."""
        if self.test[0] == "CMD-SHELL":
            return (*self.shell, *self.test[1:])
        return self.test[1:]


def healthcheck_of(
    service: Mapping[str, Any],
    image_healthcheck: Healthcheck | None,
    *,
    service_name: str | None = None,
    shell: Sequence[str] | None = None,
) -> HealthcheckSpec | None:
    """The healthcheck a container of `service` runs, or None when it has none.

    `service` is a service of the normalized model (durations as Go duration
    strings); `image_healthcheck` is the image's, durations in nanoseconds with
    0 meaning unset. `shell` is the image's SHELL, used for `CMD-SHELL`.
    """
    check = service.get("healthcheck") or {}
    at: Path = ("services", service_name, "healthcheck") if service_name else ("healthcheck",)
    if check.get("disable"):
        return None
    image = image_healthcheck or Healthcheck(())
    test = _service_test(check.get("test"), (*at, "test"))
    if not test:
        test = image.test
        # An image's unknown probe type is not the user's mistake: Docker ignores it too.
        if not test or test[0] not in _PROBE_TYPES:
            return None
    if test[0] == "NONE":
        return None
    return HealthcheckSpec(
        test=test,
        interval=_seconds(check, "interval", image.interval, DEFAULT_INTERVAL, at),
        timeout=_seconds(check, "timeout", image.timeout, DEFAULT_TIMEOUT, at),
        start_period=_seconds(check, "start_period", image.start_period, 0.0, at),
        start_interval=_seconds(
            check, "start_interval", image.start_interval, DEFAULT_START_INTERVAL, at
        ),
        retries=_retries(check.get("retries"), image.retries, (*at, "retries")),
        shell=tuple(shell) if shell else DEFAULT_SHELL,
    )


def _service_test(value: Any, at: Path) -> tuple[str, ...]:
    if value is None or value == []:
        return ()
    if isinstance(value, str):
        return ("CMD-SHELL", value)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise StackError("healthcheck.test must be a string or a list of strings", path=at)
    test = tuple(value)
    if test[0] not in (*_PROBE_TYPES, "NONE"):
        raise StackError(
            f'healthcheck.test must start with "CMD", "CMD-SHELL" or "NONE", not "{test[0]}"',
            path=at,
            hint='write ["CMD-SHELL", "your command"] to run it through a shell',
        )
    if test[0] != "NONE" and len(test) == 1:
        raise StackError(f"healthcheck.test has no command after {test[0]}", path=at)
    return test


def _seconds(check: Mapping[str, Any], key: str, image_ns: int, default: float, at: Path) -> float:
    value = check.get(key)
    nanoseconds = 0
    if value is not None:
        try:
            nanoseconds = parse_duration(str(value))
        except ValueError as error:
            raise StackError(str(error), path=(*at, key)) from None
        if nanoseconds < 0:
            raise StackError(f"healthcheck.{key} must not be negative", path=(*at, key))
        if 0 < nanoseconds < _MIN_DURATION_NS:
            raise StackError(f"healthcheck.{key} must be at least 1ms", path=(*at, key))
    nanoseconds = nanoseconds or image_ns
    return nanoseconds / _NS_PER_SECOND if nanoseconds > 0 else default


def _retries(value: Any, image_retries: int, at: Path) -> int:
    retries = 0
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise StackError("healthcheck.retries must be a whole number", path=at)
        retries = int(value)
        if retries < 0:
            raise StackError("healthcheck.retries must not be negative", path=at)
    return retries or (image_retries if image_retries > 0 else DEFAULT_RETRIES)


# --- the state machine ---------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One probe: when it ran (seconds since the epoch), its exit code and output."""

    start: float
    end: float
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start, "end": self.end,
            "exit_code": self.exit_code, "output": self.output,
        }  # fmt: skip


def timeout_result(start: float, end: float, timeout: float) -> ProbeResult:
    """The failure recorded for a probe that did not finish in time."""
    limit = format_duration(round(timeout * _NS_PER_SECOND))
    return ProbeResult(start, end, -1, f"Health check exceeded timeout ({limit})")


def truncate_output(output: str) -> str:
    """At most MAX_OUTPUT_BYTES of UTF-8, with `...` when something was cut."""
    encoded = output.encode(errors="replace")
    if len(encoded) <= MAX_OUTPUT_BYTES:
        return output
    return encoded[:MAX_OUTPUT_BYTES].decode(errors="ignore") + "..."


@dataclass
class HealthState:
    """The health of one run of a container (a restart starts a new one)."""

    spec: HealthcheckSpec
    started_at: float  # when the container's process started, seconds since the epoch
    status: Status = "starting"
    failing_streak: int = 0
    log: tuple[ProbeResult, ...] = ()

    def record(self, result: ProbeResult) -> bool:
        """Take one probe's result into account; whether the status changed.

        A probe that timed out comes here as a failure (see `timeout_result`):
        the runner judges the deadline on trio's monotonic clock, which a step
        of the wall clock cannot fool.
        """
        result = ProbeResult(
            result.start, result.end, result.exit_code, truncate_output(result.output)
        )
        self.log = (*self.log, result)[-MAX_LOG_ENTRIES:]
        before = self.status
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = "healthy"
        elif not self._in_grace(result.start):
            self.failing_streak += 1
            if self.failing_streak >= self.spec.retries:
                self.status = "unhealthy"
        return self.status != before

    def next_delay(self, now: float) -> float:
        """Seconds from `now` (the last probe's end, or the start) to the next probe.

        A container still starting inside its start period is probed every
        start_interval, so a slow starter is found healthy soon after it is
        ready without probing a steady one that often.
        """
        if self._in_grace(now):
            return self.spec.start_interval
        return self.spec.interval

    def _in_grace(self, moment: float) -> bool:
        return self.status == "starting" and moment - self.started_at < self.spec.start_period

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "failing_streak": self.failing_streak,
            "log": [entry.to_json() for entry in self.log],
        }


# --- the loop ------------------------------------------------------------------------

ExecProbe = Callable[[Sequence[str], float], Awaitable[tuple[int, str]]]
"""Runs argv in the container with a timeout in seconds; (exit code, stdout+stderr)."""
OnChange = Callable[[HealthState], Awaitable[None]]


async def run_healthchecks(
    spec: HealthcheckSpec,
    exec_probe: ExecProbe,
    on_change: OnChange,
    started_at: float,
    *,
    state: HealthState | None = None,
    clock: Callable[[], float] = time.time,
) -> NoReturn:
    """Probe the container for as long as it runs; cancel the scope to stop.

    `on_change` hears every change of status. Pass `state` to keep a reference
    the engine can read (the probe log) between changes; `clock` is the wall
    clock that `started_at` was read from.
    """
    if state is None:
        state = HealthState(spec, started_at)
    while True:
        # Like Docker, wait first: the first probe comes one interval after the start,
        # and the next one interval after the previous one ends, never overlapping.
        await trio.sleep(state.next_delay(clock()))
        result = await _probe(spec, exec_probe, clock)
        if state.record(result):
            await on_change(state)


async def _probe(
    spec: HealthcheckSpec, exec_probe: ExecProbe, clock: Callable[[], float]
) -> ProbeResult:
    start = clock()
    with trio.move_on_after(spec.timeout) as deadline:
        try:
            exit_code, output = await exec_probe(spec.argv, spec.timeout)
        except Exception as error:
            # A probe that cannot even run (the container is going away, the command
            # is missing) is a failed check, recorded with its reason, as Docker does.
            return ProbeResult(start, clock(), -1, f"probe failed: {error}")
    if deadline.cancelled_caught:
        return timeout_result(start, clock(), spec.timeout)
    return ProbeResult(start, clock(), exit_code, output)
