"""The four programs of the job-queue stack, one per service: `python3 jobs.py ROLE`.

queue      a job queue over TCP (port 7000), one request per line:
           PUT <n> -> "OK <id>"; TAKE <worker> -> "JOB <id> <n>" or "NONE";
           DONE <id> <worker> <result> -> "OK"; STATS -> one JSON line; PING -> "PONG".
           Jobs live in memory: a demo, not a durable queue.
producer   puts a job ("count the primes below n") every 1/JOBS_PER_SECOND seconds.
worker     takes jobs and does them; answers its own status (one JSON line) on port 7100.
dashboard  a web page on port 8081: the queue's counters, and every worker found by
           resolving the service name `worker` (one address per replica).
ping       the queue's healthcheck.

Only the standard library: the stack runs on the host's own python3.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUEUE_PORT = 7000
STATUS_PORT = 7100
DASHBOARD_PORT = 8081


# --- queue ---------------------------------------------------------------------------------


class JobQueue:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[tuple[int, int]] = []  # (id, n), oldest first
        self.ids = itertools.count(1)
        self.taken: dict[int, str] = {}  # id -> worker doing it
        self.done_by: dict[str, int] = {}  # worker -> jobs done
        self.done = 0

    def answer(self, line: str) -> str:
        verb, _, rest = line.strip().partition(" ")
        with self.lock:
            if verb == "PUT":
                job_id = next(self.ids)
                self.waiting.append((job_id, int(rest)))
                return f"OK {job_id}"
            if verb == "TAKE":
                if not self.waiting:
                    return "NONE"
                job_id, n = self.waiting.pop(0)
                self.taken[job_id] = rest
                return f"JOB {job_id} {n}"
            if verb == "DONE":
                job_id, worker, _result = rest.split(" ", 2)
                self.taken.pop(int(job_id), None)
                self.done_by[worker] = self.done_by.get(worker, 0) + 1
                self.done += 1
                return "OK"
            if verb == "STATS":
                return json.dumps({"waiting": len(self.waiting), "running": len(self.taken),
                                   "done": self.done, "done_by": self.done_by})
            if verb == "PING":
                return "PONG"
        return f"ERR unknown request {verb!r}"


def serve_queue() -> None:
    jobs = JobQueue()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write((jobs.answer(line.decode()) + "\n").encode())

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("", QUEUE_PORT), Handler) as server:
        print(f"queue listening on :{QUEUE_PORT}", flush=True)
        server.serve_forever()


class QueueClient:
    """One connection to the queue, made again whenever it breaks (the queue restarted)."""

    def __init__(self, host: str = "queue") -> None:
        self.host = host
        self.stream = None

    def ask(self, request: str) -> str:
        while True:
            try:
                if self.stream is None:
                    self.stream = socket.create_connection((self.host, QUEUE_PORT), 5).makefile(
                        "rw", encoding="utf-8", newline="\n")
                self.stream.write(request + "\n")
                self.stream.flush()
                answer = self.stream.readline()
                if answer:
                    return answer.strip()
            except OSError as error:
                print(f"queue unreachable ({error}); retrying", flush=True)
            self.stream = None
            time.sleep(1)


# --- producer and worker -------------------------------------------------------------------


def produce() -> None:
    queue = QueueClient()
    pause = 1 / float(os.environ.get("JOBS_PER_SECOND", "2"))
    while True:
        n = random.randrange(20_000, 80_000)
        print(f"put primes below {n}: {queue.ask(f'PUT {n}')}", flush=True)
        time.sleep(pause)


def count_primes(below: int) -> int:
    sieve = bytearray([1]) * below
    sieve[:2] = b"\0\0"
    for i in range(2, int(below ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, below, i)))
    return sum(sieve)


def work() -> None:
    name = socket.gethostname()
    status = {"worker": name, "done": 0, "last": ""}
    threading.Thread(target=serve_status, args=(status,), daemon=True).start()
    queue = QueueClient()
    while True:
        answer = queue.ask(f"TAKE {name}")
        if answer == "NONE":
            time.sleep(0.2)
            continue
        _, job_id, n = answer.split()
        result = count_primes(int(n))
        queue.ask(f"DONE {job_id} {name} {result}")
        status["done"] += 1
        status["last"] = f"{result} primes below {n}"
        print(f"job {job_id}: {status['last']}", flush=True)


def serve_status(status: dict) -> None:
    with socket.create_server(("", STATUS_PORT), reuse_port=True) as server:
        while True:
            connection, _ = server.accept()
            with connection:
                connection.sendall((json.dumps(status) + "\n").encode())


# --- dashboard -----------------------------------------------------------------------------


def workers() -> list[dict]:
    """Every replica of `worker`: the stack's DNS answers one address per running one."""
    try:
        found = socket.getaddrinfo("worker", STATUS_PORT, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    seen = []
    for address in sorted({info[4][0] for info in found}):
        try:
            with socket.create_connection((address, STATUS_PORT), 2) as connection:
                line = connection.makefile().readline()
            seen.append({"address": address, **json.loads(line)})
        except (OSError, ValueError):
            seen.append({"address": address, "worker": "?", "done": 0, "last": "unreachable"})
    return seen


def snapshot() -> dict:
    with socket.create_connection(("queue", QUEUE_PORT), 2) as connection:
        stream = connection.makefile("rw", encoding="utf-8", newline="\n")
        stream.write("STATS\n")
        stream.flush()
        queue = json.loads(stream.readline())
    return {"queue": queue, "workers": workers()}


def page(state: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(w['worker'])}</td><td>{w['address']}</td><td>{w['done']}</td>"
        f"<td>{html.escape(w['last'])}</td></tr>" for w in state["workers"])
    queue = state["queue"]
    return (
        "<!doctype html><meta http-equiv=refresh content=2><title>jobs</title>"
        f"<h1>Job queue</h1><p>{queue['waiting']} waiting, {queue['running']} running, "
        f"{queue['done']} done</p><table><tr><th>worker</th><th>address</th><th>done</th>"
        f"<th>last job</th></tr>{rows}</table>\n")


class Dashboard(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        try:
            state = snapshot()
        except OSError as error:
            self.reply(503, "text/plain", f"queue unreachable: {error}\n")
            return
        if self.path == "/stats.json":
            self.reply(200, "application/json", json.dumps(state))
        elif self.path == "/healthz":
            self.reply(200, "text/plain", "ok\n")
        else:
            self.reply(200, "text/html; charset=utf-8", page(state))

    def reply(self, code: int, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the healthcheck asks every few seconds: keep the logs for what matters


def serve_dashboard() -> None:
    with ThreadingHTTPServer(("", DASHBOARD_PORT), Dashboard) as server:
        print(f"dashboard on :{DASHBOARD_PORT}", flush=True)
        server.serve_forever()


def ping() -> None:
    with socket.create_connection(("127.0.0.1", QUEUE_PORT), 2) as connection:
        connection.sendall(b"PING\n")
        if connection.makefile().readline().strip() != "PONG":
            sys.exit(1)


ROLES = {"queue": serve_queue, "producer": produce, "worker": work,
         "dashboard": serve_dashboard, "ping": ping}

if __name__ == "__main__":
    # As PID 1 a process gets no default action for SIGTERM: say what `stop` should do.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ROLES[sys.argv[1]]()
