"""Applying a blueprint's customizations to an ostree deployment, by writing files only.

No program of the image runs (it may be built for another architecture). Each family lives in its own
module; `apply` runs them in the order their dependencies need (groups before users, users before the files
they own) and returns one human-readable line per thing it did.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from builder.blueprint.model import Blueprint, DiskCustomization, LvmPartition, PlainPartition
from builder.customize.accounts import AccountFiles, apply_accounts, plan_accounts
from builder.customize.files import apply_files, check_files
from builder.customize.ignition import apply_ignition, check_ignition
from builder.customize.services import PRESET, apply_services, check_services
from builder.customize.sshd import DROP_IN as SSHD_DROP_IN
from builder.customize.sshd import apply_sshd, check_sshd, sshd_lines
from builder.customize.system import (
    TIMESYNCD_DROP_IN,
    apply_hostname,
    apply_locale,
    apply_ntp,
    apply_timezone,
    check_timezone,
)
from builder.customize.target import Target
from builder.errors import BlueprintError
from builder.sizefmt import human

__all__ = ["Target", "apply", "check", "describe"]

STEPS: tuple[Callable[[Blueprint, Target], list[str]], ...] = (
    apply_accounts,
    apply_hostname,
    apply_timezone,
    apply_ntp,
    apply_locale,
    apply_services,
    apply_files,
    apply_sshd,
    apply_ignition,
)


def _system_files(bp: Blueprint) -> list[str]:
    """The files the system customizations write (whole files, renamed over what is there)."""
    paths = ["/etc/hostname"] if bp.hostname is not None else []
    paths += [TIMESYNCD_DROP_IN] if bp.ntpservers else []
    paths += ["/etc/locale.conf"] if bp.languages else []
    paths += ["/etc/vconsole.conf"] if bp.keyboard is not None else []
    paths += ["/etc/localtime"] if bp.timezone is not None else []
    paths += [PRESET] if bp.services_enabled or bp.services_disabled else []
    paths += [SSHD_DROP_IN] if sshd_lines(bp) else []
    return paths


def _check_system_files(bp: Blueprint, target: Target) -> None:
    """Nothing is written through a link of the image (check_writable) nor over one of its directories."""
    for path in _system_files(bp):
        host = target.check_writable(path)
        if host.is_dir() and not host.is_symlink():
            raise BlueprintError(f"cannot write {path}: it is a directory in the image")


def check(bp: Blueprint, target: Target) -> None:
    """Everything that can refuse the blueprint against this image, before anything is written."""
    _check_system_files(bp, target)
    accounts = plan_accounts(bp, target).files if (bp.users or bp.groups or bp.sshkeys) else None
    check_services(bp, target)
    check_timezone(bp, target)
    check_sshd(bp, target)
    check_ignition(bp, target)
    if bp.files or bp.directories:
        check_files(bp, target, accounts or AccountFiles.read(target))


def apply(bp: Blueprint, *, deploy_root: Path, var_root: Path, boot_root: Path | None) -> list[str]:
    """Write the customizations into the deployment checkout `deploy_root` (its /etc), the stateroot's
    `var_root` and `boot_root`; return what was done, one line each.

    The blueprint is checked against the image first, so a refusal leaves the deployment untouched.
    """
    target = Target(Path(deploy_root), Path(var_root), Path(boot_root) if boot_root is not None else None)
    check(bp, target)
    done: list[str] = []
    for step in STEPS:
        done += step(bp, target)
    return done


def describe(bp: Blueprint) -> list[str]:
    """What `apply` will do, one line per customization, without a deployment (for `blueprint check`)."""
    lines = [f"group {g.name}" + (f" (gid {g.gid})" if g.gid is not None else "") for g in bp.groups]
    for u in bp.users:
        details = [f"uid {u.uid}" if u.uid is not None else "", "password" if u.password else "no password"]
        details += [f"groups {','.join(u.groups)}" if u.groups else "", "ssh key" if u.key else ""]
        lines.append(f"user {u.name} ({', '.join(d for d in details if d)})")
    lines += [f"ssh key for {k.user}" for k in bp.sshkeys]
    if bp.hostname is not None:
        lines.append(f"hostname {bp.hostname}")
    if bp.timezone is not None:
        lines.append(f"timezone {bp.timezone}")
    if bp.ntpservers:
        lines.append(f"ntp servers {' '.join(bp.ntpservers)}")
    if bp.languages:
        lines.append(f"locale LANG={bp.languages[0]}")
    if bp.keyboard is not None:
        lines.append(f"keyboard {bp.keyboard}")
    for verb, units in (("enable", bp.services_enabled), ("disable", bp.services_disabled)):
        lines += [f"{verb} {unit}" for unit in units]
    lines += [f"mask {unit}" for unit in bp.services_masked]
    for d in bp.directories:
        lines.append(f"directory {d.path}" + (f" mode {d.mode:04o}" if d.mode is not None else ""))
    for f in bp.files:
        lines.append(f"file {f.path} ({human(len((f.data or '').encode()))})")
    if bp.sshd is not None:
        lines.append(f"sshd: {'; '.join(sshd_lines(bp))}")
    if bp.ignition is not None:
        lines.append(
            "ignition: embedded config" if bp.ignition.embedded_config else "ignition: first-boot URL"
        )
    if bp.fips:
        lines.append("fips: kernel argument fips=1 (the image's crypto policy must already be FIPS)")
    for fs in bp.filesystems:
        lines.append(f"filesystem {fs.mountpoint} at least {human(fs.minsize)}")
    if bp.disk is not None:
        lines += _describe_disk(bp.disk)
    return lines


def _describe_disk(disk: DiskCustomization) -> list[str]:
    size = f", at least {human(disk.minsize)}" if disk.minsize else ""
    lines = [f"disk: {disk.type or 'gpt'} partition table{size}"]
    for index, p in enumerate(disk.partitions):
        head = f"partition {index + 1}: {p.type} at least {human(p.minsize)}"
        if isinstance(p, PlainPartition):
            lines.append(
                f"{head}, {p.fs_type or 'default filesystem'} on {p.mountpoint or '(no mount point)'}"
            )
        elif isinstance(p, LvmPartition):
            volumes = ", ".join(
                f"{lv.name or 'lv'} {lv.mountpoint or '-'} {lv.minsize}" for lv in p.logical_volumes
            )
            lines.append(f"{head}, volume group {p.name or '(default name)'}: {volumes}")
        else:
            lines.append(
                f"{head}, subvolumes {', '.join(f'{s.name} on {s.mountpoint}' for s in p.subvolumes)}"
            )
    return lines
