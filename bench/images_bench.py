"""Time image pulls and layer unpacking, side by side with skopeo and tar.

    python bench/images_bench.py [--size-mb 200] [--layers 8] [--runs 5] [--workdir DIR]
                                 [--unpack-only] [--fresh-fs-gb 16]

Builds a deterministic multi-layer image (incompressible and compressible
files, many small ones too, gzip layers), pushes it to a local
`docker-registry` started as the tests start theirs (tests/support/registry.py),
then prints, as the median of `--runs` (the actions take turns):
- pull: our `pull_image` into a fresh store (download + verify + unpack);
  our download alone (RegistryClient into the blob store, no unpack);
  `skopeo copy docker://… dir:` (download + verify only), and the same
  followed by `tar -xf` of every layer and a sync (a download-and-unpack baseline);
- push: ours and skopeo's, once each, to an empty registry;
- unpack: our layer unpacking vs `tar -xf` of the same layer tars into a
  directory on the same disk: plain tars without and with the final sync to
  disk, one layer at a time and then as many at once as `image load` unpacks;
  then the gzip blobs (decompression included) with the sync, one at a time and
  as many at once as a pull unpacks. Ours reads each tar from a file, as the
  store does (plain tars are mapped, see orchestrator/runtime/images/layermap.py).
- disk speed, what the unpack rates are measured against: `cp -a` of the
  unpacked tree (writing these files at all, with the sync) and `dd` of as
  many bytes into one file (the disk's own throughput).
Targets (issue 3): pull at least as fast as skopeo; unpacking at disk speed,
taken as: plain tars + sync at least as fast as `cp -a` of the same tree + sync
(one layer at a time, and as `image load` unpacks them), and gzip layers clearly
faster than `tar -xzf`; the last lines say whether they are met.

Everything is measured on a fresh ext4 made in the work dir for the run (see
fresh_fs.py: on a used filesystem the same unpack swings threefold), and each
unpacked tree is deleted (and the deletion synced) before the next run starts,
so that every run meets the same filesystem. With `--fresh-fs-gb 0`, or where no
fresh filesystem can be made (not root, no loop device; the output says), the
work dir itself is measured and the trees are kept until every run is done (a
few GB): there, creating files right after deleting as many can be slow (an ext4
mounted with `discard` skips recently deleted inodes one by one). Every
process, mount and directory it starts is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import trio

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from fresh_fs import Unavailable, fresh_ext4  # noqa: E402
from support.images import (  # noqa: E402
    BuiltImage,
    build_image,
    directory,
    file,
    layer_tar,
    write_oci_layout,
)
from support.registry import RegistryServer, run_registry  # noqa: E402

from orchestrator.runtime.images.exchange import load_archive  # noqa: E402
from orchestrator.runtime.images.layers import UNPACK_THREADS  # noqa: E402
from orchestrator.runtime.images.manifest import parse_manifest  # noqa: E402
from orchestrator.runtime.images.pull import pull_image  # noqa: E402
from orchestrator.runtime.images.push import push_image  # noqa: E402
from orchestrator.runtime.images.registry import RegistryClient  # noqa: E402
from orchestrator.runtime.images.store import ImageStore  # noqa: E402
from orchestrator.runtime.images.unpack import unpack_layer_tar  # noqa: E402

MB = 1 << 20
REPOSITORY = "bench/image"
PLAIN_LAYER = "application/vnd.oci.image.layer.v1.tar"
# Bytes to 16 letters, unevenly: gzip shrinks such text to about half, like logs or code.
TEXTISH = bytes(b"etaoinshrdlucmfw"[min(i % 37, 15)] for i in range(256))


# --- the image -------------------------------------------------------------------------


def layer_entries(rng: random.Random, index: int, size: int) -> list:
    """One layer of about `size` bytes: 45% random, 40% text-like, 15% small files."""
    top = f"layer{index}"
    entries = [directory(top), directory(f"{top}/big"), directory(f"{top}/text")]
    random_bytes = size * 45 // 100
    for n in range(4):
        entries.append(file(f"{top}/big/blob{n}.bin", rng.randbytes(random_bytes // 4)))
    text_bytes = size * 40 // 100
    for n in range(16):
        entries.append(
            file(f"{top}/text/doc{n}.txt", rng.randbytes(text_bytes // 16).translate(TEXTISH))
        )
    small_bytes = size - random_bytes - text_bytes
    written = 0
    count = 0
    while written < small_bytes:
        if count % 100 == 0:
            entries.append(directory(f"{top}/small{count // 100}"))
        length = rng.randrange(256, 16384)
        data = rng.randbytes(length).translate(TEXTISH) if count % 2 else rng.randbytes(length)
        entries.append(file(f"{top}/small{count // 100}/f{count}.dat", data))
        written += length
        count += 1
    return entries


def build_bench_image(size_mb: int, layers: int) -> BuiltImage:
    rng = random.Random(20240601)
    per_layer = size_mb * MB // layers
    tars = [layer_tar(layer_entries(rng, i, per_layer)) for i in range(layers)]
    return build_image(tars, references=(f"{REPOSITORY}:latest",), compression="gzip")


# --- measuring -------------------------------------------------------------------------


@dataclass
class Figure:
    label: str
    runs: list[float]  # seconds of each run, in the order they ran
    megabytes: float
    files: int = 0

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    def line(self) -> str:
        rate = self.megabytes / self.seconds
        text = f"  {self.label:<52} {self.seconds:7.2f} s  {rate:8.1f} MB/s"
        if self.files:
            text += f"  {self.files / self.seconds:9.0f} files/s"
        return text


def take_turns(runs: int, *actions: Callable[[], float]) -> list[list[float]]:
    """Each action's times, over `runs` rounds in which every action runs once: a
    busy moment on the machine slows one round of all of them rather than all runs
    of one. Figures show the median, not the best: file creation times scatter
    widely, and the best of a few runs compares two lucky draws."""
    times = [[action() for action in actions] for _ in range(runs)]
    return [list(column) for column in zip(*times, strict=True)]


@contextlib.contextmanager
def scratch(workdir: Path, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def skopeo(*args: str) -> None:
    subprocess.run(
        ["skopeo", "--insecure-policy", *args], check=True, stdout=subprocess.DEVNULL
    )


def skopeo_download(reference: str, directory: Path) -> None:
    skopeo("copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{directory}")


# --- pulls -----------------------------------------------------------------------------


async def download_only(store: ImageStore, registry: str, manifest_digest: str) -> None:
    """What a pull does before unpacking: every blob downloaded, verified, stored."""
    async with RegistryClient(registry) as client:
        fetched = await client.get_manifest(REPOSITORY, manifest_digest)
        manifest = parse_manifest(fetched.data, where="bench manifest")
        limiter = trio.CapacityLimiter(3)

        async def fetch(digest: str, size: int) -> None:
            async with limiter:
                with store.blob_writer(digest) as writer:
                    await client.download_blob(REPOSITORY, digest, writer.write, size=size)
                    writer.commit()

        async with trio.open_nursery() as nursery:
            for descriptor in [manifest.config, *manifest.layers]:  # type: ignore[union-attr]
                nursery.start_soon(fetch, descriptor.digest, descriptor.size)
        store.put_blob(fetched.data, manifest_digest)


def bench_pulls(
    server: RegistryServer, image: BuiltImage, workdir: Path, runs: int
) -> list[Figure]:
    reference = f"{server.host}/{REPOSITORY}:latest"
    blob_mb = sum(len(blob) for blob in image.blobs().values()) / MB

    def ours() -> float:
        with scratch(workdir, "pull-") as root:
            store = ImageStore(root / "images")
            seconds = timed(lambda: trio.run(pull_image, store, reference))
            store.close()
            return seconds

    def ours_download() -> float:
        with scratch(workdir, "download-") as root:
            store = ImageStore(root / "images")
            seconds = timed(
                lambda: trio.run(download_only, store, server.host, image.manifest_digest)
            )
            store.close()
            return seconds

    def theirs() -> float:
        with scratch(workdir, "skopeo-") as root:
            return timed(lambda: skopeo_download(reference, root / "x"))

    def theirs_unpacked() -> float:
        with scratch(workdir, "skopeo-tar-") as root:
            def download_and_unpack() -> None:
                skopeo_download(reference, root / "x")
                for n, layer in enumerate(image.layers):
                    tar_extract(root / "x" / layer.digest.removeprefix("sha256:"), root / f"l{n}")
                os.sync()

            return timed(download_and_unpack)

    labels = [
        "stack pull (download+verify+unpack+sync)",
        "stack download only (verify, no unpack)",
        "skopeo copy docker:// dir: (download+verify)",
        "skopeo copy, then tar -xf each layer + sync",
    ]
    times = take_turns(runs, ours, ours_download, theirs, theirs_unpacked)
    return [Figure(label, column, blob_mb) for label, column in zip(labels, times, strict=True)]


def bench_push(image: BuiltImage, workdir: Path) -> list[Figure]:
    """One push each, to fresh registries (nothing there to skip)."""
    blob_mb = sum(len(blob) for blob in image.blobs().values()) / MB
    with scratch(workdir, "push-") as root:
        layout = write_oci_layout(root / "layout", [image], names="tag")
        store = ImageStore(root / "images")
        (record,) = load_archive(store, layout)
        store.tag(f"{REPOSITORY}:latest", record.manifest_digest)  # the layout names only a tag
        with run_registry(root) as server:
            destination = f"{server.host}/{REPOSITORY}:latest"
            ours = timed(lambda: trio.run(
                lambda: push_image(store, f"{REPOSITORY}:latest", destination=destination)
            ))
        store.close()
        with run_registry(root) as server:
            theirs = timed(lambda: skopeo(
                "copy", "--preserve-digests", "--dest-tls-verify=false",
                f"oci:{layout}:latest", f"docker://{server.host}/{REPOSITORY}:latest",
            ))
    return [
        Figure("stack push (to an empty registry)", [ours], blob_mb),
        Figure("skopeo copy oci: docker:// (to an empty registry)", [theirs], blob_mb),
    ]


# --- unpacking -------------------------------------------------------------------------


def member_count(tar: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return len(archive.getmembers())


def bench_unpack(image: BuiltImage, workdir: Path, runs: int, keep: bool) -> list[Figure]:
    """Our unpacker beside GNU tar on the same layer tars (plain, then gzip), and
    beside what writing those files costs at all on this disk: `cp -a` of the same
    tree, and dd of the same number of bytes as one file. `keep`: keep each run's
    tree until the end, instead of deleting it after the run."""
    tar_mb = sum(len(layer.tar) for layer in image.layers) / MB
    members = sum(member_count(layer.tar) for layer in image.layers)
    with scratch(workdir, "tars-") as tars_dir:
        plain, gzipped = [], []
        for n, layer in enumerate(image.layers):
            plain.append(tars_dir / f"layer{n}.tar")
            plain[-1].write_bytes(layer.tar)
            gzipped.append(tars_dir / f"layer{n}.tar.gz")
            gzipped[-1].write_bytes(layer.blob)
        tree = tars_dir / "tree"
        tree.mkdir()
        for n, tar in enumerate(plain):
            tar_extract(tar, tree / f"l{n}")
        os.sync()

        trees = tars_dir / "runs"  # every run's tree (if kept), removed with tars_dir
        trees.mkdir()

        def run(write: Callable[[Path], None], sync: bool = True) -> float:
            """Seconds to `write` a tree into an empty directory (and sync it to disk)."""
            root = Path(tempfile.mkdtemp(dir=trees))
            os.sync()  # start from clean page cache writes: count only our own
            start = time.perf_counter()
            write(root)
            if sync:
                os.sync()
            seconds = time.perf_counter() - start
            if not keep:
                shutil.rmtree(root)
                os.sync()
            return seconds

        def layers(extract: Callable[[Path, Path], None], tars: list[Path], at_once: int = 1):
            def write(root: Path) -> None:
                with ThreadPoolExecutor(at_once) as pool:
                    for _ in pool.map(lambda n: extract(tars[n], root / f"l{n}"), range(len(tars))):
                        pass
            return write

        def copy_tree(root: Path) -> None:
            subprocess.run(["cp", "-a", str(tree), str(root / "copy")], check=True)

        def dd(root: Path) -> None:
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={root / 'one'}", "bs=1M", f"count={round(tar_mb)}",
                 "conv=fsync"],
                check=True, stderr=subprocess.DEVNULL,
            )

        cases = [
            ("plain tars (page cache, no sync)", plain, 1, False),
            ("plain tars + sync", plain, 1, True),
            (f"plain tars + sync, {UNPACK_THREADS} at once as a load", plain, UNPACK_THREADS,
             True),
            ("gzip layers + sync", gzipped, 1, True),
            (f"gzip layers + sync, {UNPACK_THREADS} at once as a pull", gzipped, UNPACK_THREADS,
             True),
        ]
        actions = [lambda: run(dd), lambda: run(copy_tree)]
        for _, tars, at_once, sync in cases:
            actions.append(lambda t=tars, a=at_once, s=sync: run(layers(stack_extract, t, a), s))
            actions.append(lambda t=tars, a=at_once, s=sync: run(layers(tar_extract, t, a), s))
        times = take_turns(runs, *actions)
        figures = [
            Figure("disk: dd of as many bytes, one file, fsync", times[0], tar_mb),
            Figure("disk: cp -a of the unpacked tree + sync", times[1], tar_mb, members),
        ]
        for n, (label, *_) in enumerate(cases):
            figures.append(Figure(f"stack unpack, {label}", times[2 + 2 * n], tar_mb, members))
            figures.append(Figure(f"tar -xf, {label}", times[3 + 2 * n], tar_mb, members))
        return figures


def unpack_verdicts(figures: list[Figure]) -> list[str]:
    """The issue's unpack targets, met or not, from the figures of bench_unpack.

    Against `cp -a`, "on par" is a median within the spread of cp's own runs (their
    median distance from their median): closer than the same program comes to
    itself from one run to the next, which no number of runs here would settle.
    Plain tars are judged one at a time and as `image load` unpacks them.
    """
    by_label = {figure.label: figure for figure in figures}
    copy_runs = by_label["disk: cp -a of the unpacked tree + sync"].runs
    copy = statistics.median(copy_runs)
    spread = statistics.median(abs(run - copy) for run in copy_runs)
    lines = []
    for case in ("plain tars + sync", f"plain tars + sync, {UNPACK_THREADS} at once as a load"):
        plain_runs = by_label[f"stack unpack, {case}"].runs
        plain = statistics.median(plain_runs)
        faster = sum(ours <= theirs for ours, theirs in zip(plain_runs, copy_runs, strict=True))
        verdict = "met" if plain <= copy else "on par" if plain <= copy + spread else "NOT met"
        lines.append(
            f"  target: {case} at least as fast as cp -a + sync: {verdict} "
            f"({plain:.2f} s vs {copy:.2f} s, {copy / plain:.2f}x; faster in {faster} of "
            f"{len(copy_runs)} rounds; cp -a's own runs spread ±{spread / copy:.0%})"
        )
    ours_gzip = by_label["stack unpack, gzip layers + sync"].seconds
    tar_gzip = by_label["tar -xf, gzip layers + sync"].seconds
    lines.append(
        f"  target: gzip layers + sync clearly faster than tar -xzf + sync: "
        f"{'met' if ours_gzip < 0.9 * tar_gzip else 'NOT met'} "
        f"({ours_gzip:.2f} s vs {tar_gzip:.2f} s, {tar_gzip / ours_gzip:.1f}x)"
    )
    return lines


def stack_extract(tar: Path, dest: Path) -> None:
    """As the store unpacks a blob: hashing it as it reads, to check its digest (for an
    uncompressed layer that digest is the diff id too, so the tar is hashed once)."""
    with tar.open("rb") as stream:
        unpack_layer_tar(stream, PLAIN_LAYER, dest)  # compression is sniffed from the bytes


def tar_extract(tar: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True)


def bench_registry(image: BuiltImage, root: Path, runs: int) -> None:
    with run_registry(root) as server:
        layout = write_oci_layout(root / "layout", [image], names="tag")
        skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
               f"oci:{layout}:latest", f"docker://{server.host}/{REPOSITORY}:latest")
        print("pull (MB/s of compressed blobs):")
        for figure in bench_pulls(server, image, root, runs):
            print(figure.line())
    print("push (MB/s of compressed blobs, one run):")
    for figure in bench_push(image, root):
        print(figure.line())


# --- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="uncompressed image size")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="median of this many runs")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where stores and unpacked trees go (the disk measured)")
    parser.add_argument("--unpack-only", action="store_true",
                        help="skip the registry part (pull, push): no skopeo needed")
    parser.add_argument("--fresh-fs-gb", type=int, default=16,
                        help="size of the fresh ext4 made in the work dir to measure on; "
                             "0 measures in the work dir itself")
    args = parser.parse_args()
    if shutil.which("skopeo") is None and not args.unpack_only:
        parser.error("skopeo is not installed (apt-get install skopeo)")

    start = time.perf_counter()
    image = build_bench_image(args.size_mb, args.layers)
    tar_mb = sum(len(layer.tar) for layer in image.layers) / MB
    blob_mb = sum(len(layer.blob) for layer in image.layers) / MB
    print(f"image: {len(image.layers)} gzip layers, {tar_mb:.0f} MB unpacked, "
          f"{blob_mb:.0f} MB compressed (built in {time.perf_counter() - start:.0f} s); "
          f"median of {args.runs} runs, work dir {args.workdir}")

    with contextlib.ExitStack() as stack:
        workdir, fresh = args.workdir, False
        if args.fresh_fs_gb:
            try:
                workdir = stack.enter_context(fresh_ext4(args.workdir, args.fresh_fs_gb))
                fresh = True
                print(f"measured on a fresh {args.fresh_fs_gb} GB ext4 in the work dir")
            except Unavailable as why:
                print(f"measured in the work dir itself (no fresh filesystem: {why})")
        root = stack.enter_context(scratch(workdir, "images-bench-"))
        if not args.unpack_only:
            bench_registry(image, root, args.runs)
        print("unpack (MB/s of uncompressed tar):")
        figures = bench_unpack(image, root, args.runs, keep=not fresh)
        for figure in figures:
            print(figure.line())
        for verdict in unpack_verdicts(figures):
            print(verdict)
    return 0


if __name__ == "__main__":
    # Ctrl-C, and a plain `kill`, unwind through every cleanup (registry, directories),
    # even when started in the background of a shell that set SIGINT to be ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
