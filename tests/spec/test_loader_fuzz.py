"""No input makes the loader fail with anything but a StackError.

Hypothesis mutates real-looking stack files (characters dropped, inserted and
swapped; values replaced by other YAML values; lines shuffled) and also feeds
plain random text. Each result must be a loaded Stack or one StackError line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli.render import to_json, to_yaml
from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.errors import StackError
from orchestrator.spec.loader import load_stack
from orchestrator.spec.model import Stack

SEED = """\
name: fuzz
x-common: &common
  restart: unless-stopped
  environment:
    - A=${A:-1}
    - B
services:
  web:
    <<: *common
    image: nginx:${TAG-latest}
    ports: ["8080:80", "127.0.0.1::53/udp", "9000-9001:9000-9001"]
    volumes: ["./data:/data:ro", "cache:/cache", "/tmp"]
    depends_on:
      db: {condition: service_healthy}
    networks: {front: {aliases: [www]}, back: null}
    command: echo "hello $$USER"
    healthcheck: {test: curl -f http://localhost, interval: 1m30s, retries: 3}
    deploy: {replicas: 1, resources: {limits: {memory: 512m, cpus: "0.5"}}}
  db:
    image: postgres
    env_file: [{path: db.env, required: false}]
    secrets: [pw]
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
    extends: {service: base}
  base:
    image: busybox
  tools:
    image: busybox
    profiles: [debug]
networks: {front: {}, back: {internal: true}}
volumes: {cache: {}}
secrets: {pw: {file: ./pw.txt}}
"""

YAML_VALUES = st.sampled_from(
    ["~", "null", "[]", "{}", "0", "-1", "1.5", "true", "yes", "'x'", '"${X:?boom}"', "$", "${",
     "[1, [2]]", "{a: {b: c}}", "!reset []", "!override {}", "*common", "&a x", "'''", "\t", "|"]
)


def load_text(text: str, interpolate: bool = True) -> Stack | StackError:
    """Load `text` and print it as `stack config` would, or return the one-line error."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "compose.yaml"
        path.write_text(text, encoding="utf-8")
        options = ProjectOptions(files=[str(path)], cwd=directory, environ={},
                                 interpolate=interpolate)
        try:
            stack = load_stack(options)
        except StackError as error:
            assert len(str(error).splitlines()) == 1, str(error)
            return error
        stack.unimplemented_keys()
        to_yaml(stack.model)
        to_json(stack.model)
        return stack


def test_seed_file_loads() -> None:
    assert isinstance(load_text(SEED), Stack)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = SEED.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        action = draw(st.sampled_from(["drop_char", "insert", "value", "swap", "delete", "indent"]))
        if action == "drop_char" and line:
            at = draw(st.integers(0, len(line) - 1))
            lines[index] = line[:at] + line[at + 1:]
        elif action == "insert":
            at = draw(st.integers(0, len(line)))
            lines[index] = line[:at] + draw(st.text(max_size=3)) + line[at:]
        elif action == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[index] = f"{key}: {draw(YAML_VALUES)}"
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif action == "delete":
            del lines[index]
            if not lines:
                lines = [""]
        elif action == "indent":
            lines[index] = draw(st.sampled_from(["", " ", "    ", "\t"])) + line.lstrip()
    return "\n".join(lines) + "\n"


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated())
def test_mutated_stack_files_load_or_fail_with_one_stack_error(text: str) -> None:
    load_text(text)


@FUZZ
@given(mutated())
def test_mutated_stack_files_load_as_written_or_fail_with_one_stack_error(text: str) -> None:
    load_text(text, interpolate=False)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_loads_or_fails_with_one_stack_error(text: str) -> None:
    load_text(text)
