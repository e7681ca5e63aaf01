"""hostname, timezone, NTP servers, locale and keyboard: plain files in the deployment's /etc."""

from __future__ import annotations

import re

from builder.blueprint.model import Blueprint
from builder.customize.target import Target
from builder.errors import BlueprintError

TIMESYNCD_DROP_IN = "/etc/systemd/timesyncd.conf.d/imgbuild.conf"
CHRONY_CONFIGS = ("/etc/chrony.conf", "/etc/chrony/chrony.conf")  # Fedora, Debian
_CHRONY_SOURCE = re.compile(r"\s*(server|pool|peer)\s")


def apply_hostname(bp: Blueprint, target: Target) -> list[str]:
    if bp.hostname is None:
        return []
    target.write("/etc/hostname", f"{bp.hostname}\n".encode())
    return [f"hostname: {bp.hostname} in /etc/hostname"]


def check_timezone(bp: Blueprint, target: Target) -> None:
    if bp.timezone is None:
        return
    zoneinfo = target.image("/usr/share/zoneinfo")
    if zoneinfo.is_dir() and not (zoneinfo / bp.timezone).is_file():
        raise BlueprintError(
            f"customizations.timezone.timezone: the image has no time zone {bp.timezone!r}",
            hint="use a name from the image's /usr/share/zoneinfo, such as Europe/Berlin or UTC",
        )


def apply_timezone(bp: Blueprint, target: Target) -> list[str]:
    if bp.timezone is None:
        return []
    check_timezone(bp, target)
    target.symlink("/etc/localtime", f"../usr/share/zoneinfo/{bp.timezone}")
    # Debian reads /etc/timezone too; keep it in step when the image has one.
    if target.host("/etc/timezone").is_file():
        target.write("/etc/timezone", f"{bp.timezone}\n".encode())
    return [f"timezone: /etc/localtime -> ../usr/share/zoneinfo/{bp.timezone}"]


def _chrony(target: Target, servers: tuple[str, ...]) -> str | None:
    for path in CHRONY_CONFIGS:
        text = target.read_text(path)
        if text is None:
            continue
        # Comment out the image's own sources so that only the blueprint's are used, as Image Builder does.
        lines = [f"#{line}" if _CHRONY_SOURCE.match(line) else line for line in text.splitlines()]
        lines += [f"server {server} iburst" for server in servers]
        target.write(path, "\n".join(lines).encode() + b"\n")
        return path
    return None


def apply_ntp(bp: Blueprint, target: Target) -> list[str]:
    if not bp.ntpservers:
        return []
    servers = " ".join(bp.ntpservers)
    target.write(
        TIMESYNCD_DROP_IN, f"# written by imgbuild from the blueprint\n[Time]\nNTP={servers}\n".encode()
    )
    done = [f"ntp servers: {servers} in {TIMESYNCD_DROP_IN}"]
    chrony = _chrony(target, bp.ntpservers)
    if chrony:
        done.append(f"ntp servers: {servers} in {chrony}")
    return done


def apply_locale(bp: Blueprint, target: Target) -> list[str]:
    done = []
    if bp.languages:
        target.write("/etc/locale.conf", f"LANG={bp.languages[0]}\n".encode())
        done.append(f"locale: LANG={bp.languages[0]} in /etc/locale.conf")
    if bp.keyboard is not None:
        current = target.read_text("/etc/vconsole.conf") or ""
        kept = [line for line in current.splitlines() if not line.startswith("KEYMAP=")]
        target.write("/etc/vconsole.conf", "\n".join([*kept, f"KEYMAP={bp.keyboard}"]).encode() + b"\n")
        done.append(f"keyboard: KEYMAP={bp.keyboard} in /etc/vconsole.conf")
    return done
