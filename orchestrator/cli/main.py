"""The `stack` command line.

Starts fast: each command imports only what it needs, so `stack version`
loads no YAML and `stack config` loads no engine client. A user's mistake
ends in one line on stderr and exit code 1; a usage mistake exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .exec_parser import add_exec_commands
from .lifecycle_parser import LIFECYCLE_COMMANDS, add_lifecycle_commands
from .networks import add_network_commands
from .stack_parser import add_stack_commands
from .volumes import add_volume_commands

EXIT_INVALID = 1
EXIT_USAGE = 2


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only its verb's part is built (see `_OneVerb`)."""
    parser = argparse.ArgumentParser(
        prog="stack",
        description="Declarative multi-container stacks from compose files.",
    )
    parser.add_argument("-f", "--file", dest="files", action="append", default=[],
                        metavar="FILE", help="stack file (repeatable; '-' reads stdin)")
    parser.add_argument("-p", "--project-name", metavar="NAME", help="project name")
    parser.add_argument("--project-directory", metavar="DIR",
                        help="project directory (default: the first file's directory)")
    parser.add_argument("--env-file", dest="env_files", action="append", default=[],
                        metavar="FILE", help="environment file (repeatable; default: .env)")
    parser.add_argument("--profile", dest="profiles", action="append", default=[],
                        metavar="NAME", help="enable a profile (repeatable)")
    parser.add_argument("--progress", choices=("auto", "tty", "plain", "quiet", "json"),
                        help="how to show progress (default: $COMPOSE_PROGRESS, else auto: "
                             "tty on a terminal, plain otherwise)")
    commands: Any = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    verb = _verb_in(parser, argv) if argv is not None else None
    if verb is not None:
        commands = _OneVerb(commands, verb)

    config = commands.add_parser("config", help="validate and print the normalized stack")
    config.add_argument("--format", choices=("yaml", "json"), default="yaml")
    config.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    config.add_argument("-q", "--quiet", action="store_true", help="only validate")
    config.add_argument("--no-interpolate", action="store_true",
                        help="do not substitute ${VARIABLES}")
    listing = config.add_mutually_exclusive_group()
    for name in ("services", "volumes", "networks", "images", "profiles"):
        listing.add_argument(f"--{name}", dest=f"list_{name}", action="store_true",
                             help=f"print the {name}, one a line")

    graph = commands.add_parser("graph", help="draw the service dependency graph")
    graph.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")

    _add_image_commands(commands)
    add_volume_commands(commands)
    add_network_commands(commands)
    add_stack_commands(commands)
    add_exec_commands(commands)
    add_lifecycle_commands(commands)

    version = commands.add_parser("version", help="print the version")
    version.add_argument("--short", action="store_true", help="print only the number")
    if isinstance(commands, _OneVerb) and not commands.found:
        return build_parser()  # not a verb (a typo, or help): argparse needs them all
    return parser


def _verb_in(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The first word of the command line that is neither a global option nor its value."""
    takes_value = {option for action in parser._actions if action.nargs != 0
                   for option in action.option_strings}
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word in takes_value:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


class _OneVerb:
    """Builds the parser of one verb only.

    Each verb's parser costs a fraction of a millisecond, and there are some
    fifty of them: building them all was a good part of a `stack ps`. The
    verb a command line names is known before they are built; the others are
    made into nothing (`_Nothing`) unless help or a mistake needs them.
    """

    def __init__(self, commands: argparse._SubParsersAction, verb: str) -> None:
        self.commands = commands
        self.verb = verb
        self.found = False

    def add_parser(self, name: str, **options: Any) -> Any:
        if name != self.verb and self.verb not in options.get("aliases", ()):
            return _NOTHING
        self.found = True
        return self.commands.add_parser(name, **options)


class _Nothing:
    """Takes any call and any attribute, and does nothing."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self


_NOTHING = _Nothing()


def _add_image_commands(commands: argparse._SubParsersAction) -> None:
    image = commands.add_parser("image", help="manage images in the local store")
    verbs = image.add_subparsers(dest="image_command", metavar="COMMAND")
    verbs.required = True

    def listing(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=("table", "json"), default="table")
        parser.add_argument("-q", "--quiet", action="store_true", help="only image ids")

    listing(verbs.add_parser("ls", help="list images"))
    load = verbs.add_parser("load", help="load images from a docker-archive or OCI layout")
    load.add_argument("-i", "--input", default="-", metavar="FILE",
                      help="archive file or OCI layout directory ('-': stdin)")
    save = verbs.add_parser("save", help="write images to a docker-archive")
    save.add_argument("-o", "--output", required=True, metavar="FILE")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    imported = verbs.add_parser("import", help="make an image from a root filesystem tar")
    imported.add_argument("rootfs", metavar="ROOTFS.tar")
    imported.add_argument("reference", metavar="NAME[:TAG]")
    inspect = verbs.add_parser("inspect", help="show an image's manifest and config as JSON")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    remove = verbs.add_parser("rm", help="remove images")
    remove.add_argument("-f", "--force", action="store_true",
                        help="remove even if a container uses it")
    remove.add_argument("images", nargs="+", metavar="IMAGE")
    tag = verbs.add_parser("tag", help="give an image another name")
    tag.add_argument("source", metavar="IMAGE")
    tag.add_argument("target", metavar="NAME[:TAG]")
    verbs.add_parser("prune", help="remove layers and blobs no image uses")
    pull = verbs.add_parser("pull", help="download an image from a registry")
    pull.add_argument("--platform", default="linux/amd64", help="os/arch[/variant] of an index")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    pull.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    push = verbs.add_parser("push", help="upload an image to its registry")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    push.add_argument("reference", metavar="NAME[:TAG]")

    stack_pull = commands.add_parser("pull", help="pull the images of the stack's services")
    stack_pull.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    stack_pull.add_argument("--ignore-pull-failures", action="store_true",
                            help="warn about images that cannot be pulled, and go on")
    stack_pull.add_argument("services", nargs="*", metavar="SERVICE")
    stack_push = commands.add_parser("push", help="push the images of the stack's built services")
    stack_push.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    stack_push.add_argument("services", nargs="*", metavar="SERVICE")

    login = commands.add_parser("login", help="save credentials for a registry")
    login.add_argument("server", nargs="?", default="docker.io", metavar="SERVER")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    logout = commands.add_parser("logout", help="forget the credentials for a registry")
    logout.add_argument("server", nargs="?", default="docker.io", metavar="SERVER")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if args.command == "version":
        from orchestrator import __version__

        print(__version__ if args.short else f"stack version {__version__}")
        return 0

    from orchestrator.spec.errors import StackError

    if args.progress is not None:
        from .stack_progress import set_mode

        set_mode(args.progress)
    try:
        if args.command == "config":
            from .config import run_config

            return run_config(args)
        if args.command == "graph":
            from .config import run_graph

            return run_graph(args)
        if args.command in ("pull", "push", "login", "logout") or (
            args.command == "image" and args.image_command in ("pull", "push")
        ):
            from .registry_commands import run_registry_command

            return run_registry_command(args)
        if args.command in LIFECYCLE_COMMANDS:
            from .lifecycle_commands import run_lifecycle

            return run_lifecycle(args)
        if args.command == "image":
            from .images import run_image

            return run_image(args)
        if args.command == "volume":
            from .volumes import run_volume

            return run_volume(args)
        if args.command == "network":
            from .networks import run_network

            return run_network(args)
        if args.command in ("exec", "run"):
            from .exec_commands import run_exec

            return run_exec(args)
        if args.command in ("up", "down", "ps", "logs", "ls", "engine"):
            from .stack_commands import run_stack_command

            return run_stack_command(args)
    except StackError as error:
        error.name_files_relative_to(os.getcwd())
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        return 0
    except OSError as error:
        # The machine said no (a full disk, a permission, a file gone): one line, as
        # for a user's mistake, not a traceback.
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a command


def entry() -> None:
    """The `stack` command: main(), then out without tearing the interpreter down.

    Freeing every module and object at exit costs a short command several
    milliseconds and achieves nothing the kernel does not do anyway; what is
    buffered is flushed first, and nothing of ours waits for exit handlers.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
