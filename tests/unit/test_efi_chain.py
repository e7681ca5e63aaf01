"""The boot chain of an image and the Secure Boot decisions: PE signatures, GRUB's built-in prefix and
modules, the ESP layout for a signed shim + GRUB payload, and --secure-boot require in the planner.

GRUB binaries are made here with the host's grub-mkimage (real GRUB images); "signed" binaries get an
Authenticode certificate table appended the way sbsign lays it out (a WIN_CERTIFICATE of type
PKCS_SIGNED_DATA named by the PE's security directory). Its content is not a valid signature: imgbuild
checks that a signature is present, and only firmware checks who made it (tests/vm/test_secureboot.py).
"""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.blueprint import Blueprint
from builder.bootloader.efi_chain import (
    BootChain,
    DirTree,
    authenticode_signed,
    esp_config_dir,
    examine,
    grub_image,
)
from builder.bootloader.grub_efi import esp_tree_from_payload, fallback_csv
from builder.errors import SecureBootUnavailable
from builder.example_secureboot import Variant, place_payload
from builder.manifest import loads
from builder.plan import PlanOptions, plan
from builder.stages.bootloader import check_secure_boot
from builder.vm import Firmware, qemu_argv
from tests.unit.test_plan import FACTS

X86_EFI = Path("/usr/lib/grub/x86_64-efi")
KVER = "6.1.0-99-amd64"


def grub_efi(tmp_path: Path, prefix: str, modules: tuple[str, ...] = ("part_gpt", "fat")) -> bytes:
    out = tmp_path / "grub.efi"
    run.run(["grub-mkimage", "-O", "x86_64-efi", "-d", X86_EFI, "-p", prefix, "-o", out, *modules])
    data = out.read_bytes()
    out.unlink()
    return data


def fake_sign(data: bytes) -> bytes:
    """`data` (a PE32+ image) with a certificate table appended and named by its security directory."""
    pe = bytearray(data + b"\0" * (-len(data) % 8))
    (lfanew,) = struct.unpack_from("<I", pe, 0x3C)
    security = lfanew + 24 + 112 + 4 * 8
    blob = b"\x30\x82" + b"\0" * 30  # where sbsign puts the PKCS#7 SignedData
    cert = struct.pack("<IHH", 8 + len(blob), 0x0200, 0x0002) + blob
    struct.pack_into("<II", pe, security, len(pe), len(cert))
    return bytes(pe + cert)


STUB_MODS = ("part_gpt", "fat", "ext2", "search", "search_fs_uuid", "configfile", "linux", "normal")


def image_tree(
    root: Path, tmp_path: Path, *, sign_grub: bool = True, sign_shim: bool = True, sign_kernel: bool = True
) -> Path:
    """An image's files: a kernel and a Debian-style payload in bootupd's layout."""
    grub = grub_efi(tmp_path, "/EFI/debian", STUB_MODS)
    efi = root / "usr/lib/bootupd/updates/EFI"
    (efi / "debian").mkdir(parents=True)
    (efi / "BOOT").mkdir()
    shim = grub_efi(tmp_path, "/EFI/shim")  # any PE stands in for shim
    (efi / "debian/grubx64.efi").write_bytes(fake_sign(grub) if sign_grub else grub)
    (efi / "debian/shimx64.efi").write_bytes(fake_sign(shim) if sign_shim else shim)
    (efi / "BOOT/BOOTX64.EFI").write_bytes(fake_sign(shim))
    (efi / "BOOT/fbx64.efi").write_bytes(fake_sign(shim))
    (root / f"usr/lib/modules/{KVER}").mkdir(parents=True)
    kernel = grub_efi(tmp_path, "/k")
    (root / f"usr/lib/modules/{KVER}/vmlinuz").write_bytes(fake_sign(kernel) if sign_kernel else kernel)
    return efi


def test_authenticode_signed_reads_the_security_directory(tmp_path: Path) -> None:
    grub = grub_efi(tmp_path, "/EFI/x")
    assert not authenticode_signed(grub)  # grub-mkimage signs nothing
    assert authenticode_signed(fake_sign(grub))
    wrong_type = bytearray(fake_sign(grub))
    struct.pack_into("<H", wrong_type, len(wrong_type) - 32 - 2, 0x0001)  # X.509, not PKCS#7
    assert not authenticode_signed(bytes(wrong_type))
    assert not authenticode_signed(b"not a PE at all" * 10)
    assert not authenticode_signed(b"\x1f\x8bbroken gzip")


def test_grub_image_reads_prefix_and_modules(tmp_path: Path) -> None:
    info = grub_image(fake_sign(grub_efi(tmp_path, "/EFI/debian", ("part_gpt", "search", "configfile"))))
    assert info is not None
    assert info.prefix == "/EFI/debian"
    assert {"part_gpt", "search", "configfile"} <= info.modules
    assert "linux" not in info.modules
    assert grub_image(b"MZ" + b"\0" * 100) is None


def test_esp_config_dir() -> None:
    assert esp_config_dir("/EFI/debian") == "EFI/debian"
    assert esp_config_dir("(hd0,gpt2)/grub2") is None  # another device: not the ESP
    assert esp_config_dir(None) is None


def test_examine_signed_chain(tmp_path: Path) -> None:
    image_tree(tmp_path / "root", tmp_path)
    info = examine(
        DirTree(tmp_path / "root"),
        Arch.X86_64,
        payload="usr/lib/bootupd/updates/EFI",
        kernel=KVER,
        grub_platforms=("x86_64-efi",),
    )
    assert info.chain is BootChain.SIGNED_SHIM_GRUB
    assert info.secure_boot and info.vendor == "debian" and info.grub_prefix == "/EFI/debian"


@pytest.mark.parametrize(
    ("what", "expected_chain", "problem"),
    [
        ("sign_grub", BootChain.UNSIGNED_GRUB, "grubx64.efi is not signed"),
        ("sign_shim", BootChain.UNSIGNED_GRUB, "shimx64.efi is not signed"),
        ("sign_kernel", BootChain.SIGNED_SHIM_GRUB, f"the kernel {KVER} is not signed"),
    ],
)
def test_examine_names_what_is_unsigned(
    tmp_path: Path, what: str, expected_chain: BootChain, problem: str
) -> None:
    image_tree(tmp_path / "root", tmp_path, **{what: False})
    info = examine(
        DirTree(tmp_path / "root"),
        Arch.X86_64,
        payload="usr/lib/bootupd/updates/EFI",
        kernel=KVER,
        grub_platforms=(),
    )
    assert info.chain is expected_chain
    assert any(problem in p for p in info.secure_boot_problems), info.secure_boot_problems


def test_examine_a_signed_grub_without_the_stub_modules(tmp_path: Path) -> None:
    efi = image_tree(tmp_path / "root", tmp_path)
    (efi / "debian/grubx64.efi").write_bytes(fake_sign(grub_efi(tmp_path, "/EFI/debian", ("part_gpt",))))
    info = examine(
        DirTree(tmp_path / "root"),
        Arch.X86_64,
        payload=str(efi.relative_to(tmp_path / "root")),
        kernel=KVER,
        grub_platforms=(),
    )
    assert info.chain is BootChain.SIGNED_SHIM_GRUB
    assert any("lacks the built-in modules" in p and "configfile" in p for p in info.secure_boot_problems)


def test_examine_without_payload(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    view = DirTree(root)
    efi = examine(view, Arch.X86_64, payload=None, kernel=None, grub_platforms=("i386-pc", "x86_64-efi"))
    assert efi.chain is BootChain.UNSIGNED_GRUB and not efi.secure_boot
    bios = examine(view, Arch.X86_64, payload=None, kernel=None, grub_platforms=("i386-pc",))
    assert bios.chain is BootChain.BIOS_ONLY and "no EFI boot loader" in bios.secure_boot_problems[0]


def test_esp_from_signed_payload_writes_the_stub_where_grub_looks(tmp_path: Path) -> None:
    """Debian's signed GRUB has /EFI/debian built in: a payload whose vendor directory is named otherwise
    still gets a stub there, or GRUB would find no grub.cfg (and under Secure Boot cannot be told where)."""
    efi = image_tree(tmp_path / "root", tmp_path)
    (efi / "debian").rename(efi / "vendor")
    tree = tmp_path / "esp"
    stubs = esp_tree_from_payload(efi, tree, Arch.X86_64, boot_fs_uuid="0b0e")
    assert stubs == [tree / "EFI/vendor/grub.cfg", tree / "EFI/debian/grub.cfg"]
    assert (tree / "EFI/debian/grub.cfg").read_text() == (tree / "EFI/vendor/grub.cfg").read_text()


def test_esp_from_signed_payload_adds_the_fallback_csv(tmp_path: Path) -> None:
    efi = image_tree(tmp_path / "root", tmp_path)
    tree = tmp_path / "esp"
    esp_tree_from_payload(efi, tree, Arch.X86_64, boot_fs_uuid="0b0e")
    csv = (tree / "EFI/debian/BOOTX64.CSV").read_bytes()
    assert csv == fallback_csv("shimx64.efi", "debian")
    assert csv[:2] == b"\xff\xfe" and csv[2:].decode("utf-16-le").startswith("shimx64.efi,debian,,")
    # shim at the removable path runs the fallback, which makes the entry: no GRUB needed beside it.
    assert sorted(p.name for p in (tree / "EFI/BOOT").iterdir()) == ["BOOTX64.EFI", "fbx64.efi"]


def test_esp_keeps_the_payloads_own_csv(tmp_path: Path) -> None:
    efi = image_tree(tmp_path / "root", tmp_path)
    (efi / "debian/BOOTX64.CSV").write_bytes(b"own")
    esp_tree_from_payload(efi, tmp_path / "esp", Arch.X86_64, boot_fs_uuid="0b0e")
    assert (tmp_path / "esp/EFI/debian/BOOTX64.CSV").read_bytes() == b"own"


def test_esp_shim_at_the_removable_path_without_fallback_gets_grub_beside_it(tmp_path: Path) -> None:
    efi = image_tree(tmp_path / "root", tmp_path)
    (efi / "BOOT/fbx64.efi").unlink()
    tree = tmp_path / "esp"
    esp_tree_from_payload(efi, tree, Arch.X86_64, boot_fs_uuid="0b0e")
    assert (tree / "EFI/BOOT/grubx64.efi").read_bytes() == (efi / "debian/grubx64.efi").read_bytes()
    assert not (tree / "EFI/debian/BOOTX64.CSV").exists()  # no fallback: nobody reads it


@pytest.mark.parametrize("variant", list(Variant))
def test_place_payload_layouts(tmp_path: Path, variant: Variant) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/lib/shim").mkdir(parents=True)
    (tree / "usr/lib/grub/x86_64-efi-signed").mkdir(parents=True)
    for name in ("shimx64", "fbx64", "mmx64"):
        (tree / f"usr/lib/shim/{name}.efi.signed").write_bytes(name.encode())
    (tree / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed").write_bytes(b"grub")
    versions = {"shim-signed:amd64": "1.51", "grub-efi-amd64-signed:amd64": "1+2.06"}
    efi = place_payload(tree, Arch.X86_64, variant, versions)
    assert efi == tree / variant.payload_dir
    files = {p.relative_to(efi).as_posix(): p.read_bytes() for p in efi.rglob("*") if p.is_file()}
    assert files["BOOT/BOOTX64.EFI"] == files["debian/shimx64.efi"] == b"shimx64"
    assert files["BOOT/fbx64.efi"] == b"fbx64" and files["debian/mmx64.efi"] == b"mmx64"
    assert files["debian/grubx64.efi"] == b"grub"
    assert files["debian/BOOTX64.CSV"] == fallback_csv("shimx64.efi", "debian")
    metadata = tree / "usr/lib/bootupd/updates/EFI.json"
    if variant is Variant.SECUREBOOT:
        doc = json.loads(metadata.read_text())
        assert set(doc) == {"timestamp", "version"}
        assert doc["version"] == "shim-signed-1.51,grub-efi-amd64-signed-1+2.06"
    else:
        assert not metadata.exists()


def test_plan_records_the_chain_and_refuses_without_secure_boot() -> None:
    manifest = plan(FACTS, Blueprint.empty(), ["qcow2"], PlanOptions())
    grub = next(s for _, s in manifest.stages() if s.type == "bootloader.grub")
    assert grub.options["chain"] == FACTS.boot_chain and "secure_boot" not in grub.options
    with pytest.raises(SecureBootUnavailable, match=r"cannot boot with Secure Boot: .*unsigned GRUB"):
        plan(FACTS, Blueprint.empty(), ["qcow2"], PlanOptions(secure_boot=True))


def test_plan_with_secure_boot_required() -> None:
    facts = replace(FACTS, boot_chain=BootChain.SIGNED_SHIM_GRUB.value, secure_boot_problems=())
    manifest = plan(facts, Blueprint.empty(), ["qcow2"], PlanOptions(secure_boot=True))
    grub = next(s for _, s in manifest.stages() if s.type == "bootloader.grub")
    assert grub.options["chain"] == "signed-shim-grub" and grub.options["secure_boot"] == "require"
    assert loads(manifest.dumps("json")).pipelines == manifest.pipelines  # the stage schema takes both


def test_qemu_argv_secure_boot_firmware(tmp_path: Path) -> None:
    argv = qemu_argv(Arch.X86_64, Firmware.UEFI_SECURE, tmp_path / "d.qcow2", tmp_path, memory_mib=512, smp=1)
    line = " ".join(argv)
    assert "q35,smm=on" in line and "driver=cfi.pflash01,property=secure,value=on" in line
    assert (
        "OVMF_CODE_4M.secboot.fd" in line
        and (tmp_path / "efivars.fd").read_bytes() == Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").read_bytes()
    )
    plain = " ".join(
        qemu_argv(Arch.X86_64, Firmware.UEFI, tmp_path / "d.qcow2", tmp_path, memory_mib=512, smp=1)
    )
    assert "smm=on" not in plain and "secboot" not in plain


def test_the_stage_checks_the_deployed_files_again(tmp_path: Path) -> None:
    """`imgbuild build MANIFEST` with secure_boot: require re-reads the deployment (a manifest can be run
    long after it was planned, against a changed cache)."""
    image_tree(tmp_path / "good", tmp_path)
    check_secure_boot(tmp_path / "good", Arch.X86_64, "ext4")
    with pytest.raises(SecureBootUnavailable, match=r"lacks the built-in modules xfs"):
        check_secure_boot(tmp_path / "good", Arch.X86_64, "xfs")  # not built into this GRUB
    image_tree(tmp_path / "bad", tmp_path, sign_grub=False)
    with pytest.raises(SecureBootUnavailable, match=r"grubx64\.efi is not signed"):
        check_secure_boot(tmp_path / "bad", Arch.X86_64, "ext4")
