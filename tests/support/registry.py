"""Real registries for tests: Debian's `docker-registry` on 127.0.0.1, plain or with auth.

Three variants, each a context manager (and a pytest fixture below):
- `run_registry(dir)`: anonymous push and pull;
- `run_registry(dir, htpasswd={user: password})`: HTTP Basic, as private registries do;
- `run_token_registry(dir, users)`: Docker Hub's bearer flow, with our own token
  service (`TokenServer`) signing RS256 JWTs that the registry verifies with the
  certificate we give it.
`ScriptedServer` is a raw HTTP server whose answers a test dictates, for what a
well-behaved registry never does (short bodies, wrong content, redirects, 503s).
Every helper stops what it started and removes its files, whatever the test did.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "stack-test-registry"
ISSUER = "stack-test-token-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RegistryServer:
    host: str  # "127.0.0.1:PORT", as written in image references
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _wait_ready(server: RegistryServer, timeout: float = 15.0) -> None:
    """Poll `/v2/` until the registry answers anything (401 counts: it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.url}/v2/", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    log = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
    raise RuntimeError(f"docker-registry on {server.host} did not start:\n{log}")


def _bcrypt_htpasswd(users: dict[str, str]) -> str:
    import bcrypt

    lines = [
        f"{name}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"
        for name, password in users.items()
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_registry(
    workdir: Path | None = None,
    *,
    htpasswd: dict[str, str] | None = None,
    token: dict[str, str] | None = None,
) -> Iterator[RegistryServer]:
    """Start `docker-registry serve CONFIG` on a free port; stop it and clean up on exit.

    `token` is the registry's `auth.token` section (realm, service, issuer,
    rootcertbundle); use `run_token_registry` rather than building it by hand.
    """
    if not Path(REGISTRY_BINARY).exists():
        raise RuntimeError(f"{REGISTRY_BINARY} is missing: apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
    port = free_port()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "stack-tests"},
    }
    if htpasswd is not None:
        (root / "htpasswd").write_text(_bcrypt_htpasswd(htpasswd))
        config["auth"] = {"htpasswd": {"realm": "stack-tests", "path": str(root / "htpasswd")}}
    if token is not None:
        config["auth"] = {"token": token}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = root / "registry.log"
    server: RegistryServer | None = None
    try:
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(root / "config.yml")],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = RegistryServer(f"127.0.0.1:{port}", root, process, log)
        _wait_ready(server)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- the bearer-token service ---------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: object) -> str:
    """The `kid` the registry derives from a trusted certificate (docker/libtrust)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class JwtSigner:
    """An RSA key, its self-signed certificate, and RS256 JWS signing: all a token needs."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_id = libtrust_key_id(self._key.public_key())

    def sign(self, claims: dict[str, object]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


@dataclass
class TokenRequest:
    user: str | None
    scopes: list[str]
    service: str | None


class TokenServer:
    """Docker's token service, minimal: users get what they ask for, anonymous gets nothing.

    `anonymous_pull` lists repositories anyone may pull. Requests are recorded
    so tests can see which scopes were asked for and how often.
    """

    def __init__(self, users: dict[str, str], anonymous_pull: set[str] | None = None) -> None:
        self.users = users
        self.anonymous_pull = anonymous_pull or set()
        self.signer = JwtSigner()
        self.requests: list[TokenRequest] = []
        self.lifetime = 300
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        scopes = query.get("scope", [])
        user: str | None = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self.requests.append(TokenRequest(name, scopes, query.get("service", [None])[0]))
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                handler.send_response(401)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return
            user = name
        self.requests.append(TokenRequest(user, scopes, query.get("service", [None])[0]))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = wanted if user else (["pull"] if name in self.anonymous_pull else [])
            granted = [a for a in wanted if a in granted]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        body = json.dumps({"token": self.signer.sign(claims), "expires_in": self.lifetime}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@contextlib.contextmanager
def run_token_registry(
    workdir: Path | None = None,
    users: dict[str, str] | None = None,
    anonymous_pull: set[str] | None = None,
) -> Iterator[RegistryServer]:
    """A registry using bearer tokens from a `TokenServer` (at `.token_server`)."""
    with TokenServer(users or {}, anonymous_pull) as tokens:
        bundle_dir = Path(tempfile.mkdtemp(prefix="token-", dir=workdir))
        try:
            bundle = bundle_dir / "cert.pem"
            bundle.write_bytes(tokens.signer.certificate_pem)
            section = {
                "realm": tokens.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
            with run_registry(workdir, token=section) as server:
                server.token_server = tokens
                yield server
        finally:
            shutil.rmtree(bundle_dir, ignore_errors=True)


# --- a server that misbehaves on request ----------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    send_only: int | None = None  # send this many body bytes, then close the connection


Handler = Callable[[Request], Reply]


class ScriptedServer:
    """HTTP/1.1 on 127.0.0.1 answering each request with `handler(request)`; keep-alive."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._closing = False

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        # A TLS hello (clients try HTTPS first) or a client hanging up is not a request.
        with contextlib.suppress(OSError, ValueError), conn:
            if conn.recv(1, socket.MSG_PEEK) == b"\x16":
                return  # a TLS handshake record: hang up, as a plain-HTTP registry would fail it
            self._serve_requests(conn)

    def _serve_requests(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line.strip():
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = self.handler(request)
                head = [f"HTTP/1.1 {reply.status} X"]
                fields = {"Content-Length": str(len(reply.body)), **reply.headers}
                head += [f"{k}: {v}" for k, v in fields.items()]
                wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                payload = reply.body if method != "HEAD" else b""
                if reply.send_only is not None:
                    conn.sendall(wire + payload[: reply.send_only])
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(wire + payload)


# --- pytest fixtures (use via `pytest_plugins` or thin wrappers in a test module) ------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with run_registry(tmp_path) as server:
        yield server


@pytest.fixture
def htpasswd_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """Users: alice / wonderland."""
    with run_registry(tmp_path, htpasswd={"alice": "wonderland"}) as server:
        yield server


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """Users: alice / wonderland; anonymous may pull `public/*` listed in the token server."""
    with run_token_registry(tmp_path, {"alice": "wonderland"}) as server:
        yield server
