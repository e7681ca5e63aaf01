"""Command-line entry point: argument parsing and error reporting only.

Each command lives in its own module under builder/commands/ and exposes
`register(subparsers) -> None`, which adds its parser and sets `func` to a callable taking the parsed
namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from builder import __version__
from builder.commands.options import Parser
from builder.errors import ImgbuildError

# The commands, in the order `imgbuild --help` lists them. One line per module under builder/commands/.
COMMAND_MODULES: tuple[str, ...] = (
    "builder.commands.inspect",
    "builder.commands.import_",
    "builder.commands.image",
    "builder.commands.upload",
    "builder.commands.example",
    "builder.commands.encapsulate",
    "builder.commands.serve",
    "builder.commands.worker",
    "builder.commands.workers_client",
    "builder.commands.blueprints_client",
    "builder.commands.compose_client",
    "builder.commands.blueprint",
    "builder.commands.boot",
    "builder.commands.cache",
    "builder.commands.completion",
)

log = logging.getLogger("imgbuild")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="imgbuild",
        description="Build bootable disk images from ostree-native and bootc container images.",
    )
    parser.add_argument("--version", action="version", version=f"imgbuild {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _print_notes(error: BaseException) -> None:
    """Errors noted beside the first one (a mount that could not be released while it unwound)."""
    for note in getattr(error, "__notes__", ()):
        print(f"imgbuild: {note}", file=sys.stderr)


def report(error: ImgbuildError, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"imgbuild: error: {error.message}", file=sys.stderr)
    _print_notes(error)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that went away (`imgbuild ... | head`) ends it quietly with 141, as SIGPIPE
    would, wherever the write failed (argparse's help, a command's output, the final flush)."""
    try:
        try:
            code = _main(argv)
        except SystemExit:  # argparse after --help, --version or a usage error
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at interpreter exit, where a failure would print a traceback
        return code
    except BrokenPipeError:
        # Python's last flush of stdout at exit would fail again: point stdout at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        # Argument types (an architecture, a size) may raise ImgbuildError, which argparse lets through.
        args = parser.parse_args(argv)
    except ImgbuildError as e:
        return report(e, debug=False)
    setup_logging(args.verbose, args.debug)
    try:
        return int(args.func(args))
    except ImgbuildError as e:
        return report(e, args.debug)
    except BrokenPipeError:  # before OSError, which it is a kind of: stdout closed early (`| head`)
        return 141
    except OSError as e:
        if e.filename is None:
            raise
        # A path the user gave that cannot be used (missing parent, no permission, no space).
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        message = ImgbuildError(
            f"cannot use {where}: {e.strerror}",
            hint="check the path and its permissions (--debug shows where)",
        )
        return report(message, args.debug)
    except KeyboardInterrupt as e:
        print("imgbuild: interrupted", file=sys.stderr)
        _print_notes(e)
        return 130
