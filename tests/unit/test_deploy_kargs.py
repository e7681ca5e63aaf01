"""image_kargs(): the kernel arguments of the image's /usr/lib/bootc/kargs.d, as bootc applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.arch import Arch
from builder.errors import NotBootable
from builder.ostree.imageconfig import KARGS_DIR, image_kargs


def _kargs_d(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / KARGS_DIR
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text)
    return tmp_path


def test_no_directory(tmp_path: Path) -> None:
    assert image_kargs(tmp_path, Arch.X86_64) == ()


def test_order_and_architectures(tmp_path: Path) -> None:
    tree = _kargs_d(
        tmp_path,
        b="kargs = ['quiet', 'mitigations=auto,nosmt']\n",
        a="kargs = ['console=ttyS0,115200n8']\nmatch-architectures = ['x86_64']\n",
        c="kargs = ['console=ttyAMA0']\nmatch-architectures = ['aarch64']\n",
        d="# nothing\n",
    )
    (tree / KARGS_DIR / "ignored.conf").write_text("kargs = ['not-toml-suffix']\n")
    assert image_kargs(tree, Arch.X86_64) == ("console=ttyS0,115200n8", "quiet", "mitigations=auto,nosmt")
    assert image_kargs(tree, Arch.AARCH64) == ("quiet", "mitigations=auto,nosmt", "console=ttyAMA0")


@pytest.mark.parametrize(
    "text",
    [
        "kargs = 'quiet'\n",
        "kargs = ['']\n",
        "kargs = [1]\n",
        "kargs = ['quiet']\nmatch-architectures = 'x86_64'\n",
        "kargs = ['quiet']\nunknown = 1\n",
        "kargs = [\n",
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(NotBootable, match=r"kargs\.d"):
        image_kargs(_kargs_d(tmp_path, bad=text), Arch.X86_64)
