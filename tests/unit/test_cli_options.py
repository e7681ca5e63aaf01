"""The command line's shared conventions (issue 12): one size syntax, case-insensitive choices listing the
valid values, no abbreviations, the registry options on every command that fetches, `build MANIFEST` and
`build --type T REF` told apart with a named mistake, the output directory checked before any fetch,
bootc-image-builder's options (--target-arch, --config, --chown, --local, --target-imgref)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.arch import Arch
from builder.cli import build_parser, main
from builder.commands import options
from builder.errors import ImgbuildError
from builder.origin import deployment_origin
from builder.plan import Rootfs
from builder.progress import ProgressMode
from builder.source.reference import parse_reference

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_MANIFEST = ROOT / "tests/data/golden/plan-qcow2-x86_64.yaml"
REF = "registry.example/os:latest"


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run imgbuild; it must refuse with exit 2, one error line and a hint. Returns stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("imgbuild: error: ") and lines[-1].startswith("hint: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("text", "size"),
    [("10G", 10 * 1024**3), ("10GiB", 10 * 1024**3), ("10 GiB", 10 * 1024**3), ("512M", 512 * 1024**2)],
)
def test_size_syntax_on_the_command_line(text: str, size: int) -> None:
    args = build_parser().parse_args(["qcow2", REF, "--size", text])
    assert args.size == size


def test_a_bare_size_is_refused_with_the_units(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["qcow2", REF, "--size", "10"], capsys)
    assert "'10' has no unit" in err and "10G" in err and "10B" in err


def test_compose_start_size_keeps_what_composer_cli_sends(capsys: pytest.CaptureFixture[str]) -> None:
    """composer-cli's --size 4096 means MiB and goes out as bytes; imgbuild's client says which unit."""
    args = build_parser().parse_args(["compose", "start", "bp", "qcow2", "--size", "4096M"])
    assert args.size == 4096 * 1024**2
    err = _fails(["compose", "start", "bp", "qcow2", "--size", "4096"], capsys)
    assert "composer-cli's --size counts MiB: write --size 4096M" in err


def test_choices_ignore_case_and_list_the_values(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["raw", REF, "--rootfs", "XFS", "--arch", "X86_64", "--progress", "JSON"]
    )
    assert (args.rootfs, args.arch, args.progress) == (Rootfs.XFS, Arch.X86_64, ProgressMode.JSON)
    err = _fails(["raw", REF, "--rootfs", "zfs"], capsys)
    assert "unknown root filesystem 'zfs'" in err and "use one of: ext4, xfs, btrfs" in err
    assert "Rootfs" not in err
    err = _fails(["raw", REF, "--progress", "verbose"], capsys)
    assert "use one of: auto, term, plain, json" in err


def test_no_abbreviations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["plan", "qcow2", REF, "--output", "json"])  # once became --output-format
    assert exit_.value.code == 2
    assert "unrecognized arguments: --output" in capsys.readouterr().err


def test_bib_names() -> None:
    args = build_parser().parse_args(
        ["build", "--type", "qcow2", "--target-arch", "aarch64", "--config", "c.toml", "--chown", "0:0", REF]
    )
    assert (args.arch, args.blueprint, args.chown, args.types) == (Arch.AARCH64, "c.toml", (0, 0), ["qcow2"])


def test_bib_use_librepo_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["build", "--type", "qcow2", "--use-librepo=True", REF], capsys)
    assert "imgbuild installs none" in err


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", REF],
        ["import", REF, "--repo", "r"],
        ["plan", "qcow2", REF],
        ["build", "--type", "qcow2", REF],
        ["qcow2", REF],
        ["vhd", REF],
        ["ami", REF, "--aws-region", "r", "--aws-ami-name", "n"],
        ["blueprint", "check", "bp.toml", "--image", REF],
    ],
)
def test_every_command_that_fetches_has_the_registry_options(command: list[str]) -> None:
    args = build_parser().parse_args(
        [*command, "--authfile", "auth.json", "--tls-verify", "FALSE", "--cache", "c"]
    )
    assert options.registry(args).authfile == Path("auth.json")
    assert options.registry(args).tls_verify is False
    assert options.cache_root(args) == Path("c")


def test_build_a_reference_without_type_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["build", REF], capsys)
    assert f"{REF} is a container reference: say which outputs to build with --type" in err
    assert f"imgbuild build --type qcow2 {REF}" in err


def test_build_a_missing_manifest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _fails(["build", str(tmp_path / "nosuch.json")], capsys)
    assert "no manifest file" in err


def test_build_type_with_a_manifest_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(["build", "--type", "qcow2", str(GOLDEN_MANIFEST)], capsys)
    assert "is a manifest" in err and f"imgbuild build {GOLDEN_MANIFEST} (without --type)" in err


def test_output_that_is_a_file_is_refused_before_any_fetch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The reference does not exist: a fetch would fail differently, so the output was checked first."""
    taken = tmp_path / "a-file"
    taken.write_text("")
    err = _fails(["qcow2", f"oci-archive:{tmp_path / 'missing.tar'}", "--output", str(taken)], capsys)
    assert f"--output {taken} is a file, not a directory" in err


def test_output_under_a_file_is_refused_before_any_fetch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file/out"
    err = _fails(
        ["build", "--type", "raw", f"oci-archive:{tmp_path / 'missing.tar'}", "--output", str(out)], capsys
    )
    assert f"--output {out}: {tmp_path / 'a-file'} is not a directory" in err


@pytest.mark.parametrize(
    ("text", "ids"), [("0:0", (0, 0)), ("root:root", (0, 0)), ("0", (0, -1)), ("1000:1000", (1000, 1000))]
)
def test_chown_values(text: str, ids: tuple[int, int]) -> None:
    assert options.owner(text) == ids


@pytest.mark.parametrize("text", ["1000:", ":1000", "no-such-user-here:0"])
def test_chown_refused(text: str) -> None:
    with pytest.raises(ImgbuildError):
        options.owner(text)


def test_origin_of_a_registry_image_is_itself() -> None:
    origin = deployment_origin(parse_reference(REF), None)
    assert origin.reference == f"ostree-unverified-registry:{REF}" and origin.warning is None


@pytest.mark.parametrize(
    "source",
    ["oci-archive:/srv/os.tar", "oci:/srv/os", "docker-archive:/srv/os.tar", "containers-storage:os"],
)
def test_a_local_source_warns_unless_target_imgref(source: str) -> None:
    warned = deployment_origin(parse_reference(source), None)
    assert warned.warning is not None and "--target-imgref" in warned.warning
    assert "will not be able to update" in warned.warning
    fixed = deployment_origin(parse_reference(source), REF)
    assert fixed == type(fixed)(f"ostree-unverified-registry:{REF}")


def test_target_imgref_keeps_the_sources_signature() -> None:
    signed = parse_reference("ostree-remote-image:myos:oci-archive:/srv/os.tar")
    assert deployment_origin(signed, REF).reference == f"ostree-remote-image:myos:docker://{REF}"
    policy = parse_reference("ostree-image-signed:oci-archive:/srv/os.tar")
    assert deployment_origin(policy, REF).reference == f"ostree-image-signed:docker://{REF}"
    explicit = deployment_origin(signed, f"ostree-remote-registry:other:{REF}")
    assert explicit.reference == f"ostree-remote-image:other:docker://{REF}"


def test_a_bad_target_imgref_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _fails(["plan", "qcow2", f"oci-archive:{tmp_path}/x.tar", "--target-imgref", "no host"], capsys)
    assert "bad image reference 'no host'" in err


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("oci-archve:/srv/os.tar", "did you mean oci-archive:/srv/os.tar?"),
        ("containers-storge:localhost/os", "did you mean containers-storage:localhost/os?"),
        ("oic:/srv/os", "did you mean oci:/srv/os?"),
    ],
)
def test_a_transport_typo_gets_did_you_mean(typed: str, meant: str) -> None:
    with pytest.raises(ImgbuildError) as error:
        parse_reference(typed)
    assert error.value.hint == meant


def test_a_bare_path_gets_its_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "os.tar").write_bytes(b"")
    (tmp_path / "layout").mkdir()
    (tmp_path / "layout/index.json").write_text("{}")
    for text, hint in (
        ("./os.tar", "did you mean oci-archive:./os.tar?"),
        ("os.tar", "did you mean oci-archive:os.tar?"),
        ("layout", "did you mean oci:layout?"),
        ("./missing.tar", "a local image is written oci-archive:FILE or oci:DIR"),
    ):
        with pytest.raises(ImgbuildError) as error:
            parse_reference(text)
        assert error.value.hint is not None and error.value.hint.startswith(hint), (text, error.value.hint)


# bootc-image-builder's command lines (its README and common scripts: the arguments after bib's own image),
# given to `imgbuild build`: each parses, or is refused with one line that says why.
BIB_RUNS = [
    ["--type", "qcow2", REF],
    ["--type", "qcow2", "--rootfs=xfs", "--local", REF],
    ["--type", "qcow2", "--rootfs", "btrfs", "--config", "/config.toml", REF],
    ["--type", "raw", "--target-arch", "aarch64", REF],
    ["--type", "qcow2", "--chown", "1000:1000", REF],
    ["--type", "qcow2", "--type", "vmdk", "--type", "ami", REF],
    ["--type", "ami", "--aws-ami-name", "n", "--aws-bucket", "b", "--aws-region", "r", REF],
    ["--type", "qcow2", "--tls-verify=false", REF],
    ["--type", "qcow2", "--output", "/output", REF],
    ["--type", "qcow2", "--target-imgref", REF, f"oci-archive:{ROOT}/x.tar"],
]
BIB_EXPLAINED = [
    (["--type", "anaconda-iso", REF], "an installer type of bootc-image-builder (Anaconda or PXE)"),
    (["--type", "qcow2", "--use-librepo=True", REF], "imgbuild installs none"),
    (["--type", "qcow2", "--progress", "verbose", REF], "unknown progress mode 'verbose'"),
    (["--type", "qcow2", "--log-level", "debug", REF], "--log-level is bootc-image-builder's"),
    (["--type", "qcow2", "--in-vm", REF], "imgbuild needs no VM"),
    (["--type", "qcow2", "--store", "/store", REF], "--store is bootc-image-builder's osbuild store"),
    ([REF], "is a container reference: say which outputs to build with --type"),
]


@pytest.mark.parametrize("argv", BIB_RUNS, ids=" ".join)
def test_bib_command_lines_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(["build", *argv])
    assert args.types and args.source == argv[-1]


@pytest.mark.parametrize(
    ("argv", "why"), BIB_EXPLAINED, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bib_command_lines_explained(argv: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert why in _fails(["build", *argv], capsys)


def test_a_blueprint_without_a_known_extension_is_sniffed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bootc-image-builder users keep theirs as /config; plan has no --format to tell it the format."""
    config = tmp_path / "config"
    config.write_text('name = "bib"\n[customizations]\nhostname = "from-bib"\n')
    assert main(["blueprint", "check", str(config)]) == 0
    assert "blueprint bib" in capsys.readouterr().out


def test_plan_o_checked_before_any_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"oci-archive:{tmp_path / 'missing.tar'}"  # a fetch would fail differently
    err = _fails(["plan", "qcow2", missing, "-o", str(tmp_path)], capsys)
    assert f"-o {tmp_path} is a directory" in err
    err = _fails(["plan", "qcow2", missing, "-o", str(tmp_path / "no/such/plan.json")], capsys)
    assert "is not a directory" in err


def test_the_service_passes_sizes_the_builder_reads(tmp_path: Path) -> None:
    """A compose's size (bytes, as composer-cli sends them) reaches `imgbuild TYPE ... --size` intact."""
    from builder.service.queue import QueueConfig, builder_argv
    from builder.service.store import Compose, ComposeStatus

    size = 4096 * 1024**2
    compose = Compose(
        id="0" * 8,
        blueprint_name="bp",
        blueprint_version="1.0.0",
        blueprint={},
        compose_type="qcow2",
        container_ref=REF,
        image_size=size,
        status=ComposeStatus.WAITING,
        created=0.0,
        started=None,
        finished=None,
        reason=None,
        pid=None,
        image=None,
        runs=0,
    )
    config = QueueConfig(tmp_path, builder_command=("imgbuild",))
    args = build_parser().parse_args(builder_argv(config, compose)[1:])
    assert args.size == size
