"""A small bootable ostree commit for the deploy tests, and the sysroot filesystems to deploy it into."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from builder import run
from builder.devices import loop_device, mounted

KERNEL = "6.1.0-test"
REF = "imgbuild/test/deploy"
USR_LABEL = b"system_u:object_r:bin_t:s0"

FILE_CONTEXTS = """\
/.*\t\tsystem_u:object_r:default_t:s0
/etc(/.*)?\t\tsystem_u:object_r:etc_t:s0
/etc/systemd/system(/.*)?\t\tsystem_u:object_r:systemd_unit_file_t:s0
/var(/.*)?\t\tsystem_u:object_r:var_t:s0
/var/lib(/.*)?\t\tsystem_u:object_r:var_lib_t:s0
/var/log(/.*)?\t\tsystem_u:object_r:var_log_t:s0
/home(/.*)?\t\tsystem_u:object_r:home_root_t:s0
/boot(/.*)?\t\tsystem_u:object_r:boot_t:s0
/usr(/.*)?\t\tsystem_u:object_r:usr_t:s0
"""

TMPFILES = """\
# what rpm-ostree's integration file and systemd's var.conf say, in short
d /var/home 0755 root root -
d /var/roothome 0700 root root -
d /var/usrlocal 0755 root root -
d /var/usrlocal/bin 0755 root root -
d /var/usrlocal/sbin 0755 root root -
d /var/lib/svc 0750 svc svc -
d /var/lib/ghost 0755 nosuchuser - -
L /var/lib/rpm - - - - ../../usr/share/rpm
d /var/tmp 1777 root root 30d
d /var/cache/%u 0755 - - -
f /var/lib/notadir 0644 - - -
"""


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)


def make_tree(tree: Path, *, composefs: str = "yes", selinux: bool = True, os_release: bool = True) -> None:
    """An ostree-layout tree: /etc in /usr/etc, the kernel in /usr/lib/modules, /var in the factory."""
    for d in ("boot", "sysroot", "var", "usr/bin", "usr/share/rpm"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    if os_release:
        _write(tree / "usr/lib/os-release", 'PRETTY_NAME="Imgbuild Test OS 1"\nID=imgbuildtest\n')
        (tree / "usr/etc/os-release").parent.mkdir(parents=True, exist_ok=True)
        (tree / "usr/etc/os-release").symlink_to("../usr/lib/os-release")
    _write(tree / f"usr/lib/modules/{KERNEL}/vmlinuz", b"not really a kernel\n")
    _write(tree / f"usr/lib/modules/{KERNEL}/initramfs.img", b"not really an initramfs\n")
    _write(tree / "usr/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _write(tree / "usr/etc/group", "root:x:0:\n")
    _write(tree / "usr/lib/passwd", "svc:x:990:991:service:/var/lib/svc:/usr/sbin/nologin\n")
    _write(tree / "usr/lib/group", "svc:x:991:\n")
    _write(tree / "usr/etc/fstab", "# static file system information\n")
    _write(tree / "usr/lib/tmpfiles.d/imgbuild-test.conf", TMPFILES)
    _write(tree / "usr/lib/ostree/prepare-root.conf", f"[composefs]\nenabled = {composefs}\n")
    kargs_d = tree / "usr/lib/bootc/kargs.d"
    _write(kargs_d / "20-all.toml", 'kargs = ["mitigations=auto,nosmt"]\n')
    _write(
        kargs_d / "10-console.toml", 'kargs = ["console=ttyS0,115200n8"]\nmatch-architectures = ["x86_64"]\n'
    )
    _write(kargs_d / "30-arm.toml", 'kargs = ["console=ttyAMA0"]\nmatch-architectures = ["aarch64"]\n')
    binary = tree / "usr/bin/tool"
    _write(binary, b"#!/bin/sh\n", 0o755)
    os.setxattr(binary, "security.selinux", USR_LABEL)
    for name, target in (
        ("home", "var/home"),
        ("root", "var/roothome"),
        ("opt", "var/opt"),
        ("srv", "var/srv"),
    ):
        (tree / name).symlink_to(target)
    (tree / "usr/local").symlink_to("../var/usrlocal")
    # /var content as the importer leaves it: in the factory, with owners, modes, xattrs and links.
    factory = tree / "usr/share/factory/var"
    data = factory / "lib/app/data"
    _write(data, b"state\n", 0o640)
    os.chown(data.parent, 990, 991)
    os.chown(data, 990, 991)
    os.setxattr(data, "user.imgbuild", b"kept")
    os.link(data, factory / "lib/app/data.hardlink")
    (factory / "lib/app/current").symlink_to("data")
    _write(factory / "log/app.log", b"", 0o600)
    # and some in the commit's own var/
    _write(tree / "var/cache/app/index", b"index\n")
    if selinux:
        _write(tree / "usr/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=testpolicy\n")
        contexts = tree / "usr/etc/selinux/testpolicy/contexts/files"
        _write(contexts / "file_contexts", FILE_CONTEXTS)
        _write(contexts / "file_contexts.subs_dist", "/var/home /home\n")
        # ostree checksums the binary policy directory; a real policy.33 is not needed to deploy.
        _write(tree / "usr/etc/selinux/testpolicy/policy/policy.33", b"not a real policy\n")


def commit_tree(repo: Path, tree: Path, ref: str = REF) -> str:
    if not (repo / "config").exists():
        run.run(["ostree", f"--repo={repo}", "init", "--mode=bare"])
    run.run(["ostree", f"--repo={repo}", "commit", f"--branch={ref}", f"--tree=dir={tree}", "--bootable"])
    return run.run(["ostree", f"--repo={repo}", "rev-parse", ref]).out.strip()


@contextmanager
def tmpfs_root(where: Path) -> Iterator[Path]:
    """A root filesystem on a private tmpfs: ostree freezes the filesystem of /boot, never the host's."""
    where.mkdir(parents=True, exist_ok=True)
    with mounted(Path("tmpfs"), where, fstype="tmpfs", options=["size=256m"]):
        yield where


@contextmanager
def ext4_root_and_boot(work: Path, *, root_mib: int = 128, boot_mib: int = 64) -> Iterator[Path]:
    """Two ext4 filesystems in (sparse) image files, loop-mounted as ROOT and ROOT/boot."""
    root = work / "root"
    root.mkdir()
    with ExitStack() as stack:
        images = {}
        for name, size in (("root", root_mib), ("boot", boot_mib)):
            image = work / f"{name}.img"
            with open(image, "wb") as f:
                f.truncate(size * 1024 * 1024)
            run.run(["mkfs.ext4", "-q", "-L", name, image])
            images[name] = image
        stack.enter_context(mounted(stack.enter_context(loop_device(images["root"])), root, fstype="ext4"))
        (root / "boot").mkdir()
        stack.enter_context(
            mounted(stack.enter_context(loop_device(images["boot"])), root / "boot", fstype="ext4")
        )
        yield root
