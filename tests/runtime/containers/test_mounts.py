"""What a container sees of its mounts: named volumes, binds, tmpfs, configs, secrets.

Every test runs real busybox containers and checks what a user would: the
files inside, the files on the host, the errors a write gets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner
from support.images import (
    PATH_ENV,
    build_image,
    busybox_layer,
    directory,
    file,
    layer_tar,
    write_docker_archive_classic,
)

from orchestrator.runtime.containers import linux
from orchestrator.runtime.images.exchange import load_archive
from orchestrator.runtime.images.store import ImageStore

pytestmark = pytest.mark.trio

VOLUME_IMAGE = "volumed:latest"


def volume_data(runner: ServiceRunner, name: str) -> Path:
    """The host folder a named volume keeps its files in."""
    return Path(runner.volumes.get(name).mountpoint)


# ---- named volumes ------------------------------------------------------------------------


async def test_two_running_containers_see_the_same_volume(runner: ServiceRunner):
    stack = """
        services:
          reader:
            image: busybox
            volumes: [shared:/in]
            command: sh -c 'while [ ! -f /in/note ]; do usleep 20000; done; cat /in/note'
          writer:
            image: busybox
            volumes: [shared:/out]
            command: sh -c 'echo written by writer > /out/note'
        volumes:
          shared: {}
    """
    reader = await runner.start(stack, "reader")
    assert runner.runtime.get(reader.id).state.status == "running"
    writer = await runner.start(stack, "writer")
    with trio.fail_after(10):
        assert (await runner.runtime.wait(writer.id)).exit_code == 0
        state = await runner.runtime.wait(reader.id)
    assert state.exit_code == 0
    assert runner.output(reader.id)[0] == "written by writer\n"


async def test_volume_data_outlives_the_container_that_wrote_it(runner: ServiceRunner):
    stack = """
        services:
          app:
            image: busybox
            volumes: [keep:/data]
            command: sh -c 'cat /data/n 2>/dev/null || echo none; echo kept > /data/n'
        volumes:
          keep: {}
    """
    first = await runner.run(stack)
    await runner.runtime.remove(runner.created[-1])
    second = await runner.run(stack)
    assert (first.stdout, second.stdout) == ("none\n", "kept\n")
    assert (volume_data(runner, "test_keep") / "n").read_text() == "kept\n"
    labels = runner.volumes.get("test_keep").labels
    assert labels["com.docker.compose.project"] == "test"
    assert labels["com.docker.compose.volume"] == "keep"


async def test_a_volume_declared_as_a_bind_keeps_its_files_in_that_folder(
    runner: ServiceRunner,
):
    (runner.project_dir / "here").mkdir()
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [local:/data]
            command: sh -c 'echo stored > /data/file'
        volumes:
          local:
            driver: local
            driver_opts: {type: none, o: bind, device: ./here}
    """)
    assert ran.exit_code == 0, ran.stderr
    assert (runner.project_dir / "here" / "file").read_text() == "stored\n"
    assert list(volume_data(runner, "test_local").iterdir()) == []


async def test_first_mount_copies_the_image_folder_into_an_empty_volume(runner: ServiceRunner):
    stack = """
        services:
          app:
            image: busybox
            hostname: {name}
            volumes: [etc:/etc]
            command: sh -c 'cat /etc/group; cat /etc/hostname; echo added > /etc/added'
        volumes:
          etc: {{}}
    """
    first = await runner.run(stack.format(name="web01"))
    assert first.exit_code == 0, first.stderr
    assert first.stdout.splitlines() == ["root:x:0:", "nobody:x:65534:", "web01"]
    data = volume_data(runner, "test_etc")
    assert (data / "passwd").read_text().startswith("root:x:0:0:")
    assert (data / "added").read_text() == "added\n"
    # The container's own /etc files stay its own, over the volume, and out of it.
    await runner.runtime.remove(runner.created[-1])
    second = await runner.run(stack.format(name="web02"))
    assert second.stdout.splitlines()[-1] == "web02"
    assert "web0" not in (data / "hostname").read_text()


async def test_a_read_only_volume_over_etc_is_filled_and_runs(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [etc:/etc:ro]
            command: sh -c 'cat /etc/group; touch /etc/x || echo refused'
        volumes:
          etc: {}
    """)
    assert ran.stdout.split() == ["root:x:0:", "nobody:x:65534:", "refused"], ran.stderr


async def test_copy_up_keeps_links_and_modes(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [bin:/bin]
            command: sh -c 'ls /bin | wc -l'
        volumes:
          bin: {}
    """)
    assert ran.exit_code == 0, ran.stderr
    data = volume_data(runner, "test_bin")
    assert (data / "busybox").stat().st_mode & 0o777 == 0o755
    assert (data / "sh").is_symlink() and (data / "sh").readlink() == Path("busybox")
    assert int(ran.stdout) == len(list(data.iterdir()))


async def test_containers_starting_together_fill_a_new_volume_once(runner: ServiceRunner):
    stack = """
        services:
          app:
            image: busybox
            volumes: [bin:/bin]
            command: sh -c 'ls /bin | wc -l'
        volumes:
          bin: {}
    """
    containers = [runner.create(stack, number=n) for n in range(1, 5)]
    async with trio.open_nursery() as nursery:
        for container in containers:
            nursery.start_soon(runner.runtime.start, container.id)
    with trio.fail_after(10):
        states = [await runner.runtime.wait(c.id) for c in containers]
    assert [state.exit_code for state in states] == [0] * 4
    count = len(list(volume_data(runner, "test_bin").iterdir()))
    assert {runner.output(c.id)[0].strip() for c in containers} == {str(count)}


async def test_nocopy_leaves_a_new_volume_empty(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes:
              - {type: volume, source: www, target: /var/www, volume: {nocopy: true}}
            command: sh -c 'ls -A /var/www | wc -l'
        volumes:
          www: {}
    """)
    assert ran.stdout.strip() == "0"
    assert list(volume_data(runner, "test_www").iterdir()) == []


async def test_a_volume_with_files_is_not_filled_again(runner: ServiceRunner):
    stack = """
        services:
          app:
            image: busybox
            volumes: [www:/var/www]
            command: sh -c 'ls /var/www'
        volumes:
          www: {}
    """
    runner.volumes.create("test_www")
    (volume_data(runner, "test_www") / "mine.html").write_text("mine\n")
    ran = await runner.run(stack)
    assert ran.stdout.split() == ["mine.html"]


@pytest.fixture(scope="module")
def volume_image(container_root: Path) -> str:
    """busybox with a VOLUME /data that holds a file; stays in the session's store."""
    seed = layer_tar([directory("data"), file("data/seed.txt", b"from the image\n")])
    image = build_image(
        [busybox_layer(), seed],
        references=[VOLUME_IMAGE],
        config={"Env": [PATH_ENV], "Cmd": ["sh"], "Volumes": {"/data": {}}},
    )
    archive = write_docker_archive_classic(container_root / "volumed.tar", [image])
    with ImageStore(container_root / "images") as store:
        load_archive(store, str(archive))
    archive.unlink()
    return VOLUME_IMAGE


async def test_image_volume_gets_an_anonymous_volume_filled_from_the_image(
    runner: ServiceRunner, volume_image: str
):
    ran = await runner.run(f"""
        services:
          app:
            image: {volume_image}
            command: sh -c 'cat /data/seed.txt; echo new > /data/new.txt'
    """)
    assert ran.stdout == "from the image\n"
    [volume] = runner.volumes.list()
    assert volume.anonymous
    assert sorted(p.name for p in Path(volume.mountpoint).iterdir()) == ["new.txt", "seed.txt"]


async def test_a_service_volume_covers_the_image_volume(
    runner: ServiceRunner, volume_image: str
):
    ran = await runner.run(f"""
        services:
          app:
            image: {volume_image}
            volumes: [mine:/data]
            command: cat /data/seed.txt
        volumes:
          mine: {{}}
    """)
    assert ran.stdout == "from the image\n"
    assert [v.name for v in runner.volumes.list()] == ["test_mine"]


# ---- bind mounts --------------------------------------------------------------------------


async def test_relative_bind_source_is_the_project_directory(runner: ServiceRunner):
    site = runner.project_dir / "site"
    site.mkdir()
    (site / "index.html").write_text("from the host\n")
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [./site:/srv]
            command: sh -c 'cat /srv/index.html; echo back > /srv/reply'
    """)
    assert ran.stdout == "from the host\n"
    assert (site / "reply").read_text() == "back\n"


async def test_short_syntax_creates_a_missing_host_directory(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [./made/here:/made]
            command: touch /made/file
    """)
    assert ran.exit_code == 0, ran.stderr
    assert (runner.project_dir / "made" / "here" / "file").is_file()


async def test_long_syntax_creates_the_host_directory_only_when_asked(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes:
              - {type: bind, source: ./asked, target: /asked, bind: {create_host_path: true}}
            command: touch /asked/file
    """)
    assert ran.exit_code == 0, ran.stderr
    assert (runner.project_dir / "asked" / "file").is_file()


async def test_read_only_bind_refuses_writes(runner: ServiceRunner):
    (runner.project_dir / "conf").mkdir()
    (runner.project_dir / "conf" / "app.ini").write_text("x=1\n")
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes:
              - ./conf:/conf:ro
              - {type: bind, source: ./conf/app.ini, target: /app.ini, read_only: true}
              - data:/data:ro
            command: >-
              sh -c 'cat /conf/app.ini; echo y > /conf/new || echo dir-refused;
              echo y >> /app.ini || echo file-refused; touch /data/x || echo volume-refused'
        volumes:
          data: {}
    """)
    assert ran.stdout.split() == ["x=1", "dir-refused", "file-refused", "volume-refused"]
    assert "Read-only file system" in ran.stderr
    assert sorted(p.name for p in (runner.project_dir / "conf").iterdir()) == ["app.ini"]


@pytest.fixture
def shared_host_folder(runner: ServiceRunner) -> Iterator[Path]:
    """A tmpfs on the host, shared, so mounts made under it propagate; unmounted after."""
    folder = runner.project_dir / "feed"
    folder.mkdir()
    linux.mount("stack-test", str(folder), "tmpfs", 0, "size=1m")
    try:
        linux.mount(None, str(folder), None, linux.PROPAGATION_FLAGS["shared"])
        yield folder
    finally:
        for path in (folder / "late", folder):
            with contextlib.suppress(OSError):
                linux.umount(str(path), linux.MNT_DETACH)


async def test_rslave_bind_sees_what_the_host_mounts_later(
    runner: ServiceRunner, shared_host_folder: Path
):
    late = shared_host_folder / "late"
    late.mkdir()
    container = await runner.start("""
        services:
          app:
            image: busybox
            volumes:
              - {type: bind, source: ./feed, target: /slave, bind: {propagation: rslave}}
              - ./feed:/private
            command: >-
              sh -c 'while [ ! -f /slave/late/note ]; do usleep 20000; done;
              cat /slave/late/note; ls -A /private/late | wc -l'
    """)
    linux.mount("stack-test", str(late), "tmpfs", 0, "size=1m")
    (late / "note").write_text("mounted later\n")
    with trio.fail_after(10):
        state = await runner.runtime.wait(container.id)
    assert state.exit_code == 0
    assert runner.output(container.id)[0].split() == ["mounted", "later", "0"]


async def test_rshared_bind_is_a_shared_mount_inside(runner: ServiceRunner):
    (runner.project_dir / "shared").mkdir()
    ran = await runner.run("""
        services:
          app:
            image: busybox
            volumes: [./shared:/shared:rshared]
            command: sh -c 'grep " /shared " /proc/self/mountinfo'
    """)
    assert ran.exit_code == 0, ran.stderr
    optional_fields = ran.stdout.split(" - ")[0].split()[6:]
    assert any(field.startswith("shared:") for field in optional_fields)


# ---- tmpfs --------------------------------------------------------------------------------


async def test_tmpfs_size_and_mode(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            tmpfs: ["/scratch:size=2m,mode=700"]
            volumes:
              - {type: tmpfs, target: /cache, tmpfs: {size: 8m, mode: 01777}}
            command: >-
              sh -c 'df -k /scratch /cache | tail -2; stat -c "%n %a" /scratch /cache;
              touch /cache/x && echo writable'
    """)
    assert ran.exit_code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].split()[1] == "2048"
    assert lines[1].split()[1] == "8192"
    assert lines[2:] == ["/scratch 700", "/cache 1777", "writable"]


# ---- configs and secrets ------------------------------------------------------------------


async def test_configs_and_secrets_land_read_only_at_their_targets(
    runner: ServiceRunner, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STACK_TEST_TOKEN", "t0ken\n")
    (runner.project_dir / "app.conf").write_text("conf from a file\n")
    (runner.project_dir / "key.pem").write_text("key from a file\n")
    ran = await runner.run("""
        services:
          app:
            image: busybox
            configs:
              - app_conf
              - {source: greeting, target: /etc/greeting.txt, uid: "1000", gid: "1001", mode: 0440}
            secrets:
              - token
              - {source: key, target: tls.key, uid: "7", gid: "8", mode: 0400}
            command: >-
              sh -c 'cat /app_conf /etc/greeting.txt /run/secrets/token /run/secrets/tls.key;
              stat -c "%n %u %g %a" /app_conf /etc/greeting.txt /run/secrets/token
              /run/secrets/tls.key;
              for f in /app_conf /etc/greeting.txt /run/secrets/token /run/secrets/tls.key;
              do echo x >> $$f || echo refused; done'
        configs:
          app_conf: {file: ./app.conf}
          greeting: {content: "hello $${NAME}\\n"}
        secrets:
          token: {environment: STACK_TEST_TOKEN}
          key: {file: ./key.pem}
    """)
    lines = ran.stdout.splitlines()
    assert lines[:4] == ["conf from a file", "hello ${NAME}", "t0ken", "key from a file"]
    assert lines[4] == "/app_conf 0 0 644"  # a file source is bound as it is
    assert lines[5:8] == [
        "/etc/greeting.txt 1000 1001 440", "/run/secrets/token 0 0 444",
        "/run/secrets/tls.key 7 8 400",
    ]
    assert lines[8:] == ["refused"] * 4
    assert ran.stderr.count("Read-only file system") == 4
    assert (runner.project_dir / "app.conf").read_text() == "conf from a file\n"


# ---- volumes_from -------------------------------------------------------------------------


async def test_volumes_from_a_service_shares_its_volumes_and_binds(runner: ServiceRunner):
    (runner.project_dir / "site").mkdir()
    (runner.project_dir / "site" / "page").write_text("page\n")
    stack = """
        services:
          source:
            image: busybox
            volumes: [data:/data, ./site:/site]
            tmpfs: [/scratch]
            configs: [settings]
            command: sh -c 'echo from source > /data/note'
          app:
            image: busybox
            volumes_from: [source]
            command: sh -c 'cat /data/note /site/page; ls -d /scratch /settings'
        volumes:
          data: {}
        configs:
          settings: {content: x}
    """
    source = await runner.run(stack, "source")
    assert source.exit_code == 0, source.stderr
    ran = await runner.run(stack, "app")
    assert ran.stdout.splitlines() == ["from source", "page"]
    # tmpfs, configs and secrets are not volumes: they stay the source's own.
    assert ran.stderr.count("No such file or directory") == 2


async def test_volumes_from_a_container_by_name_read_only(runner: ServiceRunner):
    stack = """
        services:
          source:
            image: busybox
            container_name: keeper-of-data
            volumes: [data:/data]
            command: sh -c 'echo kept > /data/note'
          app:
            image: busybox
            volumes_from: ["container:keeper-of-data:ro"]
            command: sh -c 'cat /data/note; echo x > /data/other || echo refused'
        volumes:
          data: {}
    """
    await runner.run(stack, "source")
    ran = await runner.run(stack, "app")
    assert ran.stdout.split() == ["kept", "refused"]
