"""Reading the host's apt sources in both formats."""

from __future__ import annotations

from pathlib import Path

from builder.aptsources import host_archives


def test_one_line_and_deb822(tmp_path: Path) -> None:
    one = tmp_path / "sources.list"
    one.write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
    )
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://other.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nEnabled: no\nURIs: http://off.invalid/x\nSuites: trixie\nComponents: main\n"
    )
    (d / "extra.list").write_text("deb http://extra.invalid/debian sid main\n")
    assert host_archives(one, d) == {
        "bookworm": "http://mirror.invalid/debian",
        "bookworm-updates": "http://other.invalid/debian",
        "bookworm-security": "http://security.invalid/debian-security",
        "sid": "http://extra.invalid/debian",
    }


def test_nothing_configured(tmp_path: Path) -> None:
    assert host_archives(tmp_path / "none", tmp_path / "none.d") == {}
