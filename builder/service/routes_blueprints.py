"""The Weldr blueprint routes (`/api/v{0,1}/blueprints/...`), in composer's shapes."""

from __future__ import annotations

import json
from typing import Any

from builder.service.api import Context, Handler, Request, Response, json_response, ok
from builder.service.bpcodec import decode_blueprint, encode_toml, weldr_view
from builder.service.store import BlueprintDoc
from builder.service.weldr import (
    BLUEPRINTS_ERROR,
    INVALID_CHARS,
    UNKNOWN_BLUEPRINT,
    UNKNOWN_COMMIT,
    WeldrError,
    check_name,
    check_names,
    page_bounds,
)

TOML = "text/x-toml"


def _unknown(name: str) -> WeldrError:
    return WeldrError(BLUEPRINTS_ERROR, f"Unknown blueprint: {name}")


def _format(req: Request) -> str:
    fmt = req.param("format", "json") or "json"
    if fmt not in ("json", "toml"):
        raise WeldrError(INVALID_CHARS, f"invalid format parameter: {fmt}")
    return fmt


def _toml_response(doc: BlueprintDoc) -> Response:
    return Response(body=encode_toml(doc).encode(), content_type=TOML)


def list_(ctx: Context, req: Request) -> Response:
    offset, limit = page_bounds(dict(req.query))
    names = ctx.store.list_blueprints()
    return json_response(
        {"total": len(names), "offset": offset, "limit": limit, "blueprints": names[offset : offset + limit]}
    )


def info(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    fmt = _format(req)
    found: list[tuple[str, BlueprintDoc, bool]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        current = ctx.store.current(name)
        if current is None:
            errors.append({"id": UNKNOWN_BLUEPRINT, "msg": f"{name}: "})
        else:
            found.append((name, current[0], current[1]))
    if fmt == "toml":
        if len(names) != 1:
            raise WeldrError(BLUEPRINTS_ERROR, "the toml format returns exactly one blueprint")
        if not found:
            raise WeldrError(UNKNOWN_BLUEPRINT, f"{names[0]}: blueprint not found")
        return _toml_response(found[0][1])
    return json_response(
        {
            "blueprints": [weldr_view(doc) for _, doc, _ in found],
            "changes": [{"name": name, "changed": changed} for name, _, changed in found],
            "errors": errors,
        }
    )


def new(ctx: Context, req: Request) -> Response:
    ctx.store.push_blueprint(decode_blueprint(req.body, req.content_type, ctx.store.committed))
    return ok()


def workspace_push(ctx: Context, req: Request) -> Response:
    def _current(name: str) -> BlueprintDoc | None:
        current = ctx.store.current(name)
        return None if current is None else current[0]

    ctx.store.push_workspace(decode_blueprint(req.body, req.content_type, _current))
    return ok()


def workspace_delete(ctx: Context, req: Request) -> Response:
    name = check_name(req.args[0])
    if not ctx.store.delete_workspace(name):
        raise _unknown(name)
    return ok()


def delete(ctx: Context, req: Request) -> Response:
    name = check_name(req.args[0])
    if not ctx.store.delete_blueprint(name):
        raise _unknown(name)
    return ok()


def changes(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    offset, limit = page_bounds(dict(req.query))
    found: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        history = ctx.store.changes(name)
        if not history:
            errors.append({"id": UNKNOWN_BLUEPRINT, "msg": name})
            continue
        page = history[offset : offset + limit]
        found.append({"name": name, "total": len(history), "changes": [c.to_json() for c in page]})
    return json_response({"blueprints": found, "errors": errors, "offset": offset, "limit": limit})


def _at_commit(ctx: Context, name: str, commit: str) -> BlueprintDoc:
    doc = ctx.store.at_commit(check_name(name), check_name(commit))
    if doc is None:
        raise WeldrError(UNKNOWN_COMMIT, f"Unknown commit {commit} for blueprint {name}")
    return doc


def change(ctx: Context, req: Request) -> Response:
    doc = _at_commit(ctx, req.args[0], req.args[1])
    return _toml_response(doc) if _format(req) == "toml" else json_response(weldr_view(doc))


def freeze(ctx: Context, req: Request) -> Response:
    """Container-based images have no package versions to pin: the blueprint comes back as it is."""
    names = check_names(req.args[0])
    fmt = _format(req)
    frozen: list[BlueprintDoc] = []
    errors: list[dict[str, str]] = []
    for name in names:
        current = ctx.store.current(name)
        if current is None:
            errors.append({"id": UNKNOWN_BLUEPRINT, "msg": f"{name}: blueprint_not_found"})
        else:
            frozen.append(current[0])
    if fmt == "toml":
        if len(names) != 1 or not frozen:
            raise WeldrError(UNKNOWN_BLUEPRINT, f"{names[0]}: blueprint_not_found")
        return _toml_response(frozen[0])
    return json_response({"blueprints": [{"blueprint": weldr_view(doc)} for doc in frozen], "errors": errors})


def depsolve(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    solved: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        current = ctx.store.current(name)
        if current is None:
            errors.append({"id": UNKNOWN_BLUEPRINT, "msg": f"{name}: blueprint not found"})
        else:
            solved.append({"blueprint": weldr_view(current[0]), "dependencies": []})
    return json_response({"blueprints": solved, "errors": errors})


def _side(ctx: Context, name: str, which: str) -> BlueprintDoc:
    if which == "NEWEST":
        doc = ctx.store.committed(name)
    elif which == "WORKSPACE":
        doc = ctx.store.workspace(name) or ctx.store.committed(name)
    else:
        return _at_commit(ctx, name, which)
    if doc is None:
        raise WeldrError(UNKNOWN_BLUEPRINT, f"{name}: blueprint not found")
    return doc


LIST_LABELS = {"modules": "Module", "packages": "Package", "groups": "Group"}
# The field that names an item of a customization list (lorax-composer's diff uses "user" or "name").
ITEM_KEYS = {"sshkey": "user", "user": "name", "group": "name", "files": "path", "directories": "path"}
ITEM_KEYS_BY_FIELD = ("name", "user", "path", "mountpoint")


def _shown(value: object, nested: bool = False) -> object:
    """A value as composer-cli can print it in a diff: it indexes the first item of every list and
    cannot print a list of tables inside a table, nor a changed number or boolean. Empty lists and
    tables are left out (the same as absent), nested lists of tables become one JSON line, and numbers
    and booleans their JSON text (composer-cli prints only strings inside a table). Only the diff's
    presentation changes, never the blueprint."""
    if isinstance(value, dict):
        shown = {k: _shown(v, nested=True) for k, v in value.items() if v not in ([], {}, None)}
        return shown
    if isinstance(value, list):
        if nested and any(isinstance(item, dict) for item in value):
            return json.dumps(value, sort_keys=True)
        return [_shown(item, nested=True) for item in value]
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return value


def _entry(label: str, before: object, after: object) -> dict[str, object]:
    return {
        "old": None if before is None else {label: _shown(before)},
        "new": None if after is None else {label: _shown(after)},
    }


def _names_items(items: list[Any], key: str) -> bool:
    """Every item is a table with a string `key`, no two alike."""
    names = [item.get(key) if isinstance(item, dict) else None for item in items]
    return all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _item_key(k: str, before: list[Any], after: list[Any]) -> str | None:
    """The field naming each table of both lists (the known one for the key first), or None."""
    for key in (ITEM_KEYS.get(k), *ITEM_KEYS_BY_FIELD):
        if key is not None and _names_items(before, key) and _names_items(after, key):
            return key
    return None


def _diff_lists(label: str, key: str, before: list[Any], after: list[Any]) -> list[dict[str, object]]:
    """lorax-composer's diff_lists: added, then removed, then changed items, each sorted by name."""
    olds = {str(item[key]): item for item in before}
    news = {str(item[key]): item for item in after}
    order = sorted(set(olds) | set(news), key=str.lower)
    added = [_entry(label, None, news[n]) for n in order if n not in olds]
    removed = [_entry(label, olds[n], None) for n in order if n not in news]
    changed = [
        _entry(label, olds[n], news[n]) for n in order if n in olds and n in news and olds[n] != news[n]
    ]
    return added + removed + changed


def _customizations_diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, object]]:
    """One entry per changed key of [customizations] ("Customizations.KEY"), and one per item of a
    list of tables (users, groups, ssh keys, files...), as lorax-composer sends them."""
    entries: list[dict[str, object]] = []
    old = {k: v for k, v in old.items() if v not in ([], {}, None)}  # empty is the same as absent
    new = {k: v for k, v in new.items() if v not in ([], {}, None)}
    keys = sorted(set(old) | set(new), key=str.lower)
    entries += [_entry(f"Customizations.{k}", None, new[k]) for k in keys if k not in old]
    entries += [_entry(f"Customizations.{k}", old[k], None) for k in keys if k not in new]
    for k in keys:
        before, after = old.get(k), new.get(k)
        if k not in old or k not in new or before == after:
            continue
        if isinstance(before, list) and isinstance(after, list):
            item_key = _item_key(k, before, after)
            if item_key is not None:
                entries += _diff_lists(f"Customizations.{k}", item_key, before, after)
                continue
        entries.append(_entry(f"Customizations.{k}", before, after))
    return entries


def diff_docs(old: BlueprintDoc, new: BlueprintDoc) -> list[dict[str, object]]:
    """composer's diff entries {"old": {Label: value} | null, "new": ...}, in lorax-composer's order:
    name, description, version, modules, packages, groups (per item), then the customizations per key,
    then any other top-level key."""
    entries: list[dict[str, object]] = []
    for key in ("name", "description", "version"):
        if old.get(key) != new.get(key):
            entries.append(_entry(key.title(), old.get(key), new.get(key)))
    for key, label in LIST_LABELS.items():
        entries += _diff_lists(label, "name", list(old.get(key) or []), list(new.get(key) or []))
    old_custom, new_custom = old.get("customizations") or {}, new.get("customizations") or {}
    entries += _customizations_diff(dict(old_custom), dict(new_custom))
    done = {"name", "description", "version", "customizations", *LIST_LABELS}
    for key in sorted((set(old) | set(new)) - done):
        if old.get(key) != new.get(key):
            entries.append(_entry(key[:1].upper() + key[1:], old.get(key), new.get(key)))
    return entries


def diff(ctx: Context, req: Request) -> Response:
    name = check_name(req.args[0])
    old = _side(ctx, name, check_name(req.args[1]))
    new_ = _side(ctx, name, check_name(req.args[2]))
    return json_response({"diff": diff_docs(old, new_)})


def undo(ctx: Context, req: Request) -> Response:
    name, commit = check_name(req.args[0]), check_name(req.args[1])
    doc = _at_commit(ctx, name, commit)
    ctx.store.push_blueprint(doc, message=f"{name}.toml reverted to commit {commit}")
    return ok()


def tag(ctx: Context, req: Request) -> Response:
    name = check_name(req.args[0])
    if not ctx.store.tag(name):
        raise _unknown(name)
    return ok()


# (method, path after /api/vN/, number of arguments that follow, handler)
ROUTES: tuple[tuple[str, tuple[str, ...], int, Handler], ...] = (
    ("GET", ("blueprints", "list"), 0, list_),
    ("GET", ("blueprints", "info"), 1, info),
    ("POST", ("blueprints", "new"), 0, new),
    ("POST", ("blueprints", "workspace"), 0, workspace_push),
    ("DELETE", ("blueprints", "workspace"), 1, workspace_delete),
    ("DELETE", ("blueprints", "delete"), 1, delete),
    ("GET", ("blueprints", "changes"), 1, changes),
    ("GET", ("blueprints", "change"), 2, change),
    ("GET", ("blueprints", "freeze"), 1, freeze),
    ("GET", ("blueprints", "depsolve"), 1, depsolve),
    ("GET", ("blueprints", "diff"), 3, diff),
    ("POST", ("blueprints", "undo"), 2, undo),
    ("POST", ("blueprints", "tag"), 1, tag),
)
