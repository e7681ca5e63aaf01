"""tmpfiles.d parsing for /var seeding and the SELinux path mapping: the pure parts of the deploy."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from builder.ostree.deploy import Deployment
from builder.ostree.selinux import SelinuxError, _split, find_file_contexts
from builder.ostree.sysroot import TmpfilesLine, parse_tmpfiles

TMPFILES = """\
# comment
d /var/home 0755 root root -
d /var/roothome 0700 - - -
D! /var/lib/boot-only 0750 svc svc -
v /var/lib/machines 0700 - - -
L+ /var/lib/rpm - - - - ../../usr/share/rpm
L /var/lib/default-link
C /var/cache/apt - - - -
C /var/lib/x - - - - /usr/share/x y
d /var/run/foo 0755 - - -
d /var/lock/foo 0755 - - -
d /run/foo 0755 - - -
d /variable 0755 - - -
d /var/cache/%u 0755 - - -
L /var/lib/spec - - - - /usr/%m
f /var/log/wtmp 0664 root utmp -
z /var/log/journal 2755 root systemd-journal - -
d^ /var/lib/cred 0700 - - -
d /var/tmp ~1777 root root 30d
d /var/odd 07x5 - - -
"""


def test_parse_tmpfiles() -> None:
    lines = list(parse_tmpfiles(TMPFILES))
    assert lines == [
        TmpfilesLine("d", "/var/home", 0o755, "root", "root", None),
        TmpfilesLine("d", "/var/roothome", 0o700, None, None, None),
        TmpfilesLine("D", "/var/lib/boot-only", 0o750, "svc", "svc", None),
        TmpfilesLine("v", "/var/lib/machines", 0o700, None, None, None),
        TmpfilesLine("L", "/var/lib/rpm", None, None, None, "../../usr/share/rpm"),
        TmpfilesLine("L", "/var/lib/default-link", None, None, None, None),
        TmpfilesLine("C", "/var/cache/apt", None, None, None, None),
        TmpfilesLine("C", "/var/lib/x", None, None, None, "/usr/share/x y"),
        TmpfilesLine("d", "/var/tmp", 0o1777, "root", "root", None),
    ]


def _deployment(root: Path) -> Deployment:
    stateroot = root / "ostree/deploy/default"
    return Deployment(
        stateroot / "deploy" / ("c" * 64 + ".0"), "default", "c" * 64, stateroot / "var", (), "6"
    )


def test_selinux_paths_are_looked_up_as_the_booted_system_sees_them(tmp_path: Path) -> None:
    dep = _deployment(tmp_path)
    stateroot = dep.var.parent
    assert _split(tmp_path, dep, "/etc") == (dep.path, dep.path / "etc")
    assert _split(tmp_path, dep, PurePosixPath("/var/log")) == (stateroot, dep.var / "log")
    assert _split(tmp_path, dep, "/boot") == (tmp_path, tmp_path / "boot")
    # host paths under the sysroot are mapped the same way
    assert _split(tmp_path, dep, dep.path / "etc/fstab") == (dep.path, dep.path / "etc/fstab")
    assert _split(tmp_path, dep, dep.var) == (stateroot, dep.var)
    assert _split(tmp_path, dep, dep.path / "var/lib") == (stateroot, dep.var / "lib")
    assert _split(tmp_path, dep, tmp_path / "boot/loader") == (tmp_path, tmp_path / "boot/loader")
    for bad in ("/usr", "/usr/bin", dep.path / "usr/lib", "/", "relative", "/etc/../usr"):
        with pytest.raises(ValueError):
            _split(tmp_path, dep, bad)


def test_find_file_contexts(tmp_path: Path) -> None:
    assert find_file_contexts(tmp_path) is None
    config = tmp_path / "usr/etc/selinux/config"
    config.parent.mkdir(parents=True)
    config.write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    with pytest.raises(SelinuxError, match="no /usr/etc/selinux/targeted/contexts/files/file_contexts"):
        find_file_contexts(tmp_path)
    contexts = tmp_path / "usr/etc/selinux/targeted/contexts/files/file_contexts"
    contexts.parent.mkdir(parents=True)
    contexts.write_text("/etc(/.*)? system_u:object_r:etc_t:s0\n")
    assert find_file_contexts(tmp_path) == contexts
    config.write_text("SELINUXTYPE=../../x\n")
    with pytest.raises(SelinuxError, match="invalid SELINUXTYPE"):
        find_file_contexts(tmp_path)
