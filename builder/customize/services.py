"""customizations.services: the symlinks `systemctl --root=DEPLOYMENT enable|disable|mask` would make.

The unit's [Install] section (WantedBy=, RequiredBy=, UpheldBy=, Alias=, Also=, DefaultInstance=) is read from
the deployment's /etc/systemd/system or /usr/lib/systemd/system. A preset file records the choices too, so
that systemd's first-boot `preset-all` does not re-enable a unit the blueprint disabled.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from builder.blueprint.model import Blueprint
from builder.customize.target import Target
from builder.errors import BlueprintError

UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
ETC_UNITS = "/etc/systemd/system"
PRESET = "/etc/systemd/system-preset/00-imgbuild.preset"
MAX_LINKS = 8
DEPENDENCY_DIRS = {"WantedBy": "wants", "RequiredBy": "requires", "UpheldBy": "upholds"}


@dataclass(frozen=True)
class Install:
    path: str  # the unit file as the booted system sees it
    dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    default_instance: str | None = None
    masked: bool = False  # the unit resolves to /dev/null

    @property
    def empty(self) -> bool:
        return not (any(self.dependencies.values()) or self.aliases or self.also)

    def wanted_by(self, key: str) -> tuple[str, ...]:
        return self.dependencies.get(key, ())


def _template_of(name: str) -> tuple[str, str | None]:
    """`getty@tty1.service` -> (`getty@.service`, `tty1`); a plain name -> (name, None)."""
    stem, _, suffix = name.rpartition(".")
    if "@" in stem:
        prefix, _, instance = stem.partition("@")
        return f"{prefix}@.{suffix}", instance or None
    return name, None


def _parse_install(path: str, text: str) -> Install:
    values: dict[str, list[str]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Install]" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        words = value.split()
        if words:
            values.setdefault(key.strip(), []).extend(words)
        else:
            values[key.strip()] = []  # an empty assignment resets the list, as in systemd
    default = values.get("DefaultInstance")
    return Install(
        path=path,
        dependencies={key: tuple(values.get(key, ())) for key in DEPENDENCY_DIRS},
        aliases=tuple(values.get("Alias", ())),
        also=tuple(values.get("Also", ())),
        default_instance=default[-1] if default else None,
    )


def _resolve(target: Target, path: str) -> str | None:
    """Follow a unit's symlinks (aliases) inside the image: the real file's path, "/dev/null", or None."""
    for _ in range(MAX_LINKS):
        host = target.image(path)
        if not host.is_symlink():
            return path if host.is_file() else None
        link = str(host.readlink())
        if link == "/dev/null":
            return link
        # An absolute link means the image's root, never the build host's.
        path = posixpath.normpath(
            link if link.startswith("/") else posixpath.join(posixpath.dirname(path), link)
        )
    return None


def lookup_unit(target: Target, name: str, key: str) -> Install | None:
    """The [Install] section of the unit file `name` (or its template) resolves to, aliases followed;
    None when the image has no such unit. A masked unit comes back with `masked` set."""
    template, _ = _template_of(name)
    # With a merged /usr, /lib is a link to usr/lib: the same files, and a link this code does not follow.
    directories = UNIT_DIRS if not target.image("/lib").is_symlink() else UNIT_DIRS[:2]
    for directory in directories:
        for candidate in dict.fromkeys((name, template)):
            where = f"{directory}/{candidate}"
            path = _resolve(target, where)
            if path == "/dev/null":
                return Install(path=where, masked=True)
            if path is not None:
                return _parse_install(path, target.image(path).read_text(encoding="utf-8", errors="replace"))
            if target.image(where).is_dir() and not target.image(where).is_symlink():
                # systemctl: "Failed to look up unit file state: Is a directory".
                raise BlueprintError(
                    f"customizations.services.{key}: {where} is a directory in the image, not a unit file"
                )
    return None


def find_unit(target: Target, name: str, key: str) -> Install:
    """Like lookup_unit, but the unit must exist (enable and disable, as systemctl requires)."""
    install = lookup_unit(target, name, key)
    if install is None:
        raise BlueprintError(
            f"customizations.services.{key}: the image has no unit {name}",
            hint="name a unit from the image's /usr/lib/systemd/system (check the spelling and the suffix)",
        )
    return install


@dataclass
class ServicePlan:
    """What the service customizations will change, worked out before anything is written."""

    links: list[tuple[str, str]] = field(default_factory=list)  # (link, what it points to)
    removals: list[Path] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def _enable(target: Target, name: str, seen: set[str]) -> list[tuple[str, str]]:
    if name in seen:
        return []
    seen.add(name)
    install = find_unit(target, name, "enabled")
    if install.masked:
        raise BlueprintError(
            f"customizations.services.enabled: {name} is masked in the image ({install.path})",
            hint="a masked unit cannot be enabled (systemctl refuses it too)",
        )
    real_name = posixpath.basename(install.path)
    if "@" not in name and real_name != name:
        name = real_name  # an alias: systemctl enables the unit it names
    template, instance = _template_of(name)
    if template == name and "@" in name:  # a template without an instance
        if install.default_instance is None:
            raise BlueprintError(
                f"customizations.services.enabled: {name} is a template: name an instance, such as "
                f"{name.replace('@.', '@NAME.')}"
            )
        name = name.replace("@.", f"@{install.default_instance}.")
    if install.empty:
        raise BlueprintError(
            f"customizations.services.enabled: {name} has no [Install] section, so it cannot be enabled",
            hint="it is static (started by another unit) or needs a unit in the image that wants it",
        )
    links = [
        (f"{ETC_UNITS}/{wanted_by}.{suffix}/{name}", install.path)
        for key, suffix in DEPENDENCY_DIRS.items()
        for wanted_by in install.wanted_by(key)
    ]
    links += [
        (f"{ETC_UNITS}/{alias}", install.path)
        for alias in install.aliases
        if instance is None or "@" not in alias
    ]
    for also in install.also:
        links += _enable(target, also, seen)
    return links


def _disable(target: Target, name: str, seen: set[str]) -> list[Path]:
    """The unit's links in /etc (and those of its Also= units, as systemctl disable does)."""
    if name in seen:
        return []
    seen.add(name)
    install = find_unit(target, name, "disabled")
    if install.masked:
        return []  # systemctl: "Unit ... is masked, ignoring"; the mask stays
    vendor = [
        f"{d}/{wanted_by}.{suffix}/{name}"
        for d in UNIT_DIRS[1:]
        for key, suffix in DEPENDENCY_DIRS.items()
        for wanted_by in install.wanted_by(key)
        if target.image(f"{d}/{wanted_by}.{suffix}/{name}").is_symlink()
    ]
    if vendor:
        raise BlueprintError(
            f"customizations.services.disabled: {name} is enabled by the image itself ({vendor[0]})",
            hint="mask it instead (customizations.services.masked)",
        )
    links = []
    etc = target.host(ETC_UNITS)
    names = {name, *install.aliases}
    unit_file = posixpath.basename(install.path)
    if etc.is_dir() and not etc.is_symlink():
        for directory, subdirectories, files in os.walk(etc):  # does not follow links to directories
            for entry in [*subdirectories, *files]:
                link = Path(directory, entry)
                # Only links of this unit: named after it or its aliases and pointing at its file.
                if entry in names and link.is_symlink() and link.readlink().name in (unit_file, name):
                    links.append(link)
    return links + [link for also in install.also for link in _disable(target, also, seen)]


def _check_mask(target: Target, name: str) -> None:
    """As `systemctl mask`: any name can be masked, present in the image or not, except over a real file
    or directory in /etc/systemd/system (systemctl: 'file ... already exists')."""
    host = target.host(f"{ETC_UNITS}/{name}")
    if host.is_symlink() or not host.exists():
        return
    what = "a directory" if host.is_dir() else "a unit file"
    raise BlueprintError(
        f"customizations.services.masked: {ETC_UNITS}/{name} is {what} in the image, it cannot be masked",
        hint="systemctl mask refuses this too: a mask is a link in /etc/systemd/system",
    )


def plan_services(bp: Blueprint, target: Target) -> ServicePlan:
    """Every unit looked up and every link worked out: a typo fails here, before anything is written."""
    plan = ServicePlan()
    for name in bp.services_enabled:
        links = _enable(target, name, set())
        plan.links += links
        plan.presets.append(f"enable {name}")
        plan.done.append(f"service {name}: enabled ({', '.join(link for link, _ in links)})")
    for name in bp.services_disabled:
        removals = _disable(target, name, set())
        plan.removals += removals
        plan.presets.append(f"disable {name}")
        masked = find_unit(target, name, "disabled").masked
        plan.done.append(
            f"service {name}: "
            + ("masked in the image, left masked" if masked else "disabled")
            + f" ({len(removals)} links removed)"
        )
    for name in bp.services_masked:
        _check_mask(target, name)
        plan.links.append((f"{ETC_UNITS}/{name}", "/dev/null"))
        plan.done.append(f"service {name}: masked ({ETC_UNITS}/{name} -> /dev/null)")
    return plan


def check_services(bp: Blueprint, target: Target) -> None:
    plan_services(bp, target)


def apply_services(bp: Blueprint, target: Target) -> list[str]:
    plan = plan_services(bp, target)
    for removal in plan.removals:
        removal.unlink(missing_ok=True)
    for link, points_to in plan.links:
        target.symlink(link, points_to)
    if plan.presets:
        text = "# written by imgbuild from the blueprint\n" + "\n".join(plan.presets) + "\n"
        target.write(PRESET, text.encode())
    return plan.done
