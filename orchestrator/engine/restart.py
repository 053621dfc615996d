"""Restart policies: whether, and how soon, a container that stopped runs again.

Pure: the engine says how the container ended and when it had started; this
answers. The rules are Docker's, as Docker Compose sets them up:

- `restart:` is `no` (the default), `always`, `unless-stopped`, `on-failure` or
  `on-failure:N` (at most N restarts; 0 or none means no limit);
- `deploy.restart_policy` (condition `none`, `on-failure` or `any`, the
  default; `max_attempts`) wins over `restart:` when both are set, as in
  Docker Compose, which reads `restart:` first and then lets the deploy
  section replace it;
- a restart waits 100 ms, doubled after every quick exit up to one minute; a
  container that ran 10 s before it stopped starts over at 100 ms;
- a container the user stopped is not restarted, whatever its policy. When
  the engine itself starts again, `always` brings back every container,
  including those the user stopped (Docker's documented difference from
  `unless-stopped`), `unless-stopped` those the user did not stop, and
  `on-failure` those that failed (a user's stop is not a failure, whatever
  exit code the signal left).

Beyond Docker, which leaves them to Swarm: `deploy.restart_policy.delay` is a
fixed wait that replaces the backoff, and a container that ran for
`deploy.restart_policy.window` counts as a successful restart, so
`max_attempts` counts again from zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.spec.errors import Path, StackError
from orchestrator.spec.units import parse_duration

Mode = Literal["no", "always", "on-failure", "unless-stopped"]

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
# A run this long means the container did start properly, so its next crash
# is not part of a crash loop and waits the shortest time again.
STEADY_RUN = 10.0

_MODES: tuple[Mode, ...] = ("no", "always", "on-failure", "unless-stopped")
# deploy.restart_policy speaks Swarm's words; Docker Compose maps them to the
# engine's and passes the engine's own through.
_CONDITIONS: dict[str, Mode] = {
    "none": "no", "no": "no",
    "any": "always", "always": "always",
    "on-failure": "on-failure",
    "unless-stopped": "unless-stopped",
}  # fmt: skip
_NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True)
class RestartPolicy:
    mode: Mode = "no"
    max_attempts: int = 0  # 0: no limit
    delay: float | None = None  # seconds; None: Docker's backoff
    window: float | None = None  # seconds; None: every restart counts toward max_attempts

    @classmethod
    def parse(cls, service: Mapping[str, Any], *, service_name: str | None = None) -> RestartPolicy:
        """The policy of a service of the normalized model."""
        at: Path = ("services", service_name) if service_name else ()
        deploy_policy = (service.get("deploy") or {}).get("restart_policy")
        if deploy_policy is not None:
            return _from_deploy(deploy_policy, (*at, "deploy", "restart_policy"))
        return _from_restart(service.get("restart"), (*at, "restart"))

    def __str__(self) -> str:
        if self.mode == "on-failure" and self.max_attempts:
            return f"on-failure:{self.max_attempts}"
        if self.max_attempts:
            return f"{self.mode} (at most {self.max_attempts} restarts)"
        return self.mode


def _from_restart(value: Any, at: Path) -> RestartPolicy:
    if value is None or value == "":
        return RestartPolicy()
    if not isinstance(value, str):
        raise StackError("restart must be a string", path=at)
    mode, has_count, count = value.partition(":")
    if mode not in _MODES:
        raise StackError(
            f'unknown restart policy "{value}"',
            path=at,
            hint="use no, always, on-failure, on-failure:N or unless-stopped",
        )
    if not has_count:
        return RestartPolicy(mode)
    if mode != "on-failure":
        raise StackError(f'restart "{value}": only on-failure takes a maximum retry count', path=at)
    if not count.lstrip("-").isdigit():
        raise StackError(f'restart "{value}": the retry count must be a whole number', path=at)
    if int(count) < 0:
        raise StackError(f'restart "{value}": the retry count must not be negative', path=at)
    return RestartPolicy("on-failure", int(count))


def _from_deploy(policy: Any, at: Path) -> RestartPolicy:
    if not isinstance(policy, Mapping):
        raise StackError("deploy.restart_policy must be a mapping", path=at)
    # The compose specification makes `any` the default condition; Docker Compose
    # hands the engine an empty one, which then never restarts. The specification wins.
    condition = policy.get("condition") or "any"
    mode = _CONDITIONS.get(condition)
    if mode is None:
        raise StackError(
            f'unknown restart condition "{condition}"',
            path=(*at, "condition"),
            hint="use none, on-failure or any",
        )
    attempts = policy.get("max_attempts") or 0
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise StackError(
            "deploy.restart_policy.max_attempts must be a whole number, 0 or more",
            path=(*at, "max_attempts"),
        )
    return RestartPolicy(
        mode,
        attempts,
        _duration(policy.get("delay"), (*at, "delay")),
        _duration(policy.get("window"), (*at, "window")),
    )


def _duration(value: Any, at: Path) -> float | None:
    if value is None:
        return None
    try:
        nanoseconds = parse_duration(str(value))
    except ValueError as error:
        raise StackError(str(error), path=at) from None
    if nanoseconds < 0:
        raise StackError(f"{at[-1]} must not be negative", path=at)
    return nanoseconds / _NS_PER_SECOND


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay: float  # seconds to wait before starting it again; 0 when not restarting
    reason: str
    # What to record as the container's restart count from now on: one more when it
    # restarts, counted from zero again after a run that outlasted the window.
    restart_count: int


def next_backoff(previous_delay: float, ran: float) -> float:
    """Docker's wait before a restart: 100 ms, doubled each time, one minute at most."""
    if ran >= STEADY_RUN or previous_delay <= 0:
        return FIRST_DELAY
    return min(previous_delay * 2, MAX_DELAY)


def decide(
    policy: RestartPolicy,
    exit_code: int,
    restart_count: int,
    stopped_by_user: bool,
    now: float,
    last_start: float | None,
    *,
    previous_delay: float = 0.0,
) -> RestartDecision:
    """What to do about a container that just stopped while the engine watched.

    `restart_count` is how often the policy restarted it since it was last
    started by hand (an explicit start or up resets it to 0); `last_start` is
    when its process started, on the same clock as `now`; `previous_delay` is
    the delay of the last decision for it, from which the backoff grows.
    """
    ran = max(0.0, now - last_start) if last_start is not None else 0.0
    if policy.window is not None and ran >= policy.window:
        restart_count = 0
    if policy.mode == "no":
        return RestartDecision(False, 0.0, 'restart policy is "no"', restart_count)
    if stopped_by_user:
        return RestartDecision(False, 0.0, "stopped by the user", restart_count)
    if policy.mode == "on-failure" and exit_code == 0:
        return RestartDecision(
            False, 0.0, "exited with code 0; on-failure restarts only after a failure",
            restart_count,
        )  # fmt: skip
    if policy.max_attempts and restart_count >= policy.max_attempts:
        return RestartDecision(
            False, 0.0,
            f"exited with code {exit_code}; gave up after {restart_count} restarts ({policy})",
            restart_count,
        )  # fmt: skip
    delay = policy.delay if policy.delay is not None else next_backoff(previous_delay, ran)
    attempt = restart_count + 1
    count = f" {attempt} of {policy.max_attempts}" if policy.max_attempts else ""
    return RestartDecision(
        True, delay,
        f"exited with code {exit_code}; restart{count} in {delay:g}s ({policy})",
        attempt,
    )  # fmt: skip


def decide_on_engine_start(
    policy: RestartPolicy, exit_code: int, restart_count: int, stopped_by_user: bool
) -> RestartDecision:
    """What to do about a container found stopped when the engine starts.

    It stopped while no engine watched (or it was stopped by the user before):
    like the Docker daemon at boot, restart at once what the policy wants
    running. Docker starts such a container afresh, so its count goes back to 0
    (and the caller clears its stopped-by-the-user mark when it starts it).
    """
    if policy.mode == "no":
        return RestartDecision(False, 0.0, 'restart policy is "no"', restart_count)
    if policy.mode == "always":
        return RestartDecision(True, 0.0, "engine started; restart policy always", 0)
    if stopped_by_user:
        return RestartDecision(False, 0.0, "stopped by the user", restart_count)
    if policy.mode == "on-failure":
        if exit_code == 0:
            return RestartDecision(
                False, 0.0, "exited with code 0; on-failure restarts only after a failure",
                restart_count,
            )  # fmt: skip
        if policy.max_attempts and restart_count >= policy.max_attempts:
            return RestartDecision(
                False, 0.0, f"gave up after {restart_count} restarts ({policy})", restart_count
            )
    return RestartDecision(True, 0.0, f"engine started; restart policy {policy}", 0)
