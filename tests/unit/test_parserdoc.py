"""The bash completion and the man page are made from the real parser and cover every command and option:
the completion script is run by bash for each command, the man page rendered by groff."""

from __future__ import annotations

import shlex
from pathlib import Path

from builder import run
from builder.cli import build_parser, main
from builder.parserdoc import bash_completion, choices, commands, man_page


def _complete(script: Path, lines: list[str]) -> list[set[str]]:
    """What bash completes for each command line (the last word is the one being completed)."""
    body = [f"source {shlex.quote(str(script))}"]
    for line in lines:
        body += [
            f"COMP_WORDS=({line})",
            "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))",
            "COMPREPLY=()",
            "_imgbuild",
            'echo "${COMPREPLY[*]}"',
        ]
    out = run.run(["bash", "--norc", "-c", "\n".join(body)]).out.splitlines()
    assert len(out) == len(lines)
    return [set(reply.split()) for reply in out]


def test_bash_completes_every_command_and_option(tmp_path: Path, capsys: object) -> None:
    script = tmp_path / "imgbuild.bash"
    assert main(["completion", "bash"]) == 0
    script.write_text(capsys.readouterr().out)  # type: ignore[attr-defined]
    parser = build_parser()
    assert script.read_text() == bash_completion(parser)
    cases: list[tuple[str, set[str]]] = []
    for command in commands(parser):
        words = " ".join(("imgbuild", *command.path))
        options = {s for a in command.options() for s in a.option_strings if s.startswith("--")}
        cases.append((f"{words} --", options))
        if command.subcommands():
            cases.append((f"{words} ''", set(command.subcommands())))
        for action in command.options():
            if choices(action) and action.nargs != 0:
                cases.append((f"{words} {action.option_strings[-1]} ''", set(choices(action))))
    replies = _complete(script, [line for line, _ in cases])
    for (line, expected), reply in zip(cases, replies, strict=True):
        assert reply == expected, line
    assert len(cases) > 50  # every command of imgbuild, not a handful


def test_man_page_has_every_command_and_option(tmp_path: Path, capsys: object) -> None:
    page = tmp_path / "imgbuild.1"
    assert main(["man"]) == 0
    page.write_text(capsys.readouterr().out)  # type: ignore[attr-defined]
    text = page.read_text()
    parser = build_parser()
    assert text == man_page(parser)
    for command in list(commands(parser))[1:]:
        assert '.SS "' + command.name.replace("-", "\\-") + '"' in text  # roff escapes hyphens
        for action in command.options():
            for option in action.option_strings:
                assert f"\\fB{option.replace('-', chr(92) + '-')}\\fR" in text, (command.name, option)
    # groff renders it without a warning (-ww: all warnings), as man does
    rendered = run.run(["groff", "-man", "-Tutf8", "-ww", page])
    assert rendered.stderr == b""
    assert b"imgbuild cache prune" in rendered.stdout
