"""`stack config` and `stack graph`: load the stack files and show the result."""

from __future__ import annotations

import argparse
import sys

from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.errors import format_path
from orchestrator.spec.loader import load_stack
from orchestrator.spec.model import Stack


def options_from(args: argparse.Namespace, interpolate: bool = True) -> ProjectOptions:
    return ProjectOptions(
        files=args.files,
        project_directory=args.project_directory,
        project_name=args.project_name,
        env_files=args.env_files,
        profiles=args.profiles,
        interpolate=interpolate,
    )


def _load(args: argparse.Namespace, interpolate: bool = True) -> Stack:
    stack = load_stack(options_from(args, interpolate))
    for message in stack.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return stack


def run_config(args: argparse.Namespace) -> int:
    stack = _load(args, interpolate=not args.no_interpolate)
    if args.quiet:
        return 0
    model = stack.model
    if args.list_services:
        text = _lines(model.get("services") or {})
    elif args.list_volumes:
        text = _lines(model.get("volumes") or {})
    elif args.list_networks:
        text = _lines(model.get("networks") or {})
    elif args.list_images:
        text = _lines(_image_of(stack.name, name, svc) for name, svc in stack.services.items())
    elif args.list_profiles:
        text = _lines(stack.declared_profiles)
    else:
        text = _render(model, args.format, escape=not args.no_interpolate)
        unimplemented = stack.unimplemented_keys()
        if unimplemented:
            keys = ", ".join(format_path(path) for path in unimplemented)
            print(f"note: valid, but not implemented by the engine yet: {keys}", file=sys.stderr)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _render(model: dict, output_format: str, escape: bool) -> str:
    """The model printed as compose prints it, in its JSON or YAML shape."""
    from .render import escape_dollars, json_shape, to_json, to_yaml, yaml_shape

    if escape:
        # Values hold what containers see; written back out, a `$` must be
        # `$$` again so that the output reads back as the same stack.
        model = escape_dollars(model)
    if output_format == "json":
        return to_json(json_shape(model))
    return to_yaml(yaml_shape(model))


def run_graph(args: argparse.Namespace) -> int:
    from orchestrator.spec.graph import build_graph

    graph = build_graph(_load(args).model)
    render = {
        "text": graph.render_text,
        "dot": graph.render_dot,
        "mermaid": graph.render_mermaid,
    }[args.format]
    sys.stdout.write(render())
    return 0


def _image_of(project: str, name: str, service: dict) -> str:
    """The image a service runs; a built service without one is named like compose does."""
    image = (service or {}).get("image")
    return str(image) if image else f"{project}-{name}"


def _lines(items) -> str:
    names = list(items)
    return "".join(f"{name}\n" for name in names)
