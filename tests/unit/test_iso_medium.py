"""The hybrid ISO medium (builder/iso/medium.py), written with the real grub-mkimage, mkfs.fat, mtools and
xorriso from a root holding the host's x86_64-efi GRUB modules (grub-efi-amd64-bin, a build dependency), and
read back with xorriso, sfdisk and mtools. The aarch64 medium needs the image's arm64-efi modules: it is
checked with the example image in tests/integration/test_live_iso.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.iso import medium
from builder.iso.medium import IsoError, MediumSpec

HOST_EFI = Path("/usr/lib/grub/x86_64-efi")
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def image_root(tmp_path: Path) -> Path:
    """A stand-in for a deployed image root that ships GRUB's x86_64-efi modules (copied: symlinks that leave
    the root are refused)."""
    root = tmp_path / "root"
    shutil.copytree(HOST_EFI, root / "usr/lib/grub/x86_64-efi")
    return root


def spec(tmp_path: Path, root: Path, **changes: object) -> MediumSpec:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 300_000)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"I" * 200_000)
    payload = tmp_path / "payload.img"
    payload.write_bytes(b"P" * 100_000)
    fields: dict[str, object] = {
        "arch": Arch.X86_64,
        "volume_id": "Test-OS-1_live",
        "application_id": "Test OS 1 live ISO",
        "publisher": "imgbuild tests",
        "menu_title": "Test OS (live)",
        "kernel": kernel,
        "initrd": initrd,
        "kernel_args": 'root=live:CDLABEL=Test-OS-1_live rd.live.image console=ttyS0,115200n8 x="a b"',
        "files": {"LiveOS/squashfs.img": payload},
        "efi_source": root,
    }
    fields.update(changes)
    return MediumSpec(**fields)  # type: ignore[arg-type]


def extract(iso: Path, path: str, dest: Path) -> bytes:
    run.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", path, dest])
    return dest.read_bytes()


@pytest.fixture(scope="module")
def x86_iso(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MediumSpec, Path]:
    tmp = tmp_path_factory.mktemp("iso")
    work = tmp / "work"
    work.mkdir()
    s = spec(tmp, image_root(tmp))
    out = tmp / "out" / "live.iso"
    medium.write_iso(s, out, work)
    return out, s, work


def test_x86_64_iso_has_a_bios_and_a_uefi_el_torito_image(x86_iso: tuple[Path, MediumSpec, Path]) -> None:
    iso, _, work = x86_iso
    report = medium.report_el_torito(iso)
    assert medium.boot_images(iso) == {"BIOS", "UEFI"}, report
    assert "/boot/grub/i386-pc/eltorito.img" in report
    assert list(work.iterdir()) == []  # intermediate files removed
    assert [p.name for p in iso.parent.iterdir()] == ["live.iso"]  # no partial file left


def test_ids_read_back(x86_iso: tuple[Path, MediumSpec, Path]) -> None:
    iso, s, _ = x86_iso
    pvd = medium.read_pvd(iso)
    assert pvd["volume_id"] == s.volume_id
    # ISO 9660 keeps these two in its upper-case character set (libisofs converts them).
    assert pvd["application_id"] == s.application_id.upper()
    assert pvd["publisher"] == s.publisher.upper()
    assert f'LABEL="{s.volume_id}"' in run.run(["blkid", "-p", iso]).out


def test_usb_disk_layout_has_an_esp_with_the_uefi_loader_and_grub_mbr(
    x86_iso: tuple[Path, MediumSpec, Path],
) -> None:
    iso, _, _ = x86_iso
    table = json.loads(run.run(["sfdisk", "--json", iso]).out)["partitiontable"]
    assert table["label"] == "gpt"
    esps = [p for p in table["partitions"] if p["type"].upper() == ESP_GUID]
    assert len(esps) == 1
    drive = f"{iso}@@{esps[0]['start'] * 512}"
    loader = run.run(["mcopy", "-n", "-i", drive, "::/EFI/BOOT/BOOTX64.EFI", "-"], env=MTOOLS_ENV).stdout
    assert loader[:2] == b"MZ"
    mbr = iso.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa"
    # GRUB's boot_hybrid.img is the MBR code (its first bytes), patched with the core image's location.
    hybrid = (medium.HOST_GRUB_BIOS / "boot_hybrid.img").read_bytes()
    assert mbr[:0x5A] == hybrid[:0x5A]


def test_grub_cfg_and_files_on_the_medium(x86_iso: tuple[Path, MediumSpec, Path], tmp_path: Path) -> None:
    iso, s, _ = x86_iso
    cfg = extract(iso, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").decode()
    assert f"search --no-floppy --label --set=root {s.volume_id}" in cfg
    assert "    linux /boot/vmlinuz root=live:CDLABEL=Test-OS-1_live rd.live.image" in cfg
    assert "'x=\"a b\"'" in cfg and "    initrd /boot/initrd.img" in cfg
    assert "menuentry 'Test OS (live)'" in cfg
    assert extract(iso, "/boot/vmlinuz", tmp_path / "k") == s.kernel.read_bytes()
    assert extract(iso, "/LiveOS/squashfs.img", tmp_path / "p") == s.files["LiveOS/squashfs.img"].read_bytes()


def test_image_without_uefi_loader_is_refused_and_nothing_written(tmp_path: Path) -> None:
    empty = tmp_path / "bare-root"
    empty.mkdir()
    out = tmp_path / "out.iso"
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(IsoError, match="no UEFI boot loader") as err:
        medium.write_iso(spec(tmp_path, empty), out, work)
    assert err.value.hint and "grub-efi-amd64-bin" in err.value.hint
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("iso")) == []
    assert list(work.iterdir()) == []


def test_uefi_loader_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib/grub").mkdir(parents=True)
    (root / "usr/lib/grub/x86_64-efi").symlink_to(HOST_EFI)
    with pytest.raises(IsoError, match="no UEFI boot loader"):
        medium.write_iso(spec(tmp_path, root), tmp_path / "out.iso", tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("volume_id", "", "volume id"),
        ("volume_id", "A" * 33, "volume id"),
        ("volume_id", "has space", "volume id"),
        ("publisher", "P" * 129, "publisher"),
        ("application_id", "tab\there", "application id"),
        ("files", {"../escape": Path("/etc/hostname")}, "plain relative path"),
        ("files", {"boot/grub/grub.cfg": Path("/etc/hostname")}, "its own boot files"),
    ],
)
def test_bad_spec_is_one_line(tmp_path: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(IsoError, match=message) as err:
        spec(tmp_path, tmp_path, **{field: value})
    assert "\n" not in str(err.value)


def test_a_failed_check_leaves_no_file_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # xorriso really writes the ISO; the post-write check then finds it wanting (as if xorriso had dropped
    # the BIOS image): the partial file goes, nothing appears under the final name.
    monkeypatch.setattr(medium, "boot_images", lambda iso: {"UEFI"})
    out = tmp_path / "out" / "live.iso"
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(IsoError, match="expected"):
        medium.write_iso(spec(tmp_path, image_root(tmp_path)), out, work)
    assert list(out.parent.iterdir()) == []
    assert list(work.iterdir()) == []


def test_console_args_follow_the_platform_table() -> None:
    assert medium.console_args(Arch.X86_64)[-1] == "console=ttyS0,115200n8"
    assert medium.console_args(Arch.AARCH64)[-1] == "console=ttyAMA0,115200n8"


def payload_root(tmp_path: Path, modules: list[str]) -> Path:
    """An image root whose bootupd payload has a GRUB (the host's grub-mkimage, prefix /EFI/debian as
    Debian's signed GRUB has) with exactly `modules` built in, beside a shim stand-in."""
    root = tmp_path / "payload-root"
    vendor = root / "usr/lib/bootupd/updates/EFI/debian"
    vendor.mkdir(parents=True)
    run.run(["grub-mkimage", "-O", "x86_64-efi", "-d", HOST_EFI, "-p", "/EFI/debian",
             "-o", vendor / "grubx64.efi", *modules])  # fmt: skip
    (vendor / "shimx64.efi").write_bytes(b"MZ shim stand-in")
    return root


def test_image_grub_with_the_modules_the_medium_needs_gets_the_label_stub(tmp_path: Path) -> None:
    # Where the image's GRUB looks (its built-in prefix /EFI/debian), a stub hands over to the medium's
    # grub.cfg by volume label; shim is the removable-media loader with GRUB beside it.
    root = payload_root(tmp_path, list(medium.PAYLOAD_GRUB_MODULES))
    tree = tmp_path / "esp"
    medium.efi_tree(spec(tmp_path, root), tree)
    stub = (tree / "EFI/debian/grub.cfg").read_text()
    assert stub == medium.label_stub("Test-OS-1_live")
    assert "search --no-floppy --label --set=root Test-OS-1_live" in stub
    assert (tree / "EFI/BOOT/BOOTX64.EFI").read_bytes() == b"MZ shim stand-in"
    assert (tree / "EFI/BOOT/grubx64.efi").is_file()


def test_image_grub_without_iso9660_is_refused_in_one_line(tmp_path: Path) -> None:
    # A GRUB from the image loads no module from the medium (and none at all under Secure Boot): one
    # lacking iso9660 could not read the medium's grub.cfg on a CD.
    modules = [m for m in medium.PAYLOAD_GRUB_MODULES if m != "iso9660"]
    root = payload_root(tmp_path, modules)
    out = tmp_path / "out.iso"
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(
        IsoError, match=r"debian/grubx64\.efi lacks the built-in GRUB modules iso9660 "
    ) as err:
        medium.write_iso(spec(tmp_path, root), out, work)
    assert "\n" not in str(err.value) and err.value.hint
    assert not out.exists() and list(work.iterdir()) == []
