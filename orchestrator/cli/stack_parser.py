"""The arguments of `up`, `down`, `ps`, `logs`, `ls` and `engine` (parsed for every command:
nothing heavy is imported here)."""

from __future__ import annotations

import argparse


def add_stack_commands(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser("up", help="create and start the stack's containers")
    up.add_argument("-d", "--detach", action="store_true", help="return once started")
    up.add_argument("--force-recreate", action="store_true")
    up.add_argument("--no-recreate", action="store_true")
    up.add_argument("--no-deps", action="store_true")
    up.add_argument("--no-start", action="store_true")
    up.add_argument("--remove-orphans", action="store_true")
    up.add_argument("--scale", action="append", default=[], metavar="SERVICE=N")
    up.add_argument("-t", "--timeout", type=int, default=None)
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.add_argument("--wait", action="store_true",
                    help="wait until the services are running or healthy (implies -d)")
    up.add_argument("--wait-timeout", type=int, default=None, metavar="SECONDS")
    up.add_argument("--abort-on-container-exit", action="store_true",
                    help="stop every container when one stops")
    up.add_argument("--exit-code-from", metavar="SERVICE",
                    help="exit with this service's exit code (implies the option above)")
    up.add_argument("--no-color", action="store_true", help="monochrome log prefixes")
    up.add_argument("--no-log-prefix", action="store_true", help="no `web-1  | ` before lines")
    up.add_argument("--timestamps", action="store_true", help="show the log lines' times")
    up.add_argument("services", nargs="*", metavar="SERVICE")
    down = commands.add_parser("down", help="stop and remove the stack's containers")
    down.add_argument("-v", "--volumes", action="store_true", help="remove volumes too")
    down.add_argument("--remove-orphans", action="store_true")
    down.add_argument("--rmi", choices=("local", "all"),
                      help="remove the services' images: 'local' only those built without "
                           "an image name, 'all' every one")
    down.add_argument("-t", "--timeout", type=int, default=None)
    ps = commands.add_parser("ps", help="list the stack's containers")
    ps.add_argument("-a", "--all", action="store_true", help="stopped ones too")
    ps.add_argument("-q", "--quiet", action="store_true", help="only ids")
    ps.add_argument("--services", action="store_true", help="only service names")
    ps.add_argument("--format", choices=("table", "json"), default="table")
    ps.add_argument("--status", action="append", default=[],
                    choices=("paused", "restarting", "removing", "running", "dead", "created",
                             "exited"),
                    help="only containers in this state (repeatable)")
    logs = commands.add_parser("logs", help="show the output of the stack's containers")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", default="all")
    logs.add_argument("-t", "--timestamps", action="store_true")
    logs.add_argument("--no-log-prefix", action="store_true", help="no `web-1  | ` before lines")
    logs.add_argument("--since", help="only after: a time (RFC 3339, Unix) or a duration ago")
    logs.add_argument("--until", help="only before: a time or a duration ago")
    logs.add_argument("--no-color", action="store_true",
                      help="monochrome prefixes (the default when not on a terminal)")
    logs.add_argument("services", nargs="*", metavar="SERVICE")
    commands.add_parser("ls", help="list the stacks the engine runs")
    engine = commands.add_parser("engine", help="the stack engine (stackd)")
    verbs = engine.add_subparsers(dest="engine_command", metavar="COMMAND")
    verbs.required = True
    verbs.add_parser("status", help="whether the engine runs, and where")
    verbs.add_parser("stop", help="stop the engine (containers keep running)")
