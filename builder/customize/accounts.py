"""users, groups and ssh keys: appended to the deployment's /etc/passwd, shadow, group and gshadow.

No program of the image runs (it may be another architecture): the files are edited as useradd would. The
image's own /usr/lib/passwd and /usr/lib/group (nss-altfiles) are read to find used IDs and names, never
written; a group that lives only there is copied to /etc/group when a user joins it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.blueprint.model import Blueprint, User
from builder.customize.passwords import shadow_hash
from builder.customize.target import Target
from builder.errors import BlueprintError

FIRST_ID = 1000
LAST_ID = 60000

Entry = list[str]


def _read(target: Target, path: str, width: int) -> list[Entry]:
    text = target.read_text(path)
    if text is None:
        return []
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if line.strip() and not line.startswith("#"):
            entries.append(fields + [""] * (width - len(fields)))
    return entries


@dataclass
class AccountFiles:
    """The four account files of /etc, with the image's read-only /usr/lib ones beside them."""

    passwd: list[Entry]
    shadow: list[Entry]
    group: list[Entry]
    gshadow: list[Entry] | None  # None when the image has no /etc/gshadow
    lib_passwd: list[Entry]
    lib_group: list[Entry]
    changed: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, target: Target) -> AccountFiles:
        gshadow_present = target.host("/etc/gshadow").is_file()
        return cls(
            passwd=_read(target, "/etc/passwd", 7),
            shadow=_read(target, "/etc/shadow", 9),
            group=_read(target, "/etc/group", 4),
            gshadow=_read(target, "/etc/gshadow", 4) if gshadow_present else None,
            lib_passwd=_read(target, "/usr/lib/passwd", 7),
            lib_group=_read(target, "/usr/lib/group", 4),
        )

    def user(self, name: str) -> Entry | None:
        return next((e for e in [*self.passwd, *self.lib_passwd] if e[0] == name), None)

    def group_entry(self, name: str) -> Entry | None:
        return next((e for e in [*self.group, *self.lib_group] if e[0] == name), None)

    def uid_of(self, owner: str | int) -> int:
        if isinstance(owner, int):
            return owner
        entry = self.user(owner)
        if entry is None:
            raise BlueprintError(f"user {owner!r} exists neither in the image nor in the blueprint")
        return int(entry[2])

    def gid_of(self, owner: str | int) -> int:
        if isinstance(owner, int):
            return owner
        entry = self.group_entry(owner)
        if entry is None:
            raise BlueprintError(f"group {owner!r} exists neither in the image nor in the blueprint")
        return int(entry[2])

    def _used(self, entries: list[Entry]) -> set[int]:
        return {int(e[2]) for e in entries if e[2].isdigit()}

    def free_id(self, *, for_group: bool, prefer: int | None = None) -> int:
        used = (
            self._used(self.group + self.lib_group)
            if for_group
            else self._used(self.passwd + self.lib_passwd)
        )
        if prefer is not None and prefer not in used:
            return prefer
        # Like useradd: the next ID above the highest regular one in use, else the lowest free one.
        regular = [i for i in used if FIRST_ID <= i <= LAST_ID]
        candidate = max(regular) + 1 if regular else FIRST_ID
        if candidate > LAST_ID:
            candidate = next(i for i in range(FIRST_ID, LAST_ID + 1) if i not in used)
        return candidate

    def add_group(self, name: str, gid: int) -> None:
        self.group.append([name, "x", str(gid), ""])
        if self.gshadow is not None:
            self.gshadow.append([name, "!", "", ""])
        self.changed |= {"group", "gshadow"}

    def add_member(self, group: str, user: str) -> None:
        entry = next((e for e in self.group if e[0] == group), None)
        if entry is None:  # only in /usr/lib/group: /etc/group comes first in nsswitch, copy it there
            lib = self.group_entry(group)
            assert lib is not None
            entry = list(lib)
            self.group.append(entry)
            if self.gshadow is not None and not any(e[0] == group for e in self.gshadow):
                self.gshadow.append([group, "!", "", entry[3]])
        members = [m for m in entry[3].split(",") if m]
        if user not in members:
            entry[3] = ",".join([*members, user])
        if self.gshadow is not None:
            for shadow in self.gshadow:
                if shadow[0] == group:
                    shadow_members = [m for m in shadow[3].split(",") if m]
                    if user not in shadow_members:
                        shadow[3] = ",".join([*shadow_members, user])
        self.changed |= {"group", "gshadow"}

    def write(self, target: Target) -> None:
        tables = {"passwd": self.passwd, "shadow": self.shadow, "group": self.group, "gshadow": self.gshadow}
        for name in sorted(self.changed):
            entries = tables[name]
            if entries is None:
                continue
            path = f"/etc/{name}"
            host = target.host(path)
            mode, uid, gid = 0o644 if name in ("passwd", "group") else 0o000, 0, 0
            if host.is_file() and not host.is_symlink():
                status = host.stat()
                mode, uid, gid = status.st_mode & 0o7777, status.st_uid, status.st_gid
            text = "".join(":".join(e) + "\n" for e in entries)
            target.write(path, text.encode(), mode, uid, gid)


def _default_home(target: Target, name: str) -> str:
    if name == "root":
        return "/root"
    home_link = target.image("/home")
    # Fedora-style ostree images write /var/home/NAME in passwd (their useradd default); others /home/NAME.
    if home_link.is_symlink() and str(home_link.readlink()).strip("/") == "var/home":
        return f"/var/home/{name}"
    return f"/home/{name}"


def _default_shell(target: Target) -> str:
    return "/bin/bash" if target.image("/usr/bin/bash").exists() else "/bin/sh"


def _create_user(files: AccountFiles, target: Target, user: User) -> Entry:
    uid = user.uid if user.uid is not None else files.free_id(for_group=False)
    if any(e[2] == str(uid) for e in [*files.passwd, *files.lib_passwd]):
        raise BlueprintError(f"customizations.user: uid {uid} of {user.name!r} is already used in the image")
    if user.gid is not None:
        gid = user.gid
        if not any(e[2] == str(gid) for e in [*files.group, *files.lib_group]):
            if files.group_entry(user.name) is not None:
                raise BlueprintError(
                    f"customizations.user: group {user.name!r} exists with another gid than {gid}"
                )
            files.add_group(user.name, gid)
    elif (own := files.group_entry(user.name)) is not None:
        gid = int(own[2])
    else:
        gid = files.free_id(for_group=True, prefer=uid)
        files.add_group(user.name, gid)
    home = user.home or _default_home(target, user.name)
    entry = [
        user.name,
        "x",
        str(uid),
        str(gid),
        user.description or "",
        home,
        user.shell or _default_shell(target),
    ]
    files.passwd.append(entry)
    files.shadow.append([user.name, "!", "", "0", "99999", "7", "", "", ""])
    files.changed |= {"passwd", "shadow"}
    return entry


def _update_user(files: AccountFiles, user: User, entry: Entry) -> Entry:
    if user.uid is not None and str(user.uid) != entry[2]:
        raise BlueprintError(f"customizations.user: {user.name!r} exists in the image with uid {entry[2]}")
    if entry not in files.passwd:  # only in /usr/lib/passwd: an /etc/passwd copy takes precedence
        entry = list(entry)
        files.passwd.append(entry)
    if user.description is not None:
        entry[4] = user.description
    if user.home is not None:
        entry[5] = user.home
    if user.shell is not None:
        entry[6] = user.shell
    if not any(e[0] == user.name for e in files.shadow):
        files.shadow.append([user.name, "!", "", "0", "99999", "7", "", "", ""])
    files.changed |= {"passwd", "shadow"}
    return entry


def _set_shadow(files: AccountFiles, user: User) -> None:
    shadow = next(e for e in files.shadow if e[0] == user.name)
    if user.password is not None or shadow[1] in ("", "x"):
        shadow[1] = shadow_hash(user.password)
    if user.force_password_reset:
        shadow[2] = "0"  # a last change on day 0 makes login ask for a new password
    if user.expiredate is not None:
        shadow[7] = str(user.expiredate)


def _make_home(target: Target, entry: Entry) -> None:
    home, uid, gid = entry[5], int(entry[2]), int(entry[3])
    if target.mkdir(home, 0o700, uid, gid):
        skel = target.image("/etc/skel")
        if skel.is_dir() and not skel.is_symlink():
            for item in sorted(skel.iterdir()):
                if item.is_file() and not item.is_symlink():
                    target.write(
                        f"{home}/{item.name}", item.read_bytes(), item.stat().st_mode & 0o777, uid, gid
                    )


def _add_keys(target: Target, entry: Entry, keys: list[str]) -> None:
    home, uid, gid = entry[5], int(entry[2]), int(entry[3])
    target.mkdir(home, 0o700, uid, gid)  # an account of the image whose home /var does not have yet
    target.mkdir(f"{home}/.ssh", 0o700, uid, gid)
    path = f"{home}/.ssh/authorized_keys"
    existing = (target.read_text(path) or "").splitlines()
    lines = list(dict.fromkeys([*existing, *(k.strip() for k in keys)]))
    target.write(path, "".join(f"{line}\n" for line in lines).encode(), 0o600, uid, gid)


@dataclass
class AccountPlan:
    files: AccountFiles
    created: list[str]
    keys: dict[str, list[str]]
    done: list[str]


def _check_account_files(target: Target) -> None:
    """The files users and groups are written to must be plain files (or absent): a link would be replaced
    by a file holding only what imgbuild read (nothing, since it does not read through the image's links)."""
    for name in ("passwd", "shadow", "group", "gshadow"):
        host = target.host(f"/etc/{name}")
        if host.is_symlink() or host.is_dir():
            what = "a symlink" if host.is_symlink() else "a directory"
            raise BlueprintError(
                f"customizations.user: /etc/{name} is {what} in the image, so accounts cannot be added",
                hint="imgbuild writes accounts into plain /etc/passwd, shadow, group and gshadow files",
            )


def plan_accounts(bp: Blueprint, target: Target) -> AccountPlan:
    """The account files as they will be, in memory: every conflict fails here, before anything is written."""
    _check_account_files(target)
    files = AccountFiles.read(target)
    done = []
    for group in bp.groups:
        existing = files.group_entry(group.name)
        if existing is not None:
            if group.gid is not None and existing[2] != str(group.gid):
                raise BlueprintError(
                    f"customizations.group: {group.name!r} exists in the image with gid {existing[2]}"
                )
            done.append(f"group {group.name}: already in the image (gid {existing[2]})")
            continue
        if group.gid is not None and any(e[2] == str(group.gid) for e in [*files.group, *files.lib_group]):
            raise BlueprintError(
                f"customizations.group: gid {group.gid} of {group.name!r} is already used in the image"
            )
        gid = group.gid if group.gid is not None else files.free_id(for_group=True)
        files.add_group(group.name, gid)
        done.append(f"group {group.name}: created with gid {gid}")
    created = []
    for user in bp.users:
        found = files.user(user.name)
        if not found:
            created.append(user.name)
        entry = _update_user(files, user, found) if found else _create_user(files, target, user)
        _set_shadow(files, user)
        for group_name in user.groups:
            if files.group_entry(group_name) is None:
                raise BlueprintError(
                    f"customizations.user: group {group_name!r} of {user.name!r} exists neither in the image "
                    "nor in customizations.group"
                )
            files.add_member(group_name, user.name)
        password = "no password" if not user.password else "password set"
        groups = f", groups {','.join(user.groups)}" if user.groups else ""
        verb = "updated" if found else "created"
        done.append(f"user {user.name}: {verb}, uid {entry[2]}, home {entry[5]}, {password}{groups}")
    keys: dict[str, list[str]] = {}
    for key in bp.sshkeys:
        keys.setdefault(key.user, []).append(key.key)
    for user in bp.users:
        if user.key:
            keys.setdefault(user.name, []).append(user.key)
    for name in keys:  # checked before anything is written
        if files.user(name) is None:
            raise BlueprintError(
                f"customizations.sshkey: user {name!r} exists neither in the image nor in the blueprint"
            )
    return AccountPlan(files, created, keys, done)


def check_accounts(bp: Blueprint, target: Target) -> None:
    if bp.groups or bp.users or bp.sshkeys:
        plan_accounts(bp, target)


def apply_accounts(bp: Blueprint, target: Target) -> list[str]:
    if not (bp.groups or bp.users or bp.sshkeys):
        return []
    plan = plan_accounts(bp, target)
    plan.files.write(target)
    for name in plan.created:
        _make_home(target, _entry(plan.files, name))
    for name, user_keys in plan.keys.items():
        owner = _entry(plan.files, name)
        _add_keys(target, owner, user_keys)
        plan.done.append(f"ssh keys: {len(user_keys)} for {name} in {owner[5]}/.ssh/authorized_keys")
    return plan.done


def _entry(files: AccountFiles, name: str) -> Entry:
    entry = files.user(name)
    assert entry is not None, name
    return entry
