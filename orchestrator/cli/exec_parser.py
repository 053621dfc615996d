"""The arguments of `exec` and `run` (parsed for every command: nothing heavy is imported here).

Everything after SERVICE is the command, options included (`stack exec web ls -l`),
as with compose.
"""

from __future__ import annotations

import argparse


def add_exec_commands(commands: argparse._SubParsersAction) -> None:
    exec_ = commands.add_parser("exec", help="run a command in a running service container")
    exec_.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true",
                       help="no pseudo-terminal (the default when stdin is not a terminal)")
    exec_.add_argument("-u", "--user", metavar="USER", help="user[:group], names or ids")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                       help="set an environment variable (KEY alone: its value here)")
    exec_.add_argument("-w", "--workdir", metavar="DIR", help="working directory")
    exec_.add_argument("--index", type=int, default=1, metavar="N",
                       help="which container of the service (default 1)")
    exec_.add_argument("-d", "--detach", action="store_true", help="run in the background")
    exec_.add_argument("service", metavar="SERVICE")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")

    run = commands.add_parser("run", help="run a one-off command in a new service container")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background and print the container's id")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                     help="set an environment variable (KEY alone: its value here)")
    run.add_argument("--entrypoint", metavar="CMD", help="replace the image's entrypoint")
    run.add_argument("--name", help="name the container (default <project>-<service>-run-<id>)")
    run.add_argument("--no-deps", action="store_true", help="do not start linked services")
    run.add_argument("--service-ports", action="store_true",
                     help="publish the service's ports (not published otherwise)")
    run.add_argument("-v", "--volume", dest="volumes", action="append", default=[],
                     metavar="[SOURCE:]TARGET[:MODE]", help="mount a volume too")
    run.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true",
                     help="no pseudo-terminal (the default when stdin is not a terminal)")
    run.add_argument("-u", "--user", metavar="USER", help="run as this user[:group]")
    run.add_argument("-w", "--workdir", metavar="DIR", help="working directory")
    run.add_argument("service", metavar="SERVICE")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")
