"""A fresh ext4 filesystem for a benchmark to write on, in a file of the work dir.

How long creating files takes depends on the filesystem's past as much as on
its disk: on an ext4 where gigabytes were just deleted (as every benchmark run
does), new inodes are handed out slowly, and the same unpack swings threefold
from one run to the next. On a filesystem made for the run, figures repeat.

The filesystem lives in a preallocated file, through a loop device with direct
I/O, so its writes reach the same disk as the work dir's without going through
the page cache twice. Needs root, mkfs.ext4 and a free loop device; where any
is missing the caller is told why and measures in the work dir itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

GB = 1 << 30


class Unavailable(Exception):
    """No fresh filesystem can be made here; the message says why."""


@contextlib.contextmanager
def fresh_ext4(parent: Path, size_gb: int) -> Iterator[Path]:
    """Mount a new ext4 of `size_gb` (a file in `parent`) and yield its root; every
    trace of it (mount, loop device, file) is gone afterwards."""
    if os.geteuid() != 0:
        raise Unavailable("not root")
    if shutil.which("mkfs.ext4") is None or shutil.which("losetup") is None:
        raise Unavailable("mkfs.ext4 or losetup is missing")
    if shutil.disk_usage(parent).free < (size_gb + 2) * GB:
        raise Unavailable(f"less than {size_gb + 2} GB free in {parent}")
    with contextlib.ExitStack() as undo:
        folder = Path(tempfile.mkdtemp(prefix="fresh-fs-", dir=parent))
        undo.callback(shutil.rmtree, folder, ignore_errors=True)
        image = folder / "fs.img"
        with image.open("wb") as file:
            os.posix_fallocate(file.fileno(), 0, size_gb * GB)
        # Inode tables and journal zeroed now, not by a kernel thread while we measure;
        # no discard, which on a file would undo the preallocation.
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
             str(image))
        device = _run("losetup", "--find", "--show", "--direct-io=on", str(image)).strip()
        undo.callback(_run, "losetup", "--detach", device)
        mountpoint = folder / "mnt"
        mountpoint.mkdir()
        _run("mount", device, str(mountpoint))
        undo.callback(_run, "umount", str(mountpoint))
        yield mountpoint


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        raise Unavailable(f"{' '.join(command)}: {error.stderr.strip()}") from None
    return done.stdout
