"""Every service customization against a unit in each state an image can have it in, compared with what the
host's real `systemctl --root=DIR enable|disable|mask` does to a copy of the same tree; and files and
directories meeting a symlink, a file or a directory where they go. Refusals come from `check` (the plan-time
check), before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder import run
from builder.blueprint import parse_blueprint
from builder.customize import Target, apply, check
from builder.errors import BlueprintError

UNIT = "[Unit]\n[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
STATES = ("present", "missing", "masked-usr", "masked-etc", "directory", "dangling", "static", "etc-file")


def _image(root: Path, state: str) -> None:
    """A deployment tree whose unit x.service is in `state`."""
    usr = root / "usr/lib/systemd/system"
    etc = root / "etc/systemd/system"
    usr.mkdir(parents=True)
    etc.mkdir(parents=True)
    (root / "var").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    if state == "present":
        (usr / "x.service").write_text(UNIT)
    elif state == "masked-usr":
        (usr / "x.service").symlink_to("/dev/null")
    elif state == "masked-etc":
        (usr / "x.service").write_text(UNIT)
        (etc / "x.service").symlink_to("/dev/null")
    elif state == "directory":
        (usr / "x.service").mkdir()
    elif state == "dangling":
        (usr / "x.service").symlink_to("/nonexistent/x.service")
    elif state == "static":
        (usr / "x.service").write_text("[Service]\nExecStart=/bin/true\n")
    elif state == "etc-file":
        (etc / "x.service").write_text(UNIT)


def _links(root: Path) -> set[tuple[str, str]]:
    etc = root / "etc/systemd/system"
    return {(str(p.relative_to(etc)), str(p.readlink())) for p in etc.rglob("*") if p.is_symlink()}


def _systemctl(root: Path, verb: str) -> bool:
    """Whether the host's systemctl accepts `verb x.service` on `root` (it prints "Failed ..." and sometimes
    still exits 0, e.g. disabling a unit that does not exist)."""
    result = run.run(["systemctl", f"--root={root}", verb, "x.service"], check=False)
    return result.returncode == 0 and b"Failed" not in result.stderr


def _target(root: Path) -> Target:
    return Target(root, root / "var", None)


EXPECTED_REFUSALS = {
    ("enabled", "missing"): "the image has no unit x.service",
    ("enabled", "masked-usr"): "x.service is masked in the image",
    ("enabled", "masked-etc"): "x.service is masked in the image",
    ("enabled", "directory"): "is a directory in the image, not a unit file",
    ("enabled", "dangling"): "the image has no unit x.service",
    ("enabled", "static"): "has no [Install] section",
    ("disabled", "missing"): "the image has no unit x.service",
    ("disabled", "directory"): "is a directory in the image, not a unit file",
    ("disabled", "dangling"): "the image has no unit x.service",
    ("masked", "etc-file"): "is a unit file in the image, it cannot be masked",
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("key", ["enabled", "disabled", "masked"])
def test_services_match_systemctl(key: str, state: str, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "systemctl"
    _image(ours, state)
    shutil.copytree(ours, theirs, symlinks=True)
    accepted = _systemctl(theirs, {"enabled": "enable", "disabled": "disable", "masked": "mask"}[key])
    bp = parse_blueprint(f'[customizations.services]\n{key} = ["x.service"]\n', "toml")
    before = _links(ours)
    refusal = EXPECTED_REFUSALS.get((key, state))
    # One deliberate difference: systemctl "enables" a unit without an [Install] section by doing nothing
    # (with a warning); a blueprint asking for it is refused, since the unit would not start.
    if (key, state) != ("enabled", "static"):
        assert accepted is (refusal is None), (
            f"systemctl {'accepts' if accepted else 'refuses'} {key} {state}"
        )
    else:
        assert accepted and _links(theirs) == before
    if refusal is not None:
        with pytest.raises(BlueprintError) as info:
            check(bp, _target(ours))
        assert refusal in info.value.message and "\n" not in info.value.message
        assert _links(ours) == before
        return
    check(bp, _target(ours))
    apply(bp, deploy_root=ours, var_root=ours / "var", boot_root=None)
    assert _links(ours) == _links(theirs)


def test_disabling_a_masked_unit_keeps_the_mask(tmp_path: Path) -> None:
    """The crash of issue 16: `internal error: KeyError('WantedBy')`."""
    _image(tmp_path, "masked-usr")
    bp = parse_blueprint('[customizations.services]\ndisabled = ["x.service"]\n', "toml")
    assert apply(bp, deploy_root=tmp_path, var_root=tmp_path / "var", boot_root=None) == [
        "service x.service: masked in the image, left masked (0 links removed)"
    ]


@pytest.mark.parametrize(
    ("what", "document", "refusal"),
    [
        ("symlink", '[[customizations.directories]]\npath = "/etc/d"\n', "/etc/d is a symlink in the image"),
        ("file", '[[customizations.directories]]\npath = "/etc/d"\n', "/etc/d is a file in the image"),
        ("directory", '[[customizations.directories]]\npath = "/etc/d"\n', None),
        ("directory", '[[customizations.files]]\npath = "/etc/d"\n', "/etc/d is a directory in the image"),
        ("symlink", '[[customizations.files]]\npath = "/etc/d"\n', None),
        ("file", '[[customizations.files]]\npath = "/etc/d"\n', None),
        (
            "symlink",
            '[[customizations.files]]\npath = "/etc/d/f"\n',
            "cannot write /etc/d/f: etc/d is a symlink in the image",
        ),
        (
            "symlink",
            '[[customizations.directories]]\npath = "/etc/d/sub"\nensure_parents = true\n'
            '[[customizations.files]]\npath = "/etc/d/sub/f"\n',
            "etc/d is a symlink in the image",
        ),
    ],
)
def test_files_and_directories_meet_each_state(
    what: str, document: str, refusal: str | None, tmp_path: Path
) -> None:
    """Image Builder's rules: an existing file or link at a file's path is replaced; a directory is never
    replaced; nothing is written through a link the image ships (it may point into the build host)."""
    _image(tmp_path, "missing")
    outside = tmp_path / "outside"
    outside.mkdir()
    d = tmp_path / "etc/d"
    if what == "symlink":
        d.symlink_to(outside)
    elif what == "file":
        d.write_text("old\n")
    else:
        d.mkdir()
    bp = parse_blueprint(document, "toml")
    if refusal is not None:
        with pytest.raises(BlueprintError) as info:
            check(bp, _target(tmp_path))
        assert refusal in info.value.message
    else:
        check(bp, _target(tmp_path))
        apply(bp, deploy_root=tmp_path, var_root=tmp_path / "var", boot_root=None)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("state", ["missing", "symlink", "directory", "file"])
@pytest.mark.parametrize("name", ["passwd", "group"])
def test_accounts_meet_each_state_of_the_account_files(name: str, state: str, tmp_path: Path) -> None:
    """A user and a group are added to plain account files, made when the image has none; an account file
    that is a link or a directory is refused by check() (writing would replace it with a file holding only
    the new entries)."""
    _image(tmp_path, "missing")
    path = tmp_path / "etc" / name
    path.unlink()
    if state == "symlink":
        path.symlink_to(f"../usr/lib/{name}")
    elif state == "directory":
        path.mkdir()
    elif state == "file":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n" if name == "passwd" else "root:x:0:\n")
    bp = parse_blueprint(
        '[[customizations.user]]\nname = "alice"\n[[customizations.group]]\nname = "ops"\n', "toml"
    )
    if state in ("symlink", "directory"):
        with pytest.raises(BlueprintError, match=rf"/etc/{name} is a {state} in the image"):
            check(bp, _target(tmp_path))
        return
    check(bp, _target(tmp_path))
    apply(bp, deploy_root=tmp_path, var_root=tmp_path / "var", boot_root=None)
    users = (tmp_path / "etc/passwd").read_text().splitlines()
    groups = (tmp_path / "etc/group").read_text().splitlines()
    assert any(u.startswith("alice:x:1000:") for u in users), users
    assert any(g.startswith("ops:x:") for g in groups) and any(g.startswith("alice:x:") for g in groups)
    if state == "file":
        assert users[0].startswith("root:") if name == "passwd" else groups[0] == "root:x:0:"


SYSTEM_FILES = [
    ('[customizations]\nhostname = "h"\n', "/etc/hostname"),
    ('[customizations.locale]\nlanguages = ["en_US.UTF-8"]\n', "/etc/locale.conf"),
    ('[customizations.locale]\nkeyboard = "us"\n', "/etc/vconsole.conf"),
    (
        '[customizations.timezone]\nntpservers = ["ntp.invalid"]\n',
        "/etc/systemd/timesyncd.conf.d/imgbuild.conf",
    ),
    ("[customizations.sshd]\npassword_authentication = false\n", "/etc/ssh/sshd_config.d/imgbuild.conf"),
]


# A symlinked parent only where the parent is below /etc (replacing /etc itself would test nothing).
SYSTEM_CASES = [
    (document, path, state)
    for document, path in SYSTEM_FILES
    for state in ("directory", "symlink", "parent-symlink")
    if state != "parent-symlink" or path.count("/") > 2
]


@pytest.mark.parametrize(
    ("document", "path", "state"), SYSTEM_CASES, ids=[f"{p}-{s}" for _, p, s in SYSTEM_CASES]
)
def test_system_files_meet_each_state(document: str, path: str, state: str, tmp_path: Path) -> None:
    """A file the system customizations write is refused by check() when the image has a directory there or
    a symlink on the way to it; a symlink at the path itself is replaced (the file is written beside, then
    renamed over it), never written through."""
    _image(tmp_path, "missing")
    (tmp_path / "etc/ssh").mkdir()
    (tmp_path / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    host = tmp_path / path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    if state == "directory":
        host.mkdir()
    elif state == "symlink":
        host.symlink_to(outside / "file")
    else:
        host.parent.rename(tmp_path / "moved")
        host.parent.symlink_to(outside)
    bp = parse_blueprint(document, "toml")
    if state == "symlink":
        check(bp, _target(tmp_path))
        apply(bp, deploy_root=tmp_path, var_root=tmp_path / "var", boot_root=None)
        assert host.is_file() and not host.is_symlink()
    else:
        with pytest.raises(BlueprintError) as info:
            check(bp, _target(tmp_path))
        expected = "is a directory in the image" if state == "directory" else "is a symlink in the image"
        assert path in info.value.message and expected in info.value.message, info.value.message
    assert list(outside.iterdir()) == []
