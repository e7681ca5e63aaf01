"""Between the validated document (plain dicts, already checked against blueprints/schema.json) and the model.

`from_document` does the checks a schema cannot express (sizes, path policies, duplicates, contradictions)
and raises Problem with the key path; the loader turns that into a BlueprintError naming the line.
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from builder.blueprint.model import (
    Blueprint,
    DirectoryCustomization,
    FileCustomization,
    FilesystemCustomization,
    Group,
    Ignition,
    InstallerCustomization,
    IsoCustomization,
    Sshd,
    SshKey,
    User,
)
from builder.blueprint.partitions import disk_from_document, disk_to_dict, required_size
from builder.blueprint.policy import canonical_problem, directory_problem, file_problem, mountpoint_problem
from builder.blueprint.problem import KeyPath, Problem

Doc = Mapping[str, Any]

SERVICE_LISTS = ("enabled", "disabled", "masked")
# Passwords starting with these are crypt hashes, kept as they are (SHA-512, SHA-256, bcrypt, yescrypt).
CRYPTED_PREFIXES = ("$6$", "$5$", "$2b$", "$y$")
# Where a home directory can be: the places an ostree system keeps in its stateroot's /var.
HOME_ROOTS = ("/home", "/var", "/root", "/srv", "/opt", "/mnt")


def unit_name(name: str) -> str:
    """systemctl's reading of a bare name: `sshd` means `sshd.service`."""
    known = (".service", ".socket", ".timer", ".target", ".path", ".mount", ".automount", ".swap", ".slice")
    return name if name.endswith(known) else f"{name}.service"


def _unique(path: KeyPath, values: Iterable[Any], what: str, key: str) -> None:
    seen: set[Any] = set()
    for index, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            raise Problem((*path, index, key), f"duplicate {what}: {value}")
        seen.add(value)


def _check_account_fields(path: KeyPath, raw: Doc) -> None:
    """Values that end up in /etc/passwd and /etc/shadow cannot hold their separators."""
    for key in ("description", "home", "shell", "password"):
        value = raw.get(key)
        if value is None:
            continue
        if key == "password" and not value.startswith(CRYPTED_PREFIXES):
            bad = "\0" in value  # a plain password is hashed: only NUL cannot be hashed
        else:
            bad = ":" in value or any(ord(c) < 32 or ord(c) == 127 for c in value)
        if bad:
            what = "a NUL character" if key == "password" else "':' or control characters"
            raise Problem((*path, key), f"must not contain {what}")


def _users(doc: Doc) -> tuple[User, ...]:
    path: KeyPath = ("customizations", "user")
    users = []
    for index, raw in enumerate(doc.get("user", ())):
        home = raw.get("home")
        if home is not None:
            home = home.rstrip("/") or "/"  # Image Builder trims a trailing '/'
            if problem := canonical_problem(home):
                raise Problem((*path, index, "home"), problem)
            if not any(home == r or home.startswith(f"{r}/") for r in HOME_ROOTS):
                raise Problem(
                    (*path, index, "home"),
                    f"home {home!r} is not writable on an ostree system: put it under "
                    f"{', '.join(HOME_ROOTS)}",
                )
        shell = raw.get("shell")
        if shell is not None and (problem := canonical_problem(shell)):
            raise Problem((*path, index, "shell"), problem)
        _check_account_fields((*path, index), raw)
        users.append(
            User(
                name=raw["name"],
                description=raw.get("description") or None,
                password=raw.get("password") or None,  # "" is no password, as when it is absent
                key=raw.get("key") or None,
                home=home,
                shell=shell,
                groups=tuple(dict.fromkeys(raw.get("groups", ()))),
                uid=raw.get("uid"),
                gid=raw.get("gid"),
                expiredate=raw.get("expiredate"),
                force_password_reset=raw.get("force_password_reset", False),
            )
        )
    _unique(path, (u.name for u in users), "user name", "name")
    _unique(path, (u.uid for u in users), "user ID", "uid")
    return tuple(users)


def _groups(doc: Doc) -> tuple[Group, ...]:
    path: KeyPath = ("customizations", "group")
    groups = tuple(Group(name=g["name"], gid=g.get("gid")) for g in doc.get("group", ()))
    _unique(path, (g.name for g in groups), "group name", "name")
    _unique(path, (g.gid for g in groups), "group ID", "gid")
    return groups


def _files(doc: Doc) -> tuple[tuple[FileCustomization, ...], tuple[DirectoryCustomization, ...]]:
    files = []
    for index, raw in enumerate(doc.get("files", ())):
        if problem := file_problem(raw["path"]):
            raise Problem(("customizations", "files", index, "path"), problem)
        mode = int(raw["mode"], 8) if "mode" in raw else None
        files.append(FileCustomization(raw["path"], raw.get("user"), raw.get("group"), mode, raw.get("data")))
    directories = []
    for index, raw in enumerate(doc.get("directories", ())):
        if problem := directory_problem(raw["path"]):
            raise Problem(("customizations", "directories", index, "path"), problem)
        mode = int(raw["mode"], 8) if "mode" in raw else None
        directories.append(
            DirectoryCustomization(
                raw["path"], raw.get("user"), raw.get("group"), mode, raw.get("ensure_parents", False)
            )
        )
    _unique(("customizations", "files"), (f.path for f in files), "file path", "path")
    _unique(("customizations", "directories"), (d.path for d in directories), "directory path", "path")
    directory_paths = {d.path for d in directories}
    file_paths = {f.path for f in files}
    for index, file in enumerate(files):
        if file.path in directory_paths:
            raise Problem(("customizations", "files", index, "path"), f"{file.path} is also a directory")
    node_paths = [("files", i, f.path) for i, f in enumerate(files)]
    node_paths += [("directories", i, d.path) for i, d in enumerate(directories)]
    for kind, index, path in node_paths:
        parent = path.rsplit("/", 1)[0]
        while parent:
            if parent in file_paths:
                raise Problem(("customizations", kind, index, "path"), f"its parent {parent} is a file")
            parent = parent.rsplit("/", 1)[0]
    return tuple(files), tuple(directories)


def _filesystems(doc: Doc) -> tuple[FilesystemCustomization, ...]:
    path: KeyPath = ("customizations", "filesystem")
    filesystems = []
    for index, raw in enumerate(doc.get("filesystem", ())):
        if "minsize" in raw and "size" in raw:
            raise Problem((*path, index, "size"), "size is an alias of minsize: set only one of them")
        minsize = required_size((*path, index), raw, "size" if "size" in raw else "minsize")
        if problem := mountpoint_problem(raw["mountpoint"]):
            raise Problem((*path, index, "mountpoint"), problem)
        filesystems.append(FilesystemCustomization(raw["mountpoint"], minsize))
    _unique(path, (f.mountpoint for f in filesystems), "mount point", "mountpoint")
    return tuple(filesystems)


def _services(doc: Doc) -> dict[str, tuple[str, ...]]:
    services = doc.get("services", {})
    lists = {key: tuple(dict.fromkeys(unit_name(u) for u in services.get(key, ()))) for key in SERVICE_LISTS}
    seen: dict[str, str] = {}
    for key in SERVICE_LISTS:
        for index, name in enumerate(services.get(key, ())):
            unit = unit_name(name)
            if unit in seen and seen[unit] != key:
                raise Problem(
                    ("customizations", "services", key, index), f"{unit} is also in services.{seen[unit]}"
                )
            seen[unit] = key
    return lists


def _ignition(doc: Doc) -> Ignition | None:
    raw = doc.get("ignition")
    if not raw:
        return None
    path: KeyPath = ("customizations", "ignition")
    if "embedded" in raw and "firstboot" in raw:
        raise Problem((*path, "firstboot"), "embedded and firstboot cannot both be set: choose one")
    if "firstboot" in raw:
        return Ignition(firstboot_url=raw["firstboot"]["url"])
    encoded = raw["embedded"]["config"]
    try:
        config = base64.b64decode("".join(encoded.split()), validate=True)
        json.loads(config)
    except (binascii.Error, ValueError) as e:
        raise Problem((*path, "embedded", "config"), "must be a base64-encoded Ignition config (JSON)") from e
    return Ignition(embedded_config=config)


def _kernel_append(doc: Doc) -> tuple[str, ...]:
    append = doc.get("kernel", {}).get("append", "")
    try:
        words = shlex.split(append)
    except ValueError as e:
        raise Problem(("customizations", "kernel", "append"), f"cannot be split into arguments: {e}") from e
    if any("\0" in w or "\n" in w for w in words):
        raise Problem(("customizations", "kernel", "append"), "must not contain NUL or newline characters")
    return tuple(words)


def from_document(doc: Doc) -> Blueprint:
    custom: Doc = doc.get("customizations", {})
    if custom.get("filesystem") and custom.get("disk"):
        raise Problem(("customizations", "disk"), "cannot combine disk and filesystem customizations")
    files, directories = _files(custom)
    services = _services(custom)
    timezone = custom.get("timezone", {})
    locale = custom.get("locale", {})
    disk = custom.get("disk")
    return Blueprint(
        name=doc.get("name", ""),
        description=doc.get("description", ""),
        version=doc.get("version") or "0.0.0",
        users=_users(custom),
        groups=_groups(custom),
        sshkeys=tuple(SshKey(k["user"], k["key"]) for k in custom.get("sshkey", ())),
        hostname=custom.get("hostname"),
        kernel_append=_kernel_append(custom),
        timezone=timezone.get("timezone"),
        ntpservers=tuple(timezone.get("ntpservers", ())),
        languages=tuple(locale.get("languages", ())),
        keyboard=locale.get("keyboard"),
        services_enabled=services["enabled"],
        services_disabled=services["disabled"],
        services_masked=services["masked"],
        files=files,
        directories=directories,
        filesystems=_filesystems(custom),
        disk=disk_from_document(disk) if disk else None,
        ignition=_ignition(custom),
        fips=custom.get("fips", False),
        sshd=Sshd(**custom["sshd"]) if custom.get("sshd") else None,
        container_ref=doc.get("container_ref"),
        iso=IsoCustomization(**custom["iso"]) if custom.get("iso") else None,
        installer=_installer(custom),
    )


def _installer(custom: Mapping[str, Any]) -> InstallerCustomization | None:
    unattended = bool(custom.get("installer", {}).get("unattended", False))
    device = custom.get("installation_device") or None
    if not unattended and device is None:
        return None
    return InstallerCustomization(unattended=unattended, device=device)


def _is_empty(value: object) -> bool:
    return value is None or value is False or (isinstance(value, str | list | tuple | dict) and not value)


def _drop_empty(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if not _is_empty(v)}


def _node(node: FileCustomization | DirectoryCustomization) -> dict[str, Any]:
    table = _drop_empty(dict(vars(node)))
    if node.mode is not None:
        table["mode"] = f"{node.mode:04o}"
    return table


def blueprint_to_dict(bp: Blueprint) -> dict[str, Any]:
    """The normalised document: only what is set, sizes in bytes, units with their suffix."""
    ignition: dict[str, Any] = {}
    if bp.ignition and bp.ignition.embedded_config is not None:
        ignition["embedded"] = {"config": base64.b64encode(bp.ignition.embedded_config).decode()}
    if bp.ignition and bp.ignition.firstboot_url is not None:
        ignition["firstboot"] = {"url": bp.ignition.firstboot_url}
    custom = {
        "hostname": bp.hostname,
        "kernel": {"append": shlex.join(bp.kernel_append)} if bp.kernel_append else None,
        "sshkey": [dict(vars(k)) for k in bp.sshkeys],
        "user": [_drop_empty({**vars(u), "groups": list(u.groups)}) for u in bp.users],
        "group": [_drop_empty(dict(vars(g))) for g in bp.groups],
        "timezone": _drop_empty({"timezone": bp.timezone, "ntpservers": list(bp.ntpservers)}),
        "locale": _drop_empty({"languages": list(bp.languages), "keyboard": bp.keyboard}),
        "services": _drop_empty(
            {
                "enabled": list(bp.services_enabled),
                "disabled": list(bp.services_disabled),
                "masked": list(bp.services_masked),
            }
        ),
        "filesystem": [dict(vars(f)) for f in bp.filesystems],
        "disk": disk_to_dict(bp.disk) if bp.disk else None,
        "files": [_node(f) for f in bp.files],
        "directories": [_node(d) for d in bp.directories],
        "ignition": ignition,
        "fips": bp.fips,
        "sshd": {k: v for k, v in vars(bp.sshd).items() if v is not None} if bp.sshd else None,
        "iso": _drop_empty(dict(vars(bp.iso))) if bp.iso else None,
        "installer": {"unattended": True} if bp.installer and bp.installer.unattended else None,
        "installation_device": bp.installer.device if bp.installer else None,
    }
    return _drop_empty(
        {
            "name": bp.name,
            "description": bp.description,
            "version": bp.version,
            "container_ref": bp.container_ref,
            "customizations": _drop_empty(custom),
        }
    )
