"""customizations.sshd: an sshd_config drop-in with the keys Image Builder knows."""

from __future__ import annotations

import re

from builder.blueprint.model import Blueprint
from builder.customize.target import Target
from builder.errors import BlueprintError

DROP_IN = "/etc/ssh/sshd_config.d/imgbuild.conf"
_INCLUDE = re.compile(r"^\s*Include\s+.*sshd_config\.d/", re.MULTILINE | re.IGNORECASE)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def sshd_lines(bp: Blueprint) -> list[str]:
    if bp.sshd is None:
        return []
    sshd = bp.sshd
    lines = []
    if sshd.password_authentication is not None:
        lines.append(f"PasswordAuthentication {_yes_no(sshd.password_authentication)}")
    if sshd.kbd_interactive_authentication is not None:
        lines.append(f"KbdInteractiveAuthentication {_yes_no(sshd.kbd_interactive_authentication)}")
    if sshd.client_alive_interval is not None:
        lines.append(f"ClientAliveInterval {sshd.client_alive_interval}")
    if sshd.permit_root_login is not None:
        lines.append(f"PermitRootLogin {sshd.permit_root_login}")
    return lines


def check_sshd(bp: Blueprint, target: Target) -> None:
    config = target.read_text("/etc/ssh/sshd_config") if sshd_lines(bp) else ""
    if config is None:
        raise BlueprintError(
            "customizations.sshd: the image has no /etc/ssh/sshd_config",
            hint="install openssh-server in the image",
        )
    if config and not _INCLUDE.search(config):
        raise BlueprintError(
            "customizations.sshd: the image's sshd_config does not include /etc/ssh/sshd_config.d/*.conf",
            hint="add `Include /etc/ssh/sshd_config.d/*.conf` at the top of sshd_config in the image",
        )


def apply_sshd(bp: Blueprint, target: Target) -> list[str]:
    lines = sshd_lines(bp)
    if not lines:
        return []
    check_sshd(bp, target)
    text = "# written by imgbuild from the blueprint\n" + "\n".join(lines) + "\n"
    target.write(DROP_IN, text.encode(), 0o600)
    return [f"sshd: {'; '.join(lines)} in {DROP_IN}"]
