"""The three programs of the notes stack, one per service: `python3 notes.py ROLE`.

migrate  brings the SQLite database in /data to the current schema and seeds it when
         empty, then exits: safe to run at every `up`, as compose runs it again.
api      a JSON API on port 8000 over that database: GET /notes, POST /notes
         ({"text": ...}), GET /health. Reachable only on the stack's backend network.
web      the page on port 8082: lists the notes, and passes /api/... to the API,
         which it finds by its service name `api`.

Only the standard library: the stack runs on the host's own python3.
"""

from __future__ import annotations

import html
import json
import os
import signal
import sqlite3
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATABASE = "/data/notes.db"
API = os.environ.get("API_URL", "http://api:8000")
SCHEMA_VERSION = 2
MIGRATIONS = {
    1: "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL,"
       " created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    2: "CREATE INDEX notes_by_created ON notes (created)",
}
SEED = ("Buy milk", "Water the plants", "Read the compose specification")


# --- migrate -------------------------------------------------------------------------------


def migrate() -> None:
    with sqlite3.connect(DATABASE) as db:
        current = db.execute("PRAGMA user_version").fetchone()[0]
        for version in range(current + 1, SCHEMA_VERSION + 1):
            db.execute(MIGRATIONS[version])
            db.execute(f"PRAGMA user_version = {version}")
            print(f"applied migration {version}", flush=True)
        if db.execute("SELECT count(*) FROM notes").fetchone()[0] == 0:
            db.executemany("INSERT INTO notes (text) VALUES (?)", [(t,) for t in SEED])
            print(f"seeded {len(SEED)} notes", flush=True)
        count = db.execute("SELECT count(*) FROM notes").fetchone()[0]
    print(f"database at schema {SCHEMA_VERSION}, {count} notes", flush=True)


# --- api and web ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def reply(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, code: int, value: object) -> None:
        self.reply(code, "application/json", json.dumps(value).encode())

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: object) -> None:
        if "/health" not in self.path:  # the healthcheck asks every few seconds
            super().log_message(format, *args)


class Api(Handler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self.path == "/health":
            with sqlite3.connect(DATABASE) as db:
                db.execute("SELECT 1 FROM notes LIMIT 1")
            self.reply_json(200, {"status": "ok"})
        elif self.path == "/notes":
            with sqlite3.connect(DATABASE) as db:
                rows = db.execute("SELECT id, text, created FROM notes ORDER BY id").fetchall()
            self.reply_json(200, [{"id": i, "text": t, "created": c} for i, t, c in rows])
        else:
            self.reply_json(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/notes":
            self.reply_json(404, {"error": f"no such path {self.path}"})
            return
        try:
            text = str(json.loads(self.body())["text"]).strip()
        except (ValueError, KeyError, TypeError):
            self.reply_json(400, {"error": 'expected {"text": "..."}'})
            return
        with sqlite3.connect(DATABASE) as db:
            note_id = db.execute("INSERT INTO notes (text) VALUES (?)", (text,)).lastrowid
        self.reply_json(201, {"id": note_id, "text": text})


class Web(Handler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/api/"):
            self.forward("GET")
            return
        try:
            with urllib.request.urlopen(f"{API}/notes", timeout=5) as answer:
                notes = json.load(answer)
        except OSError as error:
            self.reply(502, "text/plain", f"the API did not answer: {error}\n".encode())
            return
        items = "".join(f"<li>{html.escape(n['text'])}</li>" for n in notes)
        page = ("<!doctype html><title>notes</title><h1>Notes</h1>"
                f"<ul>{items}</ul><p>{len(notes)} notes, served by the api service</p>\n")
        self.reply(200, "text/html; charset=utf-8", page.encode())

    def do_POST(self) -> None:  # noqa: N802
        self.forward("POST")

    def forward(self, method: str) -> None:
        """/api/<path> -> the API's /<path>, with the answer passed back as it is."""
        request = urllib.request.Request(
            API + self.path.removeprefix("/api"), method=method,
            data=self.body() if method == "POST" else None,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                self.reply(answer.status, answer.headers["Content-Type"], answer.read())
        except urllib.error.HTTPError as error:
            self.reply(error.code, error.headers["Content-Type"], error.read())
        except OSError as error:
            self.reply(502, "text/plain", f"the API did not answer: {error}\n".encode())


def serve(handler: type[Handler], port: int) -> None:
    with ThreadingHTTPServer(("", port), handler) as server:
        print(f"{sys.argv[1]} listening on :{port}", flush=True)
        server.serve_forever()


ROLES = {"migrate": migrate, "api": lambda: serve(Api, 8000), "web": lambda: serve(Web, 8082)}

if __name__ == "__main__":
    # As PID 1 a process gets no default action for SIGTERM: say what `stop` should do.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ROLES[sys.argv[1]]()
