"""The blueprint loader: formats, normalisation, sizes, kernel arguments and the examples."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from builder.blueprint import (
    Blueprint,
    BtrfsPartition,
    DiskType,
    FilesystemCustomization,
    FsType,
    LvmPartition,
    PlainPartition,
    dump_toml,
    load_blueprint,
    parse_blueprint,
    parse_size,
)
from builder.blueprint.sizes import SizeError
from builder.errors import BlueprintError
from builder.paths import PROJECT_ROOT

EXAMPLES = sorted((PROJECT_ROOT / "blueprints" / "examples").glob("*.toml"))


def test_examples_exist_and_load() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"minimal", "users-and-keys", "everything-applied", "disk-layout", "filesystem-sizes"} <= names
    for path in EXAMPLES:
        assert load_blueprint(path).name == path.stem


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_normalised_document_round_trips_in_every_format(path: Path) -> None:
    bp = load_blueprint(path)
    document = bp.to_dict()
    assert parse_blueprint(dump_toml(bp), "toml") == bp
    assert parse_blueprint(json.dumps(document), "json") == bp
    assert parse_blueprint(yaml.safe_dump(document), "yaml") == bp
    assert parse_blueprint(json.dumps({"blueprint": document}), "json") == bp  # bib's legacy wrapper


def test_model_of_everything_applied() -> None:
    bp = load_blueprint(PROJECT_ROOT / "blueprints/examples/everything-applied.toml")
    assert bp.version == "2.1.0" and bp.hostname == "imgbuild-demo"
    assert [u.name for u in bp.users] == ["alice", "bob"] and bp.users[0].groups == ("developers",)
    assert bp.services_enabled == ("systemd-networkd.service",)  # a bare name means .service, as systemctl
    assert bp.files[0].mode == 0o640 and bp.files[0].user == "alice"
    assert bp.kernel_append == ("console=ttyS0,115200", "quiet", "systemd.show_status=1")
    assert bp.ignition is not None and bp.ignition.embedded_config is not None


def test_disk_layout() -> None:
    bp = load_blueprint(PROJECT_ROOT / "blueprints/examples/disk-layout.toml")
    disk = bp.disk
    assert disk is not None and disk.type is DiskType.GPT and disk.minsize == 20 * 1024**3
    esp, boot, lvm = disk.partitions
    assert isinstance(esp, PlainPartition) and esp.fs_type is FsType.VFAT and esp.minsize == 512 * 1024**2
    assert isinstance(boot, PlainPartition) and boot.mountpoint == "/boot" and boot.label == "boot"
    assert isinstance(lvm, LvmPartition) and lvm.name == "rootvg"
    assert [(lv.name, lv.mountpoint, lv.minsize) for lv in lvm.logical_volumes] == [
        ("rootlv", "/", 8 * 1024**3),
        ("loglv", "/var/log", 2 * 1024**3),
    ]


def test_btrfs_layout() -> None:
    text = """
[[customizations.disk.partitions]]
type = "btrfs"
minsize = "10 GiB"
subvolumes = [{name = "root", mountpoint = "/"}, {name = "log", mountpoint = "/var/log"}]
"""
    partition = parse_blueprint(text, "toml").disk.partitions[0]  # type: ignore[union-attr]
    assert isinstance(partition, BtrfsPartition) and [s.name for s in partition.subvolumes] == ["root", "log"]


def test_filesystem_sizes_and_alias() -> None:
    bp = load_blueprint(PROJECT_ROOT / "blueprints/examples/filesystem-sizes.toml")
    assert bp.filesystems == (
        FilesystemCustomization("/", 10 * 1024**3),
        FilesystemCustomization("/var/lib/containers", 20 * 1024**3),
        FilesystemCustomization("/var/log", 4294967296),
    )


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1024, 1024),  # a blueprint's integer is bytes (Image Builder's format)
        ("1024B", 1024),
        ("10G", 10 * 1024**3),
        ("10 GiB", 10 * 1024**3),
        ("10g", 10 * 1024**3),
        ("1 gib", 1024**3),
        ("512M", 512 * 1024**2),
        ("4K", 4096),
        ("1T", 1024**4),
        ("20 GiB", 20 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("1.5 GB", 1_500_000_000),
        ("2 kB", 2000),
        ("3KiB", 3072),
        ("1 TB", 10**12),
        ("1TiB", 1024**4),
        (" 7 MB ", 7_000_000),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["", "GiB", "1.5 B", "-1", "1e9", "1 PiB", "10 GiBs", "0.3K", True, 1.5, None, -1]
)
def test_bad_sizes(value: object) -> None:
    with pytest.raises(SizeError):
        parse_size(value)


@pytest.mark.parametrize("value", ["1024", " 10 ", "0"])
def test_a_bare_number_string_is_refused_with_the_units_to_write(value: object) -> None:
    """Tools disagree on a bare number (bytes, MiB): only a blueprint's integer is read, as bytes."""
    with pytest.raises(SizeError, match=r"has no unit: write \d+G, \d+M or \d+B"):
        parse_size(value)


def test_defaults_and_empty() -> None:
    assert parse_blueprint("", "toml") == Blueprint.empty()
    assert parse_blueprint("", "yaml") == Blueprint.empty()
    assert parse_blueprint("{}", "json").version == "0.0.0"
    assert Blueprint.empty().kernel_arguments() == ()
    assert Blueprint.empty().to_dict() == {"version": "0.0.0"}
    # Blueprints saved by composer-cli carry empty package lists: harmless, accepted.
    bp = parse_blueprint('name = "a"\npackages = []\nmodules = []\ngroups = []\n', "toml")
    assert bp.name == "a"


def test_kernel_arguments() -> None:
    text = """
[customizations]
fips = true
[customizations.kernel]
append = "quiet console=ttyS0 'opt=a b'"
[customizations.ignition.firstboot]
url = "http://config.invalid/x.ign"
"""
    bp = parse_blueprint(text, "toml")
    assert bp.kernel_arguments(ignition_platform="qemu") == (
        "quiet",
        "console=ttyS0",
        'opt="a b"',
        "fips=1",
        "ignition.platform.id=qemu",
        "ignition.firstboot",
        "ignition.config.url=http://config.invalid/x.ign",
    )


def test_empty_password_means_none() -> None:
    bp = parse_blueprint('[[customizations.user]]\nname = "a"\npassword = ""\n', "toml")
    assert bp.users[0].password is None


def test_stdin_is_sniffed(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ('{"name": "j"}', 'name = "t"\n', "name: y\ncustomizations:\n  hostname: h\n"):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        assert load_blueprint("-").name in ("j", "t", "y")


def test_format_override_and_unknown_extension(tmp_path: Path) -> None:
    """A file named neither .toml, .json nor .yaml (bootc-image-builder's /config) is sniffed as stdin is:
    `plan --blueprint` has no --format to say it."""
    path = tmp_path / "blueprint.conf"
    path.write_text('name = "x"\n')
    assert load_blueprint(path).name == "x"
    assert load_blueprint(path, "toml").name == "x"
    (tmp_path / "config").write_text('{"name": "j"}')
    assert load_blueprint(tmp_path / "config").name == "j"
    with pytest.raises(BlueprintError, match=r"blueprint\.conf:1: not valid JSON"):  # --format still rules
        load_blueprint(path, "json")
    with pytest.raises(BlueprintError, match="cannot read the blueprint"):
        load_blueprint(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        (
            'name = "x"\n\n[[customizations.user]]\nname = "a"\nuid = "7"\n',
            "toml",
            "<b>:5: customizations.user[0].uid:",
        ),
        ('{\n "customizations": {\n  "hostname": 5\n }\n}', "json", "<b>:3: customizations.hostname:"),
        (
            "customizations:\n  user:\n    - name: a\n    - name: b\n      gid: x\n",
            "yaml",
            "<b>:5: customizations.user[1].gid:",
        ),
        ("[customizations]\nkernel.append = 5\n", "toml", "<b>:2: customizations.kernel.append:"),
        (
            '[customizations.services]\nenabled = ["a", "b"]\ndisabled = ["b"]\n',
            "toml",
            "<b>:3: customizations.services.disabled[0]:",
        ),
    ],
)
def test_errors_name_line_and_key_path(text: str, fmt: str, expected: str) -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(text, fmt, "<b>")
    assert info.value.message.startswith(expected), info.value.message
    assert info.value.hint


def test_unknown_key_hints() -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint("[customizations]\nhostnam = 'x'\n", "toml")
    assert info.value.hint == "did you mean 'hostname'?"


@pytest.mark.parametrize(
    ("text", "fmt", "fragment"),
    [
        ("a: &a [*a]\n", "yaml", "nested more than 64 levels"),
        ("[" * 100_000 + "]" * 100_000, "json", ""),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "toml", ""),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            )
            + "customizations: *h\n",
            "yaml",
            "more than 100000 values",
        ),
        ("!!python/object/apply:os.system ['true']\n", "yaml", "not valid YAML"),
        ("name: !!binary aGVsbG8=\n", "yaml", "bytes values are not accepted"),
        ("? [a]\n: b\n", "yaml", "not valid YAML"),
        ("1: b\n", "yaml", "keys must be strings"),
        ('{"version": NaN}', "json", "version: must be a string, not a number"),
    ],
)
def test_hostile_documents_are_one_line_errors(text: str, fmt: str, fragment: str) -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(text, fmt)
    assert fragment in info.value.message and "\n" not in info.value.message
