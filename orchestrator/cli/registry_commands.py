"""Commands that talk to registries: image pull/push, stack pull/push, login/logout."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from orchestrator.spec.errors import StackError


def run_registry_command(args: argparse.Namespace) -> int:
    import trio

    from orchestrator.runtime.images.store import ImageStore

    from .images import state_root

    if args.command in ("login", "logout"):
        return trio.run(_login if args.command == "login" else _logout, args)
    with ImageStore(os.path.join(state_root(), "images")) as store:
        return trio.run(_RUNNERS[(args.command, getattr(args, "image_command", None))], store, args)


def _printer(args: argparse.Namespace) -> Callable[[Any], None] | None:
    from .progress import ProgressPrinter
    from .stack_progress import resolve_mode

    mode = resolve_mode(sys.stderr)  # the global --progress: the display is on stderr
    if getattr(args, "quiet", False) or mode == "quiet":
        return None
    return ProgressPrinter(live=mode == "tty", as_json=mode == "json")


async def _image_pull(store: Any, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.pull import pull_image
    from orchestrator.runtime.images.reference import familiar_name, normalize_reference

    record = await pull_image(store, args.reference, platform=args.platform,
                              progress=_printer(args))
    print(f"Digest: {record.manifest_digest}")
    print(familiar_name(normalize_reference(args.reference)))
    return 0


async def _image_push(store: Any, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.push import push_image

    digest = await push_image(store, args.reference, progress=_printer(args))
    print(f"{args.reference}: digest: {digest}")
    return 0


async def _stack_pull(store: Any, args: argparse.Namespace) -> int:
    """Pull each selected service's image as its `pull_policy` says (compose's default: missing)."""
    import trio

    from orchestrator.runtime.images.pull import pull_image
    from orchestrator.runtime.images.pull_policy import needs_pull
    from orchestrator.runtime.nurseries import open_nursery

    wanted = _images_of_services(args, for_push=False)
    failures: list[str] = []

    async def pull(service: str, image: str, policy: str, platform: str | None) -> None:
        present = await trio.to_thread.run_sync(store.resolve, image) is not None
        last_pulled = await trio.to_thread.run_sync(store.last_pull, image)
        if not needs_pull(policy, present=present, last_pulled=last_pulled, now=time.time()):
            return
        try:
            await pull_image(store, image, platform=platform, progress=_printer(args))
        except StackError as error:
            if not args.ignore_pull_failures:
                raise
            failures.append(f"{service}: {error}")

    async with open_nursery() as nursery:
        for service, image, policy, platform in wanted:
            nursery.start_soon(pull, service, image, policy, platform)
    for failure in failures:
        print(f"warning: {failure}", file=sys.stderr)
    return 0


async def _stack_push(store: Any, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.push import push_image

    for _service, image, _policy, _platform in _images_of_services(args, for_push=True):
        await push_image(store, image, progress=_printer(args))
    return 0


def _images_of_services(
    args: argparse.Namespace, for_push: bool
) -> list[tuple[str, str, str, str | None]]:
    """(service, image, pull_policy, platform) for the selected services that name an image.

    Pushing concerns the services that are built and named (`build` and
    `image`), as in compose; pulling, every service with an image.
    """
    from orchestrator.spec.loader import load_stack

    from .config import options_from

    stack = load_stack(options_from(args))
    names = args.services or list(stack.services)
    unknown = [name for name in names if name not in stack.services]
    if unknown:
        raise StackError(f"no such service: {unknown[0]}", hint="see `stack config --services`")
    selected = []
    for name in names:
        service = stack.services[name]
        image = service.get("image")
        if not image or (for_push and not service.get("build")):
            continue
        policy = service.get("pull_policy") or ("build" if service.get("build") else "missing")
        selected.append((name, image, policy, service.get("platform")))
    return selected


async def _login(args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.registry import Credentials, RegistryClient, save_credentials
    from orchestrator.runtime.images.registry.credentials import registry_of_config_key

    registry = registry_of_config_key(args.server)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else args.password
    if not args.username or password is None:
        raise StackError("login needs -u USERNAME and -p PASSWORD (or --password-stdin)")
    credentials = Credentials(args.username, password)
    async with RegistryClient(registry, credentials=credentials) as client:
        await client.verify_credentials()
    save_credentials(registry, credentials)
    print("Login Succeeded")
    return 0


async def _logout(args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.registry import remove_credentials
    from orchestrator.runtime.images.registry.credentials import registry_of_config_key

    registry = registry_of_config_key(args.server)
    if remove_credentials(registry):
        print(f"Removing login credentials for {registry}")
    else:
        print(f"Not logged in to {registry}")
    return 0


_RUNNERS = {
    ("image", "pull"): _image_pull,
    ("image", "push"): _image_push,
    ("pull", None): _stack_pull,
    ("push", None): _stack_push,
}
