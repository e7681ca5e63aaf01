"""builder.customize.apply on a fake ostree deployment: every applied customization lands where it should."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from builder.blueprint import Blueprint, load_blueprint, parse_blueprint
from builder.customize import apply
from builder.customize.passwords import crypt_passwords
from builder.errors import BlueprintError
from builder.paths import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "blueprints" / "examples"
ROOT = os.geteuid() == 0

UNITS = {
    "systemd-networkd.service": "[Unit]\nDescription=Network\n\n[Service]\nExecStart=/bin/true\n\n[Install]\n"
    "WantedBy=multi-user.target\nAlias=dbus-org.freedesktop.network1.service\nAlso=systemd-networkd.socket\n",
    "systemd-networkd.socket": "[Socket]\nListenNetlink=route 1361\n\n[Install]\nWantedBy=sockets.target\n",
    "systemd-pstore.service": "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=sysinit.target\n",
    "console-getty.service": "[Service]\nExecStart=/sbin/agetty\n",
    "getty@.service": "[Service]\nExecStart=/sbin/agetty %I\n\n[Install]\nWantedBy=getty.target\n"
    "DefaultInstance=tty1\n",
    "static.service": "[Service]\nExecStart=/bin/true\n",
}


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A deployment checkout as ostree leaves it (Fedora-like /home link), its stateroot /var and /boot."""
    deploy, var, boot = tmp_path / "deploy", tmp_path / "var", tmp_path / "boot"
    for d in (var, boot, deploy / "usr/bin"):
        d.mkdir(parents=True)
    (deploy / "home").symlink_to("var/home")
    write(deploy / "etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/sbin/nologin\n")
    write(deploy / "etc/shadow", "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", 0o000)
    write(deploy / "etc/group", "root:x:0:\ndaemon:x:1:\nusers:x:100:\n")
    write(deploy / "etc/gshadow", "root:::\ndaemon:::\nusers:::\n", 0o000)
    # nss-altfiles: accounts of the image itself, read-only; 1000 is taken there.
    write(
        deploy / "usr/lib/passwd", "bin:x:2:2::/bin:/sbin/nologin\nimage-user:x:1000:1000::/:/sbin/nologin\n"
    )
    write(deploy / "usr/lib/group", "bin:x:2:\nwheel:x:10:\nimage-user:x:1000:\n")
    write(deploy / "usr/bin/bash", "#!/bin/false\n", 0o755)
    write(deploy / "usr/share/zoneinfo/Europe/Berlin", "TZif2 fake\n")
    write(deploy / "usr/share/zoneinfo/UTC", "TZif2 fake\n")
    write(deploy / "etc/skel/.bashrc", "# skel\n")
    write(deploy / "etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")
    write(
        deploy / "etc/chrony.conf", "pool 2.fedora.pool.ntp.invalid iburst\ndriftfile /var/lib/chrony/drift\n"
    )
    for name, text in UNITS.items():
        write(deploy / "usr/lib/systemd/system" / name, text)
    wants = deploy / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    (wants / "systemd-pstore.service").symlink_to("/usr/lib/systemd/system/systemd-pstore.service")
    return deploy, var, boot


def entries(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def test_everything_applied(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, boot = deployment
    bp = load_blueprint(EXAMPLES / "everything-applied.toml")
    done = apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    assert len(done) >= 15 and all("\n" not in line for line in done)

    # Groups and users: appended to /etc, the image's /usr/lib files untouched, free IDs above 1000.
    groups = entries(deploy / "etc/group")
    assert groups["developers"][2] == "2000" and groups["developers"][3] == "alice"
    passwd = entries(deploy / "etc/passwd")
    assert passwd["alice"][2:] == ["1500", "1500", "Alice Example", "/var/home/alice", "/bin/bash"]
    assert passwd["bob"][2] == "1501"  # next above the highest regular uid in use
    assert passwd["root"] == ["root", "x", "0", "0", "root", "/root", "/bin/bash"]
    assert (deploy / "usr/lib/passwd").read_text().count("\n") == 2
    shadow = entries(deploy / "etc/shadow")
    assert shadow["alice"][1] == bp.users[0].password  # a crypt hash is kept as it is
    assert shadow["bob"][1].startswith("$6$") and shadow["bob"][1] != "imgbuild"
    assert "bob" in entries(deploy / "etc/gshadow") and "developers" in entries(deploy / "etc/gshadow")
    assert stat.S_IMODE((deploy / "etc/shadow").stat().st_mode) == 0o000  # the image's mode is kept

    # Homes in the stateroot's /var, keys 0600 in a 0700 .ssh, root's home is /var/roothome.
    alice_home = var / "home/alice"
    keys = alice_home / ".ssh/authorized_keys"
    assert stat.S_IMODE(alice_home.stat().st_mode) == 0o700
    assert stat.S_IMODE((alice_home / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert keys.read_text() == f"{bp.users[0].key}\n"
    assert (alice_home / ".bashrc").read_text() == "# skel\n"
    assert "root@example.invalid" in (var / "roothome/.ssh/authorized_keys").read_text()
    assert stat.S_IMODE((var / "roothome").stat().st_mode) == 0o700
    if ROOT:
        assert owner(alice_home) == owner(keys) == (1500, 1500)
        assert owner(var / "home/bob") == (1501, 1501)

    # hostname, timezone, NTP, locale, keyboard.
    assert (deploy / "etc/hostname").read_text() == "imgbuild-demo\n"
    assert str((deploy / "etc/localtime").readlink()) == "../usr/share/zoneinfo/Europe/Berlin"
    timesyncd = (deploy / "etc/systemd/timesyncd.conf.d/imgbuild.conf").read_text()
    assert "NTP=0.pool.ntp.invalid 1.pool.ntp.invalid" in timesyncd
    chrony = (deploy / "etc/chrony.conf").read_text()
    assert "#pool 2.fedora" in chrony and "server 1.pool.ntp.invalid iburst" in chrony
    assert (deploy / "etc/locale.conf").read_text() == "LANG=en_US.UTF-8\n"
    assert (deploy / "etc/vconsole.conf").read_text() == "KEYMAP=us\n"

    # Services as systemctl --root would leave them.
    system = deploy / "etc/systemd/system"
    networkd = "/usr/lib/systemd/system/systemd-networkd.service"
    assert str((system / "multi-user.target.wants/systemd-networkd.service").readlink()) == networkd
    assert str((system / "dbus-org.freedesktop.network1.service").readlink()) == networkd
    assert str((system / "sockets.target.wants/systemd-networkd.socket").readlink()).endswith(
        "networkd.socket"
    )
    assert not (system / "sysinit.target.wants/systemd-pstore.service").is_symlink()
    assert str((system / "console-getty.service").readlink()) == "/dev/null"
    preset = (deploy / "etc/systemd/system-preset/00-imgbuild.preset").read_text()
    assert "enable systemd-networkd.service" in preset and "disable systemd-pstore.service" in preset

    # Files and directories with owner and mode; /usr/local/bin lives in /var/usrlocal; /usr untouched.
    directory = deploy / "etc/imgbuild"
    motd = directory / "motd"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert stat.S_IMODE(motd.stat().st_mode) == 0o640
    assert motd.read_text() == "Built by imgbuild from a blueprint.\n"
    hello = var / "usrlocal/bin/hello"
    assert stat.S_IMODE(hello.stat().st_mode) == 0o755 and hello.read_text().startswith("#!/bin/sh")
    assert not (deploy / "usr/local").exists()
    if ROOT:
        assert owner(directory) == owner(motd) == (1500, 2000)
        assert owner(hello) == (0, 0)

    # sshd drop-in, Ignition on /boot, kernel arguments.
    sshd = (deploy / "etc/ssh/sshd_config.d/imgbuild.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin prohibit-password" in sshd
    assert "ClientAliveInterval 60" in sshd
    assert json.loads((boot / "ignition/config.ign").read_bytes())["ignition"]["version"] == "3.3.0"
    assert (boot / "ignition.firstboot").exists()
    assert bp.kernel_arguments() == (
        "console=ttyS0,115200",
        "quiet",
        "systemd.show_status=1",
        "ignition.platform.id=metal",
        "ignition.firstboot",
    )
    assert not list(deploy.rglob(".*.imgbuild-link")) and not list(deploy.rglob(".passwd.*"))


def test_apply_twice_is_refused_or_stable(deployment: tuple[Path, Path, Path]) -> None:
    """Re-applying keeps one entry per account and one line per key (the build may retry a stage)."""
    deploy, var, boot = deployment
    bp = load_blueprint(EXAMPLES / "users-and-keys.toml")
    apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    names = [line.split(":")[0] for line in (deploy / "etc/passwd").read_text().splitlines()]
    assert names == ["root", "daemon", "alice", "bob"]
    assert (var / "home/alice/.ssh/authorized_keys").read_text().count("ssh-ed25519") == 1
    # wheel lives only in /usr/lib/group: it is copied to /etc/group with alice as a member.
    assert entries(deploy / "etc/group")["wheel"] == ["wheel", "x", "10", "alice"]
    shadow = entries(deploy / "etc/shadow")
    assert shadow["bob"][2] == "0" and shadow["bob"][7] == "20000"  # forced reset, expiry date


def test_root_password_and_existing_user(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, boot = deployment
    bp = parse_blueprint('[[customizations.user]]\nname = "root"\npassword = "secret"\n', "toml")
    done = apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    assert done == ["user root: updated, uid 0, home /root, password set"]
    assert entries(deploy / "etc/shadow")["root"][1].startswith("$6$")
    assert entries(deploy / "etc/passwd")["root"][5] == "/root"


def test_template_unit_default_instance(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, boot = deployment
    bp = parse_blueprint('[customizations.services]\nenabled = ["getty@.service", "getty@ttyS1"]\n', "toml")
    apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    wants = deploy / "etc/systemd/system/getty.target.wants"
    assert str((wants / "getty@tty1.service").readlink()) == "/usr/lib/systemd/system/getty@.service"
    assert str((wants / "getty@ttyS1.service").readlink()) == "/usr/lib/systemd/system/getty@.service"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ('[customizations.services]\nenabled = ["nosuch"]\n', "the image has no unit nosuch.service"),
        ('[customizations.services]\ndisabled = ["nosuch.socket"]\n', "the image has no unit nosuch.socket"),
        ('[customizations.services]\nenabled = ["static"]\n', "static.service has no [Install] section"),
        (
            '[customizations.timezone]\ntimezone = "Mars/Olympus"\n',
            "the image has no time zone 'Mars/Olympus'",
        ),
        (
            '[[customizations.user]]\nname = "x"\ngroups = ["nosuch"]\n',
            "group 'nosuch' of 'x' exists neither",
        ),
        ('[[customizations.user]]\nname = "x"\nuid = 1000\n', "uid 1000 of 'x' is already used"),
        ('[[customizations.group]]\nname = "wheel"\ngid = 99\n', "'wheel' exists in the image with gid 10"),
        ('[[customizations.sshkey]]\nuser = "ghost"\nkey = "k"\n', "user 'ghost' exists neither"),
        ('[[customizations.files]]\npath = "/etc/a/b"\n', "the parent of /etc/a/b does not exist"),
        ('[[customizations.files]]\npath = "/etc/x"\nuser = "ghost"\n', "user 'ghost' exists neither"),
        (
            '[[customizations.directories]]\npath = "/etc/ssh"\nmode = "0700"\n',
            "/etc/ssh exists in the image",
        ),
        ('[[customizations.directories]]\npath = "/etc/a/b"\n', "/etc/a does not exist in the image"),
    ],
)
def test_apply_refuses_with_one_line(
    deployment: tuple[Path, Path, Path], document: str, fragment: str
) -> None:
    deploy, var, boot = deployment
    bp = parse_blueprint(document, "toml")
    with pytest.raises(BlueprintError) as info:
        apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    assert fragment in info.value.message and "\n" not in info.value.message


def test_sshd_without_include_and_ignition_without_boot(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, _ = deployment
    write(deploy / "etc/ssh/sshd_config", "UsePAM yes\n")
    bp = parse_blueprint("[customizations.sshd]\npassword_authentication = true\n", "toml")
    with pytest.raises(BlueprintError, match=r"does not include /etc/ssh/sshd_config\.d"):
        apply(bp, deploy_root=deploy, var_root=var, boot_root=None)
    config = base64.b64encode(b'{"ignition": {"version": "3.3.0"}}').decode()
    bp = parse_blueprint(f'[customizations.ignition.embedded]\nconfig = "{config}"\n', "toml")
    with pytest.raises(BlueprintError, match="no /boot"):
        apply(bp, deploy_root=deploy, var_root=var, boot_root=None)


def test_does_not_write_through_image_symlinks(deployment: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """An image whose /etc/ssh points at the host must not make imgbuild write on the host."""
    deploy, var, boot = deployment
    outside = tmp_path / "host-etc-ssh"
    outside.mkdir()
    (outside / "sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    for item in (deploy / "etc/ssh").iterdir():
        item.unlink()
    (deploy / "etc/ssh").rmdir()
    (deploy / "etc/ssh").symlink_to(outside)
    bp = parse_blueprint('[customizations.sshd]\npermit_root_login = "no"\n', "toml")
    with pytest.raises(BlueprintError, match="symlink"):
        apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    assert list(outside.iterdir()) == [outside / "sshd_config"]


def test_empty_blueprint_applies_nothing(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, boot = deployment
    before = sorted(str(p) for p in deploy.rglob("*"))
    assert apply(Blueprint.empty(), deploy_root=deploy, var_root=var, boot_root=boot) == []
    assert sorted(str(p) for p in deploy.rglob("*")) == before


def test_crypt_passwords_for_storage() -> None:
    """Plain passwords become SHA-512 crypt hashes that verify; with a seed the result is reproducible."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    bp = load_blueprint(EXAMPLES / "users-and-keys.toml")
    first = crypt_passwords(bp, seed=b"manifest-seed")
    assert first == crypt_passwords(bp, seed=b"manifest-seed")
    assert first != crypt_passwords(bp, seed=b"another-seed")
    alice, bob = first.users
    assert alice.password == bp.users[0].password  # already a hash: kept
    assert bob.password is not None and bob.password.startswith("$6$")
    assert crypt.crypt("a plain text password", bob.password) == bob.password
    assert crypt_passwords(bp).users[1].password != crypt_passwords(bp).users[1].password  # random salts


def test_disable_removes_only_the_units_links(deployment: tuple[Path, Path, Path]) -> None:
    deploy, var, boot = deployment
    system = deploy / "etc/systemd/system"
    bp = parse_blueprint('[customizations.services]\nenabled = ["systemd-networkd"]\n', "toml")
    apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    other = system / "multi-user.target.wants/systemd-pstore.service"
    other.symlink_to("/usr/lib/systemd/system/systemd-pstore.service")
    bp = parse_blueprint('[customizations.services]\ndisabled = ["systemd-networkd.service"]\n', "toml")
    assert apply(bp, deploy_root=deploy, var_root=var, boot_root=boot) == [
        "service systemd-networkd.service: disabled (3 links removed)"
    ]
    assert not (system / "dbus-org.freedesktop.network1.service").is_symlink()
    assert not (system / "sockets.target.wants/systemd-networkd.socket").is_symlink()  # Also=
    assert other.is_symlink()


def test_enable_through_an_alias(deployment: tuple[Path, Path, Path]) -> None:
    """Debian ships sshd.service as an alias of ssh.service: enabling the alias enables the unit."""
    deploy, var, boot = deployment
    units = deploy / "usr/lib/systemd/system"
    write(
        units / "ssh.service",
        "[Service]\nExecStart=/usr/sbin/sshd -D\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    (units / "sshd.service").symlink_to("ssh.service")
    # An absolute link means the image's root, never the build host's (which has no such file).
    write(deploy / "opt/imgbuild-test/real.service", "[Install]\nWantedBy=default.target\n")
    (units / "absolute.service").symlink_to("/opt/imgbuild-test/real.service")
    bp = parse_blueprint('[customizations.services]\nenabled = ["sshd"]\n', "toml")
    assert apply(bp, deploy_root=deploy, var_root=var, boot_root=boot) == [
        "service sshd.service: enabled (/etc/systemd/system/multi-user.target.wants/ssh.service)"
    ]
    link = deploy / "etc/systemd/system/multi-user.target.wants/ssh.service"
    assert str(link.readlink()) == "/usr/lib/systemd/system/ssh.service"
    bp = parse_blueprint('[customizations.services]\nenabled = ["absolute"]\n', "toml")
    apply(bp, deploy_root=deploy, var_root=var, boot_root=boot)
    link = deploy / "etc/systemd/system/default.target.wants/real.service"
    assert str(link.readlink()) == "/opt/imgbuild-test/real.service"


def test_a_refusal_leaves_the_deployment_untouched(deployment: tuple[Path, Path, Path]) -> None:
    """Everything is checked against the image before the first write: users, then a unit that is missing."""
    deploy, var, boot = deployment
    before = {p: p.read_bytes() if p.is_file() else None for p in deploy.rglob("*")}
    text = (
        (EXAMPLES / "everything-applied.toml").read_text().replace('masked = ["console-getty.service"]', "")
    )
    text = text.replace('"systemd-networkd"]', '"systemd-networkd", "no-such-unit"]')
    with pytest.raises(BlueprintError, match=r"no unit no-such-unit\.service"):
        apply(parse_blueprint(text, "toml"), deploy_root=deploy, var_root=var, boot_root=boot)
    assert {p: p.read_bytes() if p.is_file() else None for p in deploy.rglob("*")} == before
    assert list(var.iterdir()) == [] and list(boot.iterdir()) == []
