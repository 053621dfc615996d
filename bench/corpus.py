"""Compare `stack config --format json` with Docker Compose v2 over a corpus of real files.

Usage:
    python bench/corpus.py CORPUS_DIR [--stack CMD] [-v] [-j JOBS] [--only TEXT]

The corpus is kept outside this repository (it is third-party content). It is a directory
of cases, either directly in CORPUS_DIR or in CORPUS_DIR/cases/. One case is one directory:

    <case>/
        meta.json            {"repo": "owner/name", "path": "dir/compose.yaml",
                              "files": ["compose.yaml", ".env", ...],
                              "kind": "real" | "fixture" | "testdata",   (optional)
                              "workdir": "sub/dir",                      (optional, default ".")
                              "args": ["-f", "other.yml"]}               (optional)
        <the compose file(s), with their original names>
        <what they reference, at the same relative paths as in their repository:
         .env, env_file targets, extends/include targets; build contexts as empty dirs>
        expected.json        stdout of `docker compose -p corpus [args] config --format json`
        expected.meta.json   {"exit_code": int, "stderr": str, "case_dir": str}

How to build one:
  1. Pick well-known public repositories that ship compose files (official example
     collections, self-hosting projects, compose test fixtures). For each compose file,
     create a case directory named `<owner>_<repo>__<path-slug>` and copy the file into it,
     plus every file it needs from the same repository at the same relative path. If a
     reference leads outside the compose file's directory, root the case higher up and set
     "workdir" to where the compose file sits. Prefer `-f` in "args" when the file does not
     have one of the default names; a file that only works on top of its directory's main
     file can be a case with args ["-f", "<main>", "-f", "<file>"].
  2. Run Docker Compose in each case's workdir with a clean environment, e.g.
         env -i PATH=/usr/bin:/bin HOME=$HOME docker compose -p corpus [args] \\
             config --format json
     and store stdout, exit code and stderr as above, together with the absolute case
     directory at that time ("case_dir"), so that absolute paths in the expected output can
     be rebased if the corpus is moved.
  3. Mark deliberately odd inputs (loader test data) with "kind": "testdata" so that their
     numbers can be read separately.

This script runs `stack -p corpus [args] config --format json` in every case with the same
clean environment and a timeout, and compares: accept/reject agreement; and for cases both
accept, per service: image, environment, published ports ({host_ip, published, target,
protocol}), network keys, depends_on (keys + condition), volume targets; and full JSON
equality. Our CLI failing, crashing or hanging is counted, never raised.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROJECT = "corpus"
FIELDS = ("services", "image", "environment", "ports", "networks", "depends_on", "volumes")
MAX_DIFFS = 5


# ---------------------------------------------------------------------------- cases


def find_cases(corpus_dir: str) -> list[str]:
    """Case directories (those holding meta.json and expected.meta.json), sorted by name."""
    root = os.path.join(corpus_dir, "cases")
    if not os.path.isdir(root):
        root = corpus_dir
    if not os.path.isdir(root):
        return []
    cases = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isfile(os.path.join(path, "meta.json")) and os.path.isfile(
            os.path.join(path, "expected.meta.json")
        ):
            cases.append(os.path.abspath(path))
    return cases


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def rebase(value: Any, old: str, new: str) -> Any:
    """Replace the case directory recorded at generation time by the current one."""
    if not old or old == new:
        return value
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if isinstance(value, dict):
        return {rebase(k, old, new): rebase(v, old, new) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- running


def stack_command(spec: str | None) -> tuple[list[str], dict[str, str]]:
    """The argv prefix for our CLI and extra environment it needs.

    The case runs with a cleared PATH, so the executable is resolved here, in the caller's
    environment. Without --stack, prefer the console script installed next to the running
    interpreter (a version-manager shim would be slow and PATH-dependent), then `stack` on
    PATH, then the module run from this checkout.
    """
    if spec:
        argv = shlex.split(spec)
        found = shutil.which(argv[0])
        return ([found] if found else argv[:1]) + argv[1:], {}
    sibling = os.path.join(os.path.dirname(sys.executable), "stack")
    if os.access(sibling, os.X_OK):
        return [sibling], {}
    found = shutil.which("stack")
    if found:
        return [found], {}
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, "-m", "orchestrator.cli.main"], {"PYTHONPATH": checkout}


def run_stack(
    case: str, meta: dict, prefix: list[str], extra_env: dict[str, str], timeout: float
) -> dict:
    """Run our CLI in one case; never raises."""
    cwd = os.path.normpath(os.path.join(case, meta.get("workdir") or "."))
    argv = prefix + ["-p", PROJECT, *meta.get("args", []), "config", "--format", "json"]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.path.expanduser("~"), **extra_env}
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "stdout": "", "stderr": f"timed out after {timeout} s"}
    except OSError as exc:
        return {"status": "error", "stdout": "", "stderr": f"cannot run {argv[0]}: {exc}"}
    status = "ok" if proc.returncode == 0 else "reject"
    if "Traceback (most recent call last)" in proc.stderr:
        status = "crash"
    return {"status": status, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


# ---------------------------------------------------------------------------- comparing


def service_view(svc: Any, field: str) -> Any:
    """The part of one service a field compares, in a form where == means agreement."""
    if not isinstance(svc, dict):
        return svc
    if field == "image":
        return svc.get("image")
    if field == "environment":
        return svc.get("environment") or {}
    if field == "ports":
        keys = ("host_ip", "published", "target", "protocol")
        return [
            {k: p.get(k) for k in keys} if isinstance(p, dict) else p
            for p in svc.get("ports") or []
        ]
    if field == "networks":
        return sorted(svc.get("networks") or {})
    if field == "depends_on":
        deps = svc.get("depends_on") or {}
        return {k: (v.get("condition") if isinstance(v, dict) else v) for k, v in deps.items()}
    if field == "volumes":
        return [v.get("target") if isinstance(v, dict) else v for v in svc.get("volumes") or []]
    raise ValueError(field)


def compare_fields(expected: dict, ours: dict) -> dict[str, list[str]]:
    """Per field, the differences between two accepted outputs (empty list = agreement)."""
    exp_svcs = expected.get("services") or {}
    our_svcs = ours.get("services") if isinstance(ours.get("services"), dict) else {}
    diffs: dict[str, list[str]] = {f: [] for f in FIELDS}
    missing = sorted(set(exp_svcs) - set(our_svcs))
    extra = sorted(set(our_svcs) - set(exp_svcs))
    if missing or extra:
        diffs["services"].append(f"services: missing {missing}, unexpected {extra}")
    for name in sorted(set(exp_svcs) | set(our_svcs)):
        for field in FIELDS[1:]:
            want = service_view(exp_svcs.get(name, {}), field)
            got = service_view(our_svcs.get(name, {}), field)
            if want != got:
                diffs[field].append(
                    f"services.{name}.{field}: compose {short(want)} / stack {short(got)}"
                )
    return diffs


def json_diffs(want: Any, got: Any, path: str = "", out: list[str] | None = None) -> list[str]:
    """The first few paths where two JSON values differ."""
    out = [] if out is None else out
    if len(out) >= MAX_DIFFS:
        return out
    if isinstance(want, dict) and isinstance(got, dict):
        for key in list(want) + [k for k in got if k not in want]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{sub}: missing (compose {short(want[key])})")
            elif key not in want:
                out.append(f"{sub}: unexpected (stack {short(got[key])})")
            else:
                json_diffs(want[key], got[key], sub, out)
            if len(out) >= MAX_DIFFS:
                break
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            json_diffs(w, g, f"{path}[{i}]", out)
    elif want != got or type(want) is not type(got):
        out.append(f"{path or '<root>'}: compose {short(want)} / stack {short(got)}")
    return out


def short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def check_case(case: str, prefix: list[str], extra_env: dict[str, str], timeout: float) -> dict:
    """Run and compare one case; the result is a flat dict of outcomes and difference notes."""
    meta = read_json(os.path.join(case, "meta.json"))
    exp_meta = read_json(os.path.join(case, "expected.meta.json"))
    result: dict[str, Any] = {"case": os.path.basename(case), "kind": meta.get("kind", "real")}
    result["compose_ok"] = exp_meta.get("exit_code") == 0
    ran = run_stack(case, meta, prefix, extra_env, timeout)
    result["stack_status"] = ran["status"]
    result["stack_ok"] = ran["status"] == "ok"
    result["notes"] = []
    if result["compose_ok"] != result["stack_ok"]:
        result["notes"] = [
            f"compose {'accepts' if result['compose_ok'] else 'rejects'}: "
            f"{last_line(exp_meta.get('stderr', '')) or '-'}",
            f"stack {ran['status']}: {last_line(ran['stderr']) or '-'}",
        ]
        return result
    if not result["compose_ok"]:
        return result
    try:
        with open(os.path.join(case, "expected.json"), encoding="utf-8") as fh:
            expected = json.load(fh)
        expected = rebase(expected, exp_meta.get("case_dir", ""), case)
    except ValueError as exc:
        result["notes"] = [f"unreadable expected.json: {exc}"]
        result["compose_ok"] = result["stack_ok"] = None  # not comparable
        return result
    try:
        ours = json.loads(ran["stdout"])
        if not isinstance(ours, dict):
            raise ValueError("top level is not an object")
    except ValueError as exc:
        result["stack_status"] = "bad-json"
        result["notes"] = [f"stack printed invalid JSON: {exc}"]
        return result
    diffs = compare_fields(expected, ours)
    for field, notes in diffs.items():
        result[field] = not notes
        result["notes"] += notes[:2]
    result["full"] = expected == ours
    if not result["full"]:
        result["notes"] += ["full: " + d for d in json_diffs(expected, ours)]
    result["notes"] = result["notes"][: MAX_DIFFS * 2]
    return result


# ---------------------------------------------------------------------------- reporting


def pct(n: int, d: int) -> str:
    return f"{n}/{d} {100.0 * n / d:5.1f}%" if d else "-"


def summary(results: list[dict]) -> str:
    kinds = sorted({r["kind"] for r in results})
    columns = [("all", results)] + [(k, [r for r in results if r["kind"] == k]) for k in kinds]

    def row(label: str, fn) -> str:
        return f"{label:<34}" + "".join(f"{fn(rs):>20}" for _, rs in columns)

    def count(pred):
        return lambda rs: str(sum(1 for r in rs if pred(r)))

    def both(rs):
        return [r for r in rs if r["compose_ok"] and r["stack_ok"]]

    def agree(rs):
        valid = [r for r in rs if r["compose_ok"] is not None]
        return pct(sum(1 for r in valid if r["compose_ok"] == r["stack_ok"]), len(valid))

    lines = [
        f"{'':<34}" + "".join(f"{name:>20}" for name, _ in columns),
        row("cases", lambda rs: str(len(rs))),
        row("compose accepts", count(lambda r: r["compose_ok"])),
        row("compose rejects", count(lambda r: r["compose_ok"] is False)),
        row("accept/reject agreement", agree),
        row("  both accept", count(lambda r: r["compose_ok"] and r["stack_ok"])),
        row("  both reject", count(lambda r: r["compose_ok"] is False and not r["stack_ok"])),
        row(
            "  compose accepts, stack rejects",
            count(lambda r: r["compose_ok"] and not r["stack_ok"]),
        ),
        row(
            "  compose rejects, stack accepts",
            count(lambda r: r["compose_ok"] is False and r["stack_ok"]),
        ),
        row("  stack crashed (traceback)", count(lambda r: r["stack_status"] == "crash")),
        row("  stack timed out", count(lambda r: r["stack_status"] == "timeout")),
        row("  stack could not be run", count(lambda r: r["stack_status"] == "error")),
        row("  stack printed invalid JSON", count(lambda r: r["stack_status"] == "bad-json")),
        "when both accept, agreement on:",
    ]
    for field in FIELDS + ("full",):
        label = "  full JSON equal" if field == "full" else f"  {field}"
        lines.append(
            row(label, lambda rs, f=field: pct(sum(1 for r in both(rs) if r.get(f)), len(both(rs))))
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("corpus_dir")
    parser.add_argument("--stack", help="command line of our CLI (default: stack)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the first differences of every disagreeing case",
    )
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--only", help="only cases whose name contains this text")
    parser.add_argument("--json", metavar="FILE", help="write per-case results to FILE")
    args = parser.parse_args(argv)

    cases = find_cases(args.corpus_dir)
    if args.only:
        cases = [c for c in cases if args.only in os.path.basename(c)]
    if not cases:
        print(f"no cases found in {args.corpus_dir}", file=sys.stderr)
        return 2
    prefix, extra_env = stack_command(args.stack)

    def safe_check(case: str) -> dict:
        try:
            return check_case(case, prefix, extra_env, args.timeout)
        except Exception as exc:  # a broken case must not stop the run
            return {
                "case": os.path.basename(case),
                "kind": "broken-case",
                "compose_ok": None,
                "stack_ok": None,
                "stack_status": "n/a",
                "notes": [repr(exc)],
            }

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(safe_check, cases))

    if args.verbose:
        for r in results:
            if r["notes"]:
                print(f"--- {r['case']} [{r['kind']}]")
                for note in r["notes"]:
                    print(f"    {note}")
        print()
    print(summary(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
