"""Shell completion (bash) and a man page, both generated from the argparse parser itself, so that they
cover every command and option the parser has and never drift from it."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from builder import __version__


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # () for imgbuild itself, ("cache", "prune") for `imgbuild cache prune`
    parser: argparse.ArgumentParser
    help: str  # the one line `imgbuild --help` shows for it

    @property
    def name(self) -> str:
        return " ".join(("imgbuild", *self.path))

    def options(self) -> list[argparse.Action]:
        return [a for a in self.parser._actions if a.option_strings]

    def positionals(self) -> list[argparse.Action]:
        return [
            a
            for a in self.parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
        ]

    def subcommands(self) -> list[str]:
        for action in self.parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return list(action.choices)
        return []


def commands(parser: argparse.ArgumentParser) -> Iterator[Command]:
    """imgbuild and every command under it, depth first, in the order `--help` lists them."""

    def walk(path: tuple[str, ...], p: argparse.ArgumentParser, help: str) -> Iterator[Command]:
        yield Command(path, p, help)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    yield from walk((*path, name), sub, helps.get(name, ""))

    yield from walk((), parser, parser.description or "")


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


# ---- bash ----


def _case(entries: dict[str, str], default: str = "") -> str:
    lines = [f"        {shlex.quote(key)}) echo {shlex.quote(value)} ;;" for key, value in entries.items()]
    return "\n".join([*lines, f"        *) {default or 'return 1'} ;;"])


def choices(action: argparse.Action) -> tuple[str, ...]:
    """The values an option takes: argparse's `choices`, or those of a case-insensitive choice type
    (builder.commands.options.choice)."""
    values = action.choices or getattr(action.type, "choices", None) or ()
    return tuple(str(value) for value in values)


def bash_completion(parser: argparse.ArgumentParser) -> str:
    subs: dict[str, str] = {}
    opts: dict[str, str] = {}
    values: dict[str, str] = {}  # "<command path>|<option>" -> its choices ("" for a file or free value)
    for command in commands(parser):
        key = " ".join(command.path)
        subs[key] = " ".join(command.subcommands())
        opts[key] = " ".join(s for a in command.options() for s in a.option_strings)
        for action in command.options():
            if _takes_value(action):
                for option in action.option_strings:
                    values[f"{key}|{option}"] = " ".join(choices(action))
    return f"""# bash completion for imgbuild {__version__}, made from its parser by: imgbuild completion bash
_imgbuild_subs() {{
    case "$1" in
{_case(subs, "echo ''")}
    esac
}}
_imgbuild_opts() {{
    case "$1" in
{_case(opts, "echo ''")}
    esac
}}
_imgbuild_values() {{
    case "$1" in
{_case(values)}
    esac
}}
_imgbuild() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} path="" i w subs values
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        subs=" $(_imgbuild_subs "$path") "
        if [[ $w != -* && $subs == *" $w "* ]]; then
            path=${{path:+$path }}$w
        fi
    done
    if values=$(_imgbuild_values "$path|$prev"); then
        if [[ -n $values ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_imgbuild_opts "$path")" -- "$cur")
        return 0
    fi
    subs=$(_imgbuild_subs "$path")
    if [[ -n $subs ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}}
complete -F _imgbuild imgbuild
"""


# ---- man page (roff, man(7) macros) ----


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.splitlines() or [""]:
        lines.append(f"\\&{line}" if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _expand(action: argparse.Action, help: str) -> str:
    """argparse's %(default)s-style placeholders, as --help shows them."""
    try:
        return help % {**vars(action), "prog": "imgbuild"}
    except (KeyError, TypeError, ValueError):
        return help


def _option(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{_roff(s)}\\fR" for s in action.option_strings)
    if _takes_value(action):
        metavar = action.metavar if isinstance(action.metavar, str) else None
        if metavar is None:
            metavar = "{" + ",".join(choices(action)) + "}" if choices(action) else action.dest.upper()
        names += f" \\fI{_roff(metavar)}\\fR"
    help = _expand(action, action.help or "") if action.help != argparse.SUPPRESS else ""
    return f".TP\n{names}\n{_roff(help)}"


def man_page(parser: argparse.ArgumentParser) -> str:
    out = [
        f'.TH IMGBUILD 1 "" "imgbuild {__version__}" "User Commands"',
        ".SH NAME",
        "imgbuild \\- " + _roff(parser.description or "build bootable disk images"),
        ".SH SYNOPSIS",
        ".B imgbuild",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        "imgbuild turns ostree\\-native and bootc container images into bootable disk images. "
        "Errors in the input are one line and a hint, exit code 2; a failed build exits 1; "
        "an interrupted one 130.",
    ]
    all_commands = list(commands(parser))
    out += [".SH OPTIONS", *(_option(a) for a in all_commands[0].options())]
    out.append(".SH COMMANDS")
    for command in all_commands[1:]:
        out.append(f'.SS "{_roff(command.name)}"')
        usage = command.parser.format_usage().removeprefix("usage: ").strip()
        out += [".nf", _roff(" ".join(usage.split())), ".fi"]
        description = command.parser.description or command.help
        if description:
            out.append(".PP\n" + _roff(description))
        for action in command.positionals():
            out.append(
                f".TP\n\\fI{_roff(str(action.metavar or action.dest))}\\fR\n{_roff(action.help or '')}"
            )
        out += [_option(a) for a in command.options() if a.dest != "help"]
    out += [
        ".SH ENVIRONMENT",
        ".TP\n\\fBIMGBUILD_CACHE\\fR",
        "the cache (default $XDG_CACHE_HOME/imgbuild or ~/.cache/imgbuild); see \\fBimgbuild cache info\\fR",
        ".TP\n\\fBREGISTRY_AUTH_FILE\\fR",
        "the containers auth file with registry credentials (default $XDG_RUNTIME_DIR/containers/auth.json)",
        ".SH SEE ALSO",
        "\\fBskopeo\\fR(1), \\fBostree\\fR(1), \\fBpodman\\fR(1), \\fBcontainers\\-auth.json\\fR(5)",
    ]
    return "\n".join(out) + "\n"
