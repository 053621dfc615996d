"""The arguments of the verbs that act on a stack's existing containers: `start`, `stop`,
`restart`, `kill`, `rm`, `pause`, `unpause`, `top`, `port`, `wait`, `events`, `images`, `cp`
(parsed for every command: nothing heavy is imported here)."""

from __future__ import annotations

import argparse

LIFECYCLE_COMMANDS = ("start", "stop", "restart", "kill", "rm", "pause", "unpause", "top",
                      "port", "wait", "events", "images", "cp")


def add_lifecycle_commands(commands: argparse._SubParsersAction) -> None:
    def with_services(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("services", nargs="*", metavar="SERVICE")
        return parser

    with_services("start", "start the stack's stopped containers")
    stop = with_services("stop", "stop the stack's containers (their restart policy waits)")
    stop.add_argument("-t", "--timeout", type=int, default=None,
                      help="seconds to wait before SIGKILL (default: each stop_grace_period)")
    restart = with_services("restart", "restart the stack's containers")
    restart.add_argument("-t", "--timeout", type=int, default=None,
                         help="seconds to wait before SIGKILL when stopping")
    kill = with_services("kill", "send a signal to the stack's running containers")
    kill.add_argument("-s", "--signal", default="SIGKILL", help="the signal (default SIGKILL)")
    remove = with_services("rm", "remove the stack's stopped containers")
    remove.add_argument("-f", "--force", action="store_true", help="do not ask to confirm")
    remove.add_argument("-s", "--stop", action="store_true", help="stop the containers first")
    remove.add_argument("-v", "--volumes", action="store_true",
                        help="also remove the containers' anonymous volumes")
    with_services("pause", "pause the stack's running containers")
    with_services("unpause", "unpause the stack's paused containers")
    with_services("top", "show the processes running in the stack's containers")

    port = commands.add_parser("port", help="print the public address of a service's port")
    port.add_argument("service", metavar="SERVICE")
    port.add_argument("private_port", nargs="?", type=int, metavar="PRIVATE_PORT")
    port.add_argument("--protocol", choices=("tcp", "udp"), default="tcp")
    port.add_argument("--index", type=int, default=1, help="which replica (default 1)")

    wait = commands.add_parser("wait", help="wait for the services' containers to stop; "
                                            "the exit code is the last one's")
    wait.add_argument("services", nargs="+", metavar="SERVICE")
    wait.add_argument("--down-project", action="store_true",
                      help="take the project down once the first container stops")

    events = with_services("events", "stream the stack's container events")
    events.add_argument("--json", action="store_true", help="one JSON object a line")

    images = with_services("images", "list the images the stack's containers use")
    images.add_argument("--format", choices=("table", "json"), default="table")
    images.add_argument("-q", "--quiet", action="store_true", help="only image ids")

    copy = commands.add_parser(
        "cp", help="copy files between a service's container and the host",
        description="SRC and DEST: a host path, '-' (a tar on stdin or stdout), or "
                    "SERVICE:PATH / CONTAINER:PATH. The container must be running and "
                    "have tar (busybox's will do).")
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("destination", metavar="DEST")
    copy.add_argument("--index", type=int, default=None,
                      help="which replica (default: the first to copy from, all to copy to)")
    copy.add_argument("-a", "--archive", action="store_true",
                      help="keep the files' uid and gid")
    copy.add_argument("-L", "--follow-link", action="store_true",
                      help="copy what a symbolic link in SRC points to")
