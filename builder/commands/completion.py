"""`imgbuild completion bash` and `imgbuild man`: shell completion and the man page, from the parser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "completion",
        help="print the shell completion script (bash)",
        description="Prints a bash completion script for every command and option. Install it with: "
        "imgbuild completion bash > /etc/bash_completion.d/imgbuild (or source it from ~/.bashrc).",
    )
    c.add_argument("shell", choices=["bash"], help="the shell (bash)")
    c.set_defaults(func=run_completion)
    m = sub.add_parser(
        "man",
        help="print the man page (roff)",
        description="Prints imgbuild(1), every command and option. Read it with: imgbuild man > imgbuild.1; "
        "man -l imgbuild.1 (or install it as /usr/local/share/man/man1/imgbuild.1).",
    )
    m.set_defaults(func=run_man)


def _parser() -> argparse.ArgumentParser:
    from builder.cli import build_parser  # the parser is made of every command module, this one included

    return build_parser()


def run_completion(args: argparse.Namespace) -> int:
    from builder.parserdoc import bash_completion

    print(bash_completion(_parser()), end="")
    return 0


def run_man(args: argparse.Namespace) -> int:
    from builder.parserdoc import man_page

    print(man_page(_parser()), end="")
    return 0
