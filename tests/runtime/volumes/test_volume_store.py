"""The named-volume store and who uses which volume, as the CLI and the runtime see them."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from orchestrator.runtime.volumes import ANONYMOUS_LABEL, VolumeStore, volumes_in_use
from orchestrator.spec.errors import StackError


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(tmp_path / "volumes")


def use_volumes(state_root: Path, container: str, *sources: Path, name: str | None = None) -> None:
    """Record a container the way the runtime does: its launch spec in config.json."""
    folder = state_root / "containers" / container
    folder.mkdir(parents=True)
    config = {
        "id": container,
        "name": name or container,
        "spec": {
            "mounts": [{"target": f"/m{i}", "kind": "bind", "source": str(source)}
                       for i, source in enumerate(sources)],
        },
    }
    (folder / "config.json").write_text(json.dumps(config))


def test_created_volume_has_an_empty_root_owned_data_folder_and_docker_shaped_record(
    store: VolumeStore,
) -> None:
    volume = store.create("data", labels={"com.docker.compose.project": "shop"})
    data = store.path("data")
    assert data == store.root / "data" / "_data"
    info = data.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, list(data.iterdir())) == (0o755, 0, [])
    shown = store.get("data").to_json()
    assert list(shown) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                           "Scope"]
    assert shown["Name"] == "data" and shown["Driver"] == "local" and shown["Scope"] == "local"
    assert shown["Mountpoint"] == str(data)
    assert shown["Labels"] == {"com.docker.compose.project": "shop"}
    assert shown["CreatedAt"].endswith("Z") and shown["CreatedAt"] == volume.created_at
    on_disk = json.loads((store.root / "data" / "volume.json").read_text())
    assert on_disk["Mountpoint"] == str(data) and on_disk["Options"] == {}


def test_creating_an_existing_volume_returns_it_with_its_data(store: VolumeStore) -> None:
    first = store.create("data", labels={"a": "1"})
    (store.path("data") / "kept").write_text("x")
    again = store.create("data", labels={"b": "2"})
    assert again == first
    assert (store.path("data") / "kept").read_text() == "x"
    assert [v.name for v in store.list()] == ["data"]


def test_concurrent_creates_of_one_name_make_one_volume(store: VolumeStore) -> None:
    made = []
    threads = [threading.Thread(target=lambda: made.append(store.create("shared")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({volume.created_at for volume in made}) == 1
    assert sorted(os.listdir(store.root)) == [".lock", "shared"]


@pytest.mark.parametrize("name", ["a", "-data", ".hidden", "has space", "../escape", "x/y", ""])
def test_invalid_volume_names_are_refused(store: VolumeStore, name: str) -> None:
    with pytest.raises(StackError, match="invalid volume name"):
        store.create(name)
    assert not any(store.root.iterdir()) or os.listdir(store.root) == [".lock"]


def test_only_the_local_driver_exists(store: VolumeStore) -> None:
    with pytest.raises(StackError, match="volume driver nfs is not supported"):
        store.create("data", driver="nfs")


def test_bind_style_volume_gives_containers_its_device(store: VolumeStore, tmp_path: Path) -> None:
    device = tmp_path / "host-folder"
    device.mkdir()
    (device / "file").write_text("host data")
    options = {"type": "none", "o": "bind", "device": str(device)}
    volume = store.create("hostdata", driver_opts=options)
    assert store.path("hostdata") == device
    assert volume.to_json()["Options"] == options
    store.remove("hostdata")
    assert (device / "file").read_text() == "host data"


@pytest.mark.parametrize("options, complaint", [
    ({"type": "nfs", "o": "addr=10.0.0.1", "device": ":/export"}, "type=nfs"),
    ({"type": "none", "o": "bind", "device": "relative/dir"}, "absolute path"),
    ({"type": "none", "o": "bind,ro", "device": "/srv"}, "o=bind,ro"),
    ({"size": "10m"}, "'size'"),
])
def test_driver_options_other_than_a_bind_are_refused(
    store: VolumeStore, options: dict[str, str], complaint: str
) -> None:
    with pytest.raises(StackError, match="is not supported|must be an absolute") as raised:
        store.create("data", driver_opts=options)
    assert complaint in str(raised.value)
    assert store.list() == []


def test_missing_volume_is_named_in_the_error(store: VolumeStore) -> None:
    with pytest.raises(StackError, match="^no such volume: ghost$"):
        store.get("ghost")
    with pytest.raises(StackError, match="no such volume: ghost"):
        store.remove("ghost")
    store.remove("ghost", force=True)


def test_removed_volume_takes_its_data_with_it(store: VolumeStore) -> None:
    store.create("data")
    (store.path("data") / "sub").mkdir()
    (store.path("data") / "sub" / "file").write_text("x")
    store.remove("data")
    assert store.list() == []
    assert sorted(os.listdir(store.root)) == [".lock"]


def test_volume_a_container_uses_cannot_be_removed_even_forced(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = VolumeStore(root / "volumes", in_use=lambda n: volumes_in_use(root).get(n, []))
    store.create("db")
    use_volumes(root, "c1", store.path("db"), name="shop-db-1")
    use_volumes(root, "c2", store.path("db"), name="shop-backup-1")
    with pytest.raises(StackError) as raised:
        store.remove("db", force=True)
    assert str(raised.value).startswith(
        "remove db: volume is in use - [shop-backup-1, shop-db-1]")
    assert store.get("db").name == "db"


def test_in_use_reads_container_configs_and_tolerates_broken_ones(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = VolumeStore(root / "volumes")
    store.create("db")
    store.create("cache")
    device = tmp_path / "host"
    device.mkdir()
    store.create("hostdata", driver_opts={"type": "none", "o": "bind", "device": str(device)})
    use_volumes(root, "a", store.path("db"), tmp_path / "unrelated", name="web-1")
    use_volumes(root, "b", store.path("db"), device, name="worker-1")
    (root / "containers" / "garbled").mkdir()
    (root / "containers" / "garbled" / "config.json").write_text("{not json")
    (root / "containers" / "half-created").mkdir()
    (root / "containers" / "odd").mkdir()
    odd = '{"spec": {"mounts": [42, {"source": 7}]}}'
    (root / "containers" / "odd" / "config.json").write_text(odd)
    assert volumes_in_use(root) == {"db": ["web-1", "worker-1"], "hostdata": ["worker-1"]}


def test_in_use_with_no_containers_is_empty(tmp_path: Path) -> None:
    assert volumes_in_use(tmp_path / "nothing-here") == {}


def test_prune_takes_only_unused_anonymous_volumes_unless_all(tmp_path: Path) -> None:
    root = tmp_path / "state"
    store = VolumeStore(root / "volumes", in_use=lambda n: volumes_in_use(root).get(n, []))
    store.create("named")
    anonymous = store.create().name
    used = store.create(anonymous=True, name="used-anon")
    assert used.labels == {ANONYMOUS_LABEL: ""}
    use_volumes(root, "c1", store.path("used-anon"))
    (store.path(anonymous) / "blob").write_bytes(b"x" * 1500)

    removed, reclaimed = store.prune()
    assert (removed, reclaimed) == ([anonymous], 1500)
    assert [v.name for v in store.list()] == ["named", "used-anon"]

    removed, _ = store.prune(all_=True)
    assert removed == ["named"]
    assert [v.name for v in store.list()] == ["used-anon"]


def test_prune_label_filters_choose_volumes(store: VolumeStore) -> None:
    store.create("v-a", labels={"env": "test", "keep": ""})
    store.create("v-b", labels={"env": "test"})
    store.create("v-c", labels={"env": "prod"})
    removed, _ = store.prune(all_=True, labels=["env=test"], without_labels=["keep"])
    assert removed == ["v-b"]
    removed, _ = store.prune(all_=True, labels=["env"])
    assert removed == ["v-a", "v-c"]


def test_anonymous_volume_gets_a_random_64_hex_name(store: VolumeStore) -> None:
    volume = store.create()
    assert len(volume.name) == 64 and int(volume.name, 16) >= 0
    assert volume.anonymous and volume.labels == {ANONYMOUS_LABEL: ""}


def test_volume_with_garbled_record_is_skipped_then_repaired_keeping_data(
    store: VolumeStore,
) -> None:
    store.create("good")
    store.create("broken")
    (store.path("broken") / "precious").write_text("x")
    (store.root / "broken" / "volume.json").write_text("{truncated")
    (store.root / "no-record" / "_data").mkdir(parents=True)
    (store.root / "stray-file").write_text("")
    assert [v.name for v in store.list()] == ["good"]
    with pytest.raises(StackError, match="volume broken is damaged"):
        store.get("broken")

    store.create("broken")
    assert (store.path("broken") / "precious").read_text() == "x"
    store.remove("no-record")
    assert [v.name for v in store.list()] == ["broken", "good"]
    with pytest.raises(StackError, match="stray-file is in the way"):
        store.create("stray-file")


def test_create_after_a_crash_mid_create_cleans_the_leftover(store: VolumeStore) -> None:
    (store.root / ".creating" / "_data").mkdir(parents=True)
    (store.root / ".creating" / "_data" / "half").write_text("")
    (store.root / ".removing-0123").mkdir()
    assert store.list() == []
    store.create("fresh")
    assert list(store.path("fresh").iterdir()) == []
    store.prune()
    assert sorted(os.listdir(store.root)) == [".lock", "fresh"]
