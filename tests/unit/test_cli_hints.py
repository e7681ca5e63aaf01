"""Every hint in the code names options and commands that exist: the hints are read from the source
(tests/unit/hints.py finds every `hint=` keyword in builder/ and targets/) and checked against the real
parsers. And every option of every command has help text."""

from __future__ import annotations

import argparse
import re

import pytest

from builder.cli import build_parser
from tests.unit.hints import INVOCATION, OPTION, Command, Hint, commands, hints

# Words after "imgbuild" in hints that are prose, not a command ("run imgbuild as root").
PROSE = {"as", "writes", "does", "or", "encapsulation", "needs", "reads", "was"}
# Options of other programs that hints name, and the program.
OTHER_TOOLS = {"--system-site-packages": "python3 -m venv"}
# Where the options of an `imgbuild CMD ...` invocation in a hint end.
CLAUSE_END = re.compile(r",|;|`|\(|\)| or | and |\. ")

COMMANDS = commands()
ALL_OPTIONS = frozenset().union(*(c.options for c in COMMANDS.values()))
HINTS = hints()


def _known(option: str, among: frozenset[str]) -> bool:
    if option.endswith("*"):  # `--aws-*`: a family of options
        return any(o.startswith(option[:-1]) for o in among)
    return option in among


def _command(words: list[str]) -> tuple[Command, list[str]]:
    """The (sub)command `imgbuild WORDS...` runs, and the words it did not consume."""
    command = COMMANDS[("imgbuild",)]
    while words and words[0] in command.subcommands:
        command = COMMANDS[(*command.words, words[0])]
        words = words[1:]
    return command, words


def problems(text: str) -> list[str]:
    wrong = []
    for match in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*\*?)", text):
        option = match.group(1)
        if option not in OTHER_TOOLS and not _known(option, ALL_OPTIONS):
            wrong.append(f"no command has {option}")
    for match in INVOCATION.finditer(text):
        words = match.group(1).split()
        if words[0] in PROSE:
            continue
        command, rest = _command(words)
        if command.words == ("imgbuild",):
            wrong.append(f"no command `imgbuild {words[0]}`")
            continue
        if command.subcommands and rest and rest[0].islower():
            wrong.append(f"`{' '.join(command.words)}` has no subcommand {rest[0]}")
        clause = CLAUSE_END.split(text[match.end() :], maxsplit=1)[0]
        for option in OPTION.findall(clause):
            if not _known(option, command.options):
                wrong.append(f"`{' '.join(command.words)}` has no {option}")
    return wrong


def test_the_hints_were_found() -> None:
    """The finder sees the hints (a broken finder would make the next test pass on nothing)."""
    assert len(HINTS) > 150
    texts = [hint.text for hint in HINTS]
    assert "set IMGBUILD_CACHE (or pass --cache) to a writable directory" in texts
    assert any(text.startswith("did you mean {}:") for text in texts)  # an f-string, fields as {}


@pytest.mark.parametrize("hint", HINTS, ids=lambda hint: hint.where)
def test_every_hint_names_options_and_commands_that_exist(hint: Hint) -> None:
    assert not problems(hint.text), f"{hint.where}: {hint.text!r}"


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("pass --output-fmt json", "no command has --output-fmt"),
        ("imgbuild inspect REF --output DIR", "`imgbuild inspect` has no --output"),
        ("imgbuild biuld MANIFEST", "no command `imgbuild biuld`"),
        ("imgbuild blueprint chek FILE", "`imgbuild blueprint` has no subcommand chek"),
        ("imgbuild plan qcow2 REF --outptu x", "no command has --outptu"),
    ],
)
def test_the_check_catches_wrong_hints(text: str, wrong: str) -> None:
    assert wrong in problems(text)


@pytest.mark.parametrize(
    "text",
    [
        "imgbuild build --type qcow2 REF ..., or imgbuild build MANIFEST",
        "run imgbuild as root, e.g. with sudo",
        "leave out the --aws-* options",
        "imgbuild blueprint check FILE --image REF",
    ],
)
def test_the_check_accepts_right_hints(text: str) -> None:
    assert problems(text) == []


def _walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("imgbuild",)
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(words, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _walk(child, (*words, name))
    return found


PARSERS = _walk(build_parser())


def test_every_option_and_argument_has_help() -> None:
    """Hidden options (SUPPRESS: another tool's option refused with its reason) count as documented."""
    missing = [
        f"{' '.join(words)} {'/'.join(action.option_strings) or action.dest}"
        for words, parser in PARSERS
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_every_command_has_help() -> None:
    missing = [
        f"{' '.join(words)} {name}"
        for words, parser in PARSERS
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
        if not any(choice.dest == name and choice.help for choice in action._choices_actions)
    ]
    assert missing == []


def test_no_parser_takes_abbreviations() -> None:
    assert all(not parser.allow_abbrev for _, parser in PARSERS)
