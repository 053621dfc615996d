"""What runs in the forked child: from a validated launch spec to `execve`.

The keeper forks once per launch. The first child joins the cgroup, enters or
creates the namespaces and forks again, so that the second child is PID 1 of
the new PID namespace; the first child reports that pid and exits, and the
container is re-parented to the keeper (a child subreaper), which reaps it.

The second child builds the container's mount namespace and never shows a
mount to the host: overlay root, pivot_root, /proc, /dev, /sys, the service's
mounts, masks. Its copy of the host's mounts is made a slave first (runc's
default): the host's mount events still reach it, so a bind with `rslave` or
`rshared` propagation sees what the host mounts under its source later, but
nothing it mounts travels back. When its last process exits the kernel tears
all of it down, so nothing can leak on the host. Bind sources are opened
(O_PATH) before pivot_root and mounted through /proc/self/fd afterwards, so no
symlink in an image can redirect a mount target out of the container's root.

Any failure is written to the report pipe as one line and the child exits;
on success the pipe closes at `execve` (it is close-on-exec), which is how
the keeper knows the container runs.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from orchestrator.runtime.containers import linux
from orchestrator.runtime.containers.defaults import capability_mask
from orchestrator.runtime.containers.launchspec import LaunchSpec, Mount, ProcessSpec

OLD_ROOT = "/.stack-oldroot"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
INIT_PATH = "/dev/init"
UMASK = 0o022
"""Docker's (runc's), for what a container makes and runs, rather than whatever the
shell that started the engine had: with 077 there, a file one container writes
into a shared volume would be unreadable to another container's user."""

NAMESPACE_FLAGS = {
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "net": linux.CLONE_NEWNET,
    "pid": linux.CLONE_NEWPID,
}


class LaunchError(Exception):
    """A reason the container cannot start, worded for the user."""


def enter_namespaces(spec: LaunchSpec, cgroup_procs: list[str]) -> None:
    """First child: join the cgroup, then new or existing namespaces (not yet PID 1)."""
    for procs in cgroup_procs:
        with open(procs, "w") as file:
            file.write("0")
    os.setsid()
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP
    for name, flag in NAMESPACE_FLAGS.items():
        mode = getattr(spec.namespaces, name)
        if mode == "new":
            flags |= flag
        elif mode != "host":
            join_namespace(mode, flag)
    linux.unshare(flags)


def join_namespace(path: str, flag: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise LaunchError(f"cannot join namespace {path}: {error.strerror}") from None
    try:
        linux.setns(fd, flag)
    finally:
        os.close(fd)


def build_container(
    spec: LaunchSpec,
    container_dir: Path,
    init_binary: str | None,
    copy_into_volume: Callable[[Path, Path], bool],
) -> None:
    """Second child (PID 1 of the container): every mount, then pivot into the root."""
    os.umask(UMASK)  # for the bind sources and mount points made here too
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    for mount in spec.mounts:
        if mount.kind == "bind" and mount.create_source and not os.path.lexists(mount.source):
            os.makedirs(mount.source, exist_ok=True)  # compose's create_host_path, at every start
    sources = {m.source: _open_path(m.source, m.target) for m in spec.mounts if m.kind == "bind"}
    devices = {} if spec.privileged else {name: _open_path(f"/dev/{name}") for name in DEVICES}
    host_dev = _open_path("/dev") if spec.privileged else -1
    init_fd = _open_path(init_binary) if spec.init and init_binary else -1

    root = str(container_dir / "rootfs")
    _mount_root(spec, container_dir, root)
    os.chdir(root)
    os.makedirs(OLD_ROOT[1:], exist_ok=True)
    linux.pivot_root(".", OLD_ROOT[1:])
    os.chdir("/")

    _mount_proc_sys_dev(spec, devices, host_dev)
    if init_fd >= 0:
        _bind(init_fd, INIT_PATH, read_only=True, create="file")
    for path in spec.rootfs.masked:
        _mask(path, writable=True)
    for mount in sorted(spec.mounts, key=lambda m: m.target.rstrip("/").count("/")):
        _user_mount(mount, sources, copy_into_volume)
    # After the service's mounts, as in Docker: a volume over /etc keeps the container's
    # own names (and is not filled with them); a mount of the file itself replaces it.
    targets = {mount.target for mount in spec.mounts}
    for name in ("hosts", "hostname", "resolv.conf"):
        source = f"{OLD_ROOT}{container_dir / name}"
        if f"/etc/{name}" not in targets and os.path.exists(source):
            _bind_etc_file(_open_path(source), f"/etc/{name}", spec.rootfs.read_only)
    for key, value in spec.sysctls:
        _write_sysctl(key, value)
    if not spec.privileged:
        for path in spec.masked_paths:
            _mask(path)
        for path in spec.readonly_paths:
            _read_only(path)
    linux.umount(OLD_ROOT, linux.MNT_DETACH)
    os.rmdir(OLD_ROOT)
    if spec.rootfs.read_only:
        linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
    if spec.namespaces.uts == "new":
        linux.sethostname(spec.hostname)
        if spec.domainname:
            linux.setdomainname(spec.domainname)


def _open_path(path: str, target: str = "") -> int:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as error:
        what = f"bind source {path}" + (f" for {target}" if target else "")
        raise LaunchError(f"{what}: {error.strerror}") from None


def _mount_root(spec: LaunchSpec, container_dir: Path, root: str) -> None:
    lowers = ":".join(spec.rootfs.lowers)
    upper, work = container_dir / "upper", container_dir / "work"
    options = f"lowerdir={lowers},upperdir={upper},workdir={work}"
    if len(options) >= 4096:
        raise LaunchError(f"too many image layers ({len(spec.rootfs.lowers)}) for one overlay")
    # nodev: a device node made with CAP_MKNOD anywhere in the root must not open the
    # host's disks; the few devices a container gets are bind mounts of their own.
    flags = 0 if spec.privileged else linux.MS_NODEV
    try:
        linux.mount("overlay", root, "overlay", flags, options)
    except OSError as error:
        raise LaunchError(f"cannot mount the container's root filesystem: {error}") from None


def _mount_proc_sys_dev(spec: LaunchSpec, devices: dict[str, int], host_dev: int) -> None:
    base = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    _mount_fs("proc", "/proc", "proc", base)
    if host_dev >= 0:
        _ensure("/dev", "dir")
        linux.mount(f"/proc/self/fd/{host_dev}", "/dev", None, linux.MS_BIND | linux.MS_REC)
    else:
        dev_flags = linux.MS_NOSUID | linux.MS_NODEV
        _mount_fs("tmpfs", "/dev", "tmpfs", dev_flags, "mode=755,size=65536k")
        for name, fd in devices.items():
            _bind(fd, f"/dev/{name}", read_only=False, create="file", nodev=False)
        for link, target in (
            ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"),
        ):
            os.symlink(target, f"/dev/{link}")
    _mount_fs(
        "devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    _mount_fs("shm", "/dev/shm", "tmpfs", base, f"mode=1777,size={spec.shm_size}")
    _mount_fs("mqueue", "/dev/mqueue", "mqueue", base)
    sys_flags = base | (0 if spec.privileged else linux.MS_RDONLY)
    if spec.namespaces.net == "new" or spec.privileged:
        _mount_fs("sysfs", "/sys", "sysfs", sys_flags)
    else:
        # sysfs shows the network namespace it was mounted in: reuse the host's.
        _ensure("/sys", "dir")
        linux.mount(f"{OLD_ROOT}/sys", "/sys", None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, "/sys", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)


def _mount_fs(source: str, target: str, fstype: str, flags: int, data: str | None = None) -> None:
    _ensure(target, "dir")
    linux.mount(source, target, fstype, flags, data)


def _ensure(target: str, kind: str) -> None:
    """Create a missing mount point inside the (already pivoted) root."""
    try:
        os.stat(target)
        return
    except FileNotFoundError:
        pass
    if kind == "dir":
        os.makedirs(target, exist_ok=True)
    elif kind == "file":
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        raise LaunchError(f"mount target {target} does not exist in the container")


def _bind(
    fd: int, target: str, *, read_only: bool, create: str, nodev: bool = True,
    nosuid: bool = False, noexec: bool = False, propagation: str = "rprivate",
) -> None:
    is_dir = stat.S_ISDIR(os.stat(f"/proc/self/fd/{fd}").st_mode)
    _ensure(target, create and ("dir" if is_dir else "file"))
    linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_REMOUNT | linux.MS_BIND
    flags |= (linux.MS_RDONLY if read_only else 0) | (linux.MS_NODEV if nodev else 0)
    flags |= (linux.MS_NOSUID if nosuid else 0) | (linux.MS_NOEXEC if noexec else 0)
    if flags != linux.MS_REMOUNT | linux.MS_BIND:
        linux.mount(None, target, None, flags)
    linux.mount(None, target, None, linux.PROPAGATION_FLAGS[propagation])


def _bind_etc_file(fd: int, target: str, read_only: bool) -> None:
    """/etc/hosts and friends; skipped where a read-only mount over /etc lacks the file
    and so has no place for it (the container then sees that mount's own /etc)."""
    try:
        _bind(fd, target, read_only=read_only, create="file")
    except OSError as error:
        if error.errno != errno.EROFS or os.path.lexists(target):
            raise


def _user_mount(
    mount: Mount, sources: dict[str, int], copy_into_volume: Callable[[Path, Path], bool]
) -> None:
    if mount.kind == "bind":
        fd = sources[mount.source]
        if mount.copy_up and os.path.isdir(mount.target):
            copy_into_volume(Path(mount.target), Path(f"/proc/self/fd/{fd}"))
        _bind(
            fd, mount.target, read_only=mount.read_only, create=mount.create, nodev=mount.nodev,
            nosuid=mount.nosuid, noexec=mount.noexec, propagation=mount.propagation,
        )
        return
    flags = (linux.MS_RDONLY if mount.read_only else 0) | (linux.MS_NODEV if mount.nodev else 0)
    flags |= (linux.MS_NOSUID if mount.nosuid else 0) | (linux.MS_NOEXEC if mount.noexec else 0)
    _ensure(mount.target, mount.create or "dir")
    linux.mount(mount.kind, mount.target, mount.kind, flags, mount.data or None)


def _mask(path: str, *, writable: bool = False) -> None:
    """Hide `path`: an empty tmpfs over a folder (writable for a host rootfs's private
    folders such as /run), /dev/null over a file."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return  # the target is masked (or not ours); never mount through a link
    if stat.S_ISDIR(st.st_mode):
        if writable:
            linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=755")
        else:
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY, "size=0")
    else:
        linux.mount("/dev/null", path, None, linux.MS_BIND)


def _read_only(path: str) -> None:
    if not os.path.exists(path):
        return
    linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID
    linux.mount(None, path, None, flags | linux.MS_NODEV | linux.MS_NOEXEC)


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as file:
            file.write(value)
    except OSError as error:
        raise LaunchError(f"sysctl {key}={value}: {error.strerror}") from None


RLIMITS = {
    name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}


def become_process(process: ProcessSpec, *, keep_fds: tuple[int, ...] = ()) -> tuple[str, list]:
    """Drop to the process's user and capabilities; return (path, argv) ready to exec."""
    os.umask(UMASK)
    for limit in process.rlimits:
        resource.setrlimit(RLIMITS[limit.name], (limit.soft, limit.hard))
    os.setgroups(list(process.additional_gids))
    if process.cwd != "/":
        os.makedirs(process.cwd, exist_ok=True)
    search_path = next((e[5:] for e in reversed(process.env) if e.startswith("PATH=")), "")
    executable = resolve_executable(process.argv[0], search_path)
    # A capability outside our own bounding set cannot be granted (a sandboxed host):
    # `privileged` then means every capability we have.
    keep = capability_mask(process.capabilities) & _bounding_set()
    for number in range(linux.last_capability() + 1):
        if not keep & (1 << number):
            linux.prctl(linux.PR_CAPBSET_DROP, number)
    if process.no_new_privileges:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    os.setresgid(process.gid, process.gid, process.gid)
    os.setresuid(process.uid, process.uid, process.uid)
    if process.uid == 0:
        linux.capset(keep, keep, 0)
    os.chdir(process.cwd)
    return executable, [os.fsencode(a) for a in process.argv]


def default_signals() -> None:
    """Every signal at its default action and none blocked, as the process about
    to `execve` should start, as under Docker.

    An exec resets the signals a process catches, but keeps those it ignores
    and blocks. The keeper ignores SIGPIPE (so does any Python program), and
    whatever started the engine may ignore more (`nohup` ignores SIGHUP; systemd
    ignores SIGPIPE). Inherited, SIGPIPE ignored turns `yes | head -1` into write
    errors, and a shell cannot even trap a signal that was ignored when it
    started: `trap ... HUP` silently did nothing, and SIGHUP never reached it.
    Called last before `execve`, so that nothing in between dies of them.
    """
    for number in signal.valid_signals():
        if signal.getsignal(number) is signal.SIG_IGN:
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _bounding_set() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (linux.last_capability() + 1)) - 1


def resolve_executable(name: str, search_path: str) -> str:
    """Find argv[0] the way execvp would, with Docker's words when it is missing."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in search_path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    if "/" in name:
        if os.path.isdir(name):
            raise LaunchError(f'exec: "{name}": is a directory')
        if os.path.exists(name):
            raise LaunchError(f'exec: "{name}": permission denied')
        raise LaunchError(f'exec: "{name}": stat {name}: no such file or directory')
    raise LaunchError(f'exec: "{name}": executable file not found in $PATH')
