"""composefs_policy(): what the image's prepare-root.conf asks and the kernel arguments it needs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import NotBootable
from builder.ostree.prepareroot import DISABLE_COMPOSEFS_KARG, Composefs, composefs_policy


def _tree(tmp_path: Path, **files: str) -> Path:
    names = {"usr": "usr/lib/ostree/prepare-root.conf", "etc": "etc/ostree/prepare-root.conf"}
    for key, text in files.items():
        path = tmp_path / names[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_no_config_needs_nothing(tmp_path: Path) -> None:
    decision = composefs_policy(tmp_path)
    assert decision.composefs is Composefs.NO
    assert decision.kargs == () and decision.reason is None and decision.sources == ()


@pytest.mark.parametrize("value", ["yes", "true", "1", "Yes", "verity", "signed"])
def test_enabled_composefs_is_turned_off_by_karg(tmp_path: Path, value: str) -> None:
    decision = composefs_policy(_tree(tmp_path, usr=f"# bootc\n[composefs]\nenabled = {value}\n"))
    assert decision.kargs == (DISABLE_COMPOSEFS_KARG,)
    assert decision.reason is not None and "2022.7" in decision.reason and value in decision.reason
    assert decision.sources == (Path("usr/lib/ostree/prepare-root.conf"),)
    assert bool(decision.warnings) == (value in ("verity", "signed"))


@pytest.mark.parametrize("value", ["no", "false", "0", "maybe"])
def test_off_or_maybe_needs_nothing(tmp_path: Path, value: str) -> None:
    decision = composefs_policy(_tree(tmp_path, usr=f"[composefs]\nenabled={value}\n"))
    assert decision.kargs == ()


def test_etc_overrides_usr_lib(tmp_path: Path) -> None:
    tree = _tree(tmp_path, usr="[composefs]\nenabled = yes\n", etc="[composefs]\nenabled = no\n")
    decision = composefs_policy(tree)
    assert decision.composefs is Composefs.NO and decision.kargs == ()
    assert len(decision.sources) == 2


def test_keys_are_case_sensitive_like_gkeyfile(tmp_path: Path) -> None:
    decision = composefs_policy(_tree(tmp_path, usr="[composefs]\nEnabled = yes\n"))
    assert decision.kargs == ()


def test_root_transient_is_reported(tmp_path: Path) -> None:
    decision = composefs_policy(_tree(tmp_path, usr="[composefs]\nenabled = yes\n[root]\ntransient = true\n"))
    assert decision.root_transient
    assert any("transient" in w for w in decision.warnings)


@pytest.mark.parametrize(
    "text",
    ["[composefs]\nenabled = perhaps\n", "[root]\ntransient = sometimes\n", "enabled = yes\n", "\xff"],
)
def test_bad_config_is_not_bootable(tmp_path: Path, text: str) -> None:
    with pytest.raises(NotBootable):
        composefs_policy(_tree(tmp_path, usr=text))
