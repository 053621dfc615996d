"""Relative host paths become absolute exactly where compose makes them absolute.

Expected values were printed by docker compose v2.40 run in /proj.
"""

import os

from orchestrator.spec.paths import resolve_paths
from orchestrator.spec.transform import canonical
from orchestrator.spec.yamlfile import parse_yaml


def resolved(text: str, base: str = "/proj") -> dict:
    doc = parse_yaml(text, "compose.yaml")
    return resolve_paths(canonical(doc.data, doc.source), base)


def test_bind_sources_are_joined_but_volume_names_are_not(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    data = resolved("services:\n  a:\n    volumes: ['./data:/data:ro', 'named:/x', /anon,"
                    " '~/foo:/foo:z', '../up:/e', '.:/g', '/abs/../x:/h', 'a:b:c:d']\n")
    sources = [v.get("source") for v in data["services"]["a"]["volumes"]]
    assert sources == ["/proj/data", "named", None, "/home/me/foo", "/up", "/proj", "/abs/../x",
                       "/proj/a:b"]


def test_long_bind_source_is_joined():
    data = resolved("services:\n  a:\n    volumes:\n"
                    "      - {type: bind, source: ./src, target: /src}\n")
    assert data["services"]["a"]["volumes"][0]["source"] == "/proj/src"


def test_build_context_but_not_urls():
    for written, expected in [("./dir", "/proj/dir"), (".", "/proj"),
                              ("https://github.com/a/b.git", "https://github.com/a/b.git"),
                              ("git@github.com:a/b.git", "git@github.com:a/b.git"),
                              ("github.com/a/b", "github.com/a/b")]:
        data = resolved(f"services:\n  a:\n    build: '{written}'\n")
        assert data["services"]["a"]["build"]["context"] == expected


def test_additional_contexts_skip_image_references():
    data = resolved("services:\n  a:\n    build:\n      context: .\n"
                    "      additional_contexts: [foo=./bar, img=docker-image://alpine,"
                    " svc=service:b]\n")
    assert data["services"]["a"]["build"]["additional_contexts"] == {
        "foo": "/proj/bar", "img": "docker-image://alpine", "svc": "service:b"}


def test_secret_config_env_label_extends_files():
    data = resolved("services:\n  a:\n    env_file: a.env\n    label_file: l.txt\n"
                    "    extends: {file: base.yaml, service: b}\n"
                    "secrets: {s1: {file: ./s.txt}, s2: {environment: HOME}}\n"
                    "configs: {c1: {file: c.txt}}\n")
    service = data["services"]["a"]
    assert service["env_file"] == [{"path": "/proj/a.env", "required": True}]
    assert service["label_file"] == ["/proj/l.txt"]
    assert service["extends"] == {"file": "/proj/base.yaml", "service": "b"}
    assert data["secrets"] == {"s1": {"file": "/proj/s.txt"}, "s2": {"environment": "HOME"}}
    assert data["configs"] == {"c1": {"file": "/proj/c.txt"}}


def test_local_bind_volume_device_is_joined_only_for_driver_local():
    data = resolved("volumes:\n  v: {driver: local, driver_opts: {o: bind, device: ./data,"
                    " type: none}}\n  w: {driver_opts: {o: bind, device: ./data}}\n")
    assert data["volumes"]["v"]["driver_opts"]["device"] == "/proj/data"
    assert data["volumes"]["w"]["driver_opts"]["device"] == "./data"


def test_watch_path_follows_a_symlinked_directory(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    data = resolved("services:\n  a:\n    develop:\n      watch:\n"
                    "        - {path: ./link/src, action: sync}\n", str(tmp_path))
    assert data["services"]["a"]["develop"]["watch"][0]["path"] == str(tmp_path / "real/src")


def test_ssh_key_path_is_joined():
    data = resolved("services:\n  a:\n    build: {context: ., ssh: [default, k=./key]}\n")
    assert data["services"]["a"]["build"]["ssh"] == ["default", "k=/proj/key"]
