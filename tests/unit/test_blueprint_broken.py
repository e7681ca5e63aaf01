"""Broken blueprints (tests/data/blueprints/): one line naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from builder import run
from builder.cli import main
from builder.paths import PROJECT_ROOT

BROKEN = PROJECT_ROOT / "tests" / "data" / "blueprints"

# Each fixture and a fragment its error line must contain: the line number where the parser or locator
# knows it, the key path and the reason.
EXPECTED = {
    "syntax.toml": ":2: not valid TOML",
    "syntax.json": ":4: not valid JSON",
    "syntax.yaml": ": not valid YAML",
    "duplicate-key.json": "duplicate key 'name'",
    "duplicate-key.yaml": ":2: not valid YAML: duplicate key 'name'",
    "not-utf8.toml": "not UTF-8",
    "not-a-table.json": "must be a table of keys",
    "date-value.toml": ":2: version: dates and times are not accepted",
    "unknown-key-top.toml": ":1: nmae: unknown key",
    "unknown-key-user.toml": ":5: customizations.user[0].passwd: unknown key",
    "unknown-key.json": ":4: customizations.sshd.PermitRootLogin: unknown key",
    "unknown-key.yaml": ":3: customizations.locale.language: unknown key",
    "lvm-key-on-plain.toml": ":6: customizations.disk.partitions[0].logical_volumes: unknown key",
    "wrong-type-groups.toml": ":6: customizations.user[1].groups: must be a list, not a string",
    "wrong-type-uid.json": "customizations.user[0].uid: must be an integer, not a string",
    "wrong-type-fips.yaml": ":2: customizations.fips: must be true or false, not a string",
    "user-missing-name.toml": "customizations.user[0].name: name is required",
    "bad-version.toml": ":2: version: '1.0' must use Semantic Versioning",
    "bad-hostname.toml": ":2: customizations.hostname: 'bad_host!' must be a host name",
    "bad-mode.toml": ":3: customizations.files[0].mode: '0999' must be an octal mode",
    "bad-timezone.toml": ":2: customizations.timezone.timezone:",
    "bad-service-name.yaml": ":4: customizations.services.enabled[0]: 'ssh d' must be a systemd unit name",
    "bad-kernel-append.toml": ":2: customizations.kernel.append: cannot be split",
    "bad-size-unit.toml": ":3: customizations.filesystem[0].minsize: '10 GiBs' must be a size",
    "bad-size-zero.toml": ":3: customizations.filesystem[0].minsize: must be greater than 0",
    "bad-size-negative.json": "customizations.filesystem[0].minsize: -5 must be a size",
    "bad-size-fraction.toml": ":3: customizations.filesystem[0].minsize: '1.5 B' is not a whole number",
    "size-and-minsize.toml": ":4: customizations.filesystem[0].size: size is an alias of minsize",
    "partition-no-minsize.toml": "customizations.disk.partitions[0].minsize: minsize is required",
    "forbidden-file-usr.toml": ":2: customizations.files[0].path: file '/usr/bin/evil' is not allowed: /usr",
    "forbidden-file-passwd.toml": ":2: customizations.files[0].path: file '/etc/passwd' is not allowed",
    "forbidden-directory.toml": ":2: customizations.directories[0].path: directory '/var/lib/foo' is not",
    "noncanonical-path.toml": ":2: customizations.files[0].path: path '/etc/../etc/foo' must be canonical",
    "relative-path.toml": ":2: customizations.files[0].path: path 'etc/foo' must be absolute",
    "file-under-file.toml": ":5: customizations.files[1].path: its parent /etc/foo is a file",
    "refused-packages.toml": ":3: packages: refused: the container image is immutable",
    "refused-modules.toml": ":1: modules: refused: the container image is immutable",
    "refused-groups.toml": ":1: groups: refused: the container image is immutable",
    "refused-enabled-modules.json": "enabled_modules: refused",
    "refused-containers.toml": ":1: containers: refused",
    "refused-repositories.toml": ":1: customizations.repositories: refused",
    "refused-kernel-name.toml": ":2: customizations.kernel.name: refused",
    "refused-openscap.toml": ":1: customizations.openscap: refused",
    "refused-rpm.toml": ":1: customizations.rpm: refused",
    "refused-rhsm.yaml": ":2: customizations.rhsm: refused",
    "refused-fdo.toml": ":1: customizations.fdo: refused",
    "refused-installer.toml": ":2: customizations.installer.kickstart: refused: imgbuild's installer is not",
    "installation-device-relative.toml": "customizations.installation_device: 'vda' must be a device path",
    "refused-firewall.toml": ":1: customizations.firewall: refused",
    "disk-and-filesystem.toml": "customizations.disk: cannot combine disk and filesystem customizations",
    "duplicate-mountpoint.toml": ":6: customizations.filesystem[1].mountpoint: duplicate mount point",
    "var-mountpoint.toml": ':2: customizations.filesystem[0].mountpoint: mount point "/var" is not allowed',
    "var-home-mountpoint.toml": "mount point '/var/home/alice' is not allowed",
    "opt-mountpoint.toml": "mount point '/opt' is not allowed",
    "dos-too-many.toml": "customizations.disk.partitions: a dos disk holds at most 4 partitions",
    "boot-on-lv.toml": ":8: customizations.disk.partitions[0].logical_volumes[0].mountpoint: /boot cannot be",
    "btrfs-no-subvolumes.toml": "customizations.disk.partitions[0].subvolumes: subvolumes is required",
    "home-under-usr.toml": ":3: customizations.user[0].home: home '/usr/share/svc' is not writable",
    "passwd-injection.toml": ":3: customizations.user[0].description: must not contain ':'",
    "duplicate-user.toml": ":5: customizations.user[1].name: duplicate user name: alice",
    "duplicate-group.toml": ":5: customizations.group[1].name: duplicate group name: dev",
    "duplicate-uid.toml": ":7: customizations.user[1].uid: duplicate user ID: 1500",
    "duplicate-gid.toml": ":7: customizations.group[1].gid: duplicate group ID: 3000",
    "service-contradiction.toml": ":3: customizations.services.masked[0]: sshd.service is also in",
    "ignition-both.toml": "customizations.ignition.firstboot: embedded and firstboot cannot both be set",
    "ignition-not-base64.toml": ":2: customizations.ignition.embedded.config: must be a base64-encoded",
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in BROKEN.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_gives_one_line_and_exit_2(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = BROKEN / name
    assert main(["blueprint", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), captured.err
    assert lines[0].startswith(f"imgbuild: error: {path}"), lines[0]
    assert EXPECTED[name] in lines[0], lines[0]


def test_check_as_a_real_process() -> None:
    broken = run.run(
        [sys.executable, "-m", "builder", "blueprint", "check", str(BROKEN / "refused-packages.toml")],
        cwd=PROJECT_ROOT,
        check=False,
    )
    err = broken.stderr.decode()
    assert broken.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[0].endswith(
        "refused-packages.toml:3: packages: refused: the container image is immutable: derive a new image "
        "with the packages in the Containerfile instead"
    )
    good = run.run(
        [
            sys.executable,
            "-m",
            "builder",
            "blueprint",
            "check",
            "blueprints/examples/everything-applied.toml",
        ],
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert good.returncode == 0, good.stderr.decode()
    assert "hostname imgbuild-demo" in good.out
    assert "kernel arguments: console=ttyS0,115200 quiet" in good.out


def test_check_reads_stdin_and_show_normalises(tmp_path: Path) -> None:
    document = '{"customizations": {"filesystem": [{"mountpoint": "/", "size": "1 GiB"}]}}'
    source = tmp_path / "bp.json"
    source.write_text(document)
    shown = run.run(
        [sys.executable, "-m", "builder", "blueprint", "show", str(source)], cwd=PROJECT_ROOT, check=False
    )
    assert shown.returncode == 0 and "minsize = 1073741824" in shown.out
    piped = run.run(
        [sys.executable, "-m", "builder", "blueprint", "check", "-"],
        input=document.encode(),
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert piped.returncode == 0 and "filesystem / at least 1 GiB" in piped.out
