"""The real `stack` CLI as a user runs it, and a stackd engine of a test's own behind it.

`cli_engine` gives a test an engine on its own socket over a state root (the
CLI starts the engine on first use, as it does for a user). Each project the
test opens with `CliEngine.project` is taken down at the end, then the engine
is stopped — even when a `down` fails or times out — and the test fails if
the engine is still there or the state root left a link or nftables table on
the host.

`engine_process` starts `stackd` directly, for tests that talk to its API or
watch what it does on start-up with no CLI in between.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.host_network import root_leftovers

# The CLI and the engine as programs, the way the `stack` and `stackd` scripts start them.
STACK_COMMAND = [sys.executable, "-m", "orchestrator.cli.main"]
ENGINE_COMMAND = [sys.executable, "-m", "orchestrator.engine.daemon"]


def engine_env(root: Path, socket: Path, pools: str | None = None) -> dict[str, str]:
    """This process's environment, pointed at the engine of `root` on `socket`; `pools`
    keeps a test file's networks apart from other tests' (STACK_ADDRESS_POOLS)."""
    env = {**os.environ, "STACK_ROOT": str(root), "STACK_SOCKET": str(socket)}
    if pools is not None:
        env["STACK_ADDRESS_POOLS"] = pools
    return env


@dataclass
class StackCli:
    """`stack` run in one project: `cli("up", "-d")` returns what the user sees.

    A command must succeed unless `check=False`. Its stdin is empty unless given, so a
    command never reads the terminal pytest runs on.
    """

    env: dict[str, str]
    cwd: Path | None = None
    options: tuple[str, ...] = ()  # before the command, as `--project-directory DIR`
    down_options: tuple[str, ...] = ()  # with the `down` that takes the project down
    timeout: float = 120

    def __call__(self, *args: str, check: bool = True, stdin: str = "",
                 cwd: Path | None = None, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*STACK_COMMAND, *self.options, *args], cwd=cwd or self.cwd,
            env={**self.env, **(env or {})}, input=stdin, capture_output=True, text=True,
            timeout=self.timeout)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def popen(self, *args: str, **popen_options: Any) -> subprocess.Popen[Any]:
        """The command left running (a watcher, a command raced against another, a
        terminal's), in this project with this environment; the caller ends it."""
        popen_options.setdefault("cwd", self.cwd)
        return subprocess.Popen([*STACK_COMMAND, *self.options, *args], env=self.env,
                                **popen_options)

    def containers(self) -> dict[str, dict[str, Any]]:
        """The project's containers by name, stopped ones too, as `ps -a` reports them."""
        listed = json.loads(self("ps", "-a", "--format", "json").stdout)
        return {container["name"]: container for container in listed}

    def take_down(self) -> None:
        """`down` at a test's end: whether it works is for the test to have checked; a
        timeout must not keep the engine from being stopped after it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self("down", *self.down_options, check=False)


@dataclass
class CliEngine:
    """One engine (state root + socket) and the projects a test runs the CLI in."""

    root: Path
    socket: Path
    pools: str | None = None
    projects: list[StackCli] = field(default_factory=list)
    before_stop: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return engine_env(self.root, self.socket, self.pools)

    def project(self, cwd: Path | None = None, *, options: tuple[str, ...] = (),
                down_options: tuple[str, ...] = ()) -> StackCli:
        """The CLI in a project (its directory as working directory, or given by
        `options`); `down` with `down_options` takes it down at the end."""
        cli = StackCli(self.env, cwd, options, down_options)
        self.projects.append(cli)
        return cli

    def run_before_stop(self, *args: str) -> None:
        """A command for the end, once every project is down and before the engine stops
        (removing an image the projects used, say); whether it works is not checked."""
        self.before_stop.append(args)

    def shut_down(self) -> None:
        cli = StackCli(self.env)
        try:
            for project in self.projects:
                project.take_down()
            for args in self.before_stop:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    cli(*args, check=False)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):  # checked just below
                cli("engine", "stop", check=False)
            assert not _kill_engine_still_holding(self.root), "the engine did not stop"


def _kill_engine_still_holding(root: Path) -> bool:
    """Whether an engine still holds `root`'s lock (it does for as long as it lives); kill
    it if so, so that a test that fails here leaves no engine behind."""
    lock = root / "stackd.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return False  # nobody holds it: no engine; our shared lock goes with the fd
    finally:
        os.close(fd)
    with contextlib.suppress(ValueError, ProcessLookupError):
        pid = int(lock.read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    return True


@contextlib.contextmanager
def cli_engine(root: Path, socket: Path, pools: str | None = None) -> Iterator[CliEngine]:
    """An engine for the CLI on `socket` over `root`, gone at the end with all it made."""
    engine = CliEngine(root, socket, pools)
    try:
        yield engine
    finally:
        engine.shut_down()
    assert root_leftovers(root) == []


@contextlib.contextmanager
def engine_process(env: dict[str, str], *, wait_for_socket: bool = True
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`stackd` started directly with `env` (see `engine_env`), ready once its socket is
    there unless `wait_for_socket=False`; terminated at the end, killed if it lingers."""
    # Its stderr goes to a file, not a pipe: nobody reads a pipe while the test runs, and a
    # full one would stop the engine.
    with tempfile.TemporaryFile() as stderr:
        daemon = subprocess.Popen(ENGINE_COMMAND, env=env, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
        try:
            socket = Path(env["STACK_SOCKET"])
            deadline = time.monotonic() + 15
            while wait_for_socket and not socket.exists():
                if daemon.poll() is not None:
                    stderr.seek(0)
                    raise AssertionError(f"stackd exited: {stderr.read().decode()}")
                assert time.monotonic() < deadline, "the engine did not make its socket"
                time.sleep(0.02)
            yield daemon
        finally:
            daemon.terminate()
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
                raise
