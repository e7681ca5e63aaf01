"""The Weldr blueprint routes (`/api/v{0,1}/blueprints/...`), in composer's shapes."""

from __future__ import annotations

from builder.service.api import Context, Handler, Request, Response, json_response, ok
from builder.service.bpcodec import decode_blueprint, encode_toml
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
            "blueprints": [doc for _, doc, _ in found],
            "changes": [{"name": name, "changed": changed} for name, _, changed in found],
            "errors": errors,
        }
    )


def new(ctx: Context, req: Request) -> Response:
    ctx.store.push_blueprint(decode_blueprint(req.body, req.content_type))
    return ok()


def workspace_push(ctx: Context, req: Request) -> Response:
    ctx.store.push_workspace(decode_blueprint(req.body, req.content_type))
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
    return _toml_response(doc) if _format(req) == "toml" else json_response(doc)


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
    return json_response({"blueprints": [{"blueprint": doc} for doc in frozen], "errors": errors})


def depsolve(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    solved: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []
    for name in names:
        current = ctx.store.current(name)
        if current is None:
            errors.append({"id": UNKNOWN_BLUEPRINT, "msg": f"{name}: blueprint not found"})
        else:
            solved.append({"blueprint": current[0], "dependencies": []})
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


LIST_LABELS = {"packages": "Package", "modules": "Module", "groups": "Group"}


def diff_docs(old: BlueprintDoc, new: BlueprintDoc) -> list[dict[str, object]]:
    """composer's diff entries: {"old": {Label: value} | null, "new": {Label: value} | null}."""
    entries: list[dict[str, object]] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        label = LIST_LABELS.get(key)
        if label is not None and isinstance(before or [], list) and isinstance(after or [], list):
            olds = {str(item.get("name")): item for item in before or [] if isinstance(item, dict)}
            news = {str(item.get("name")): item for item in after or [] if isinstance(item, dict)}
            for item_name in sorted(set(olds) | set(news)):
                a, b = olds.get(item_name), news.get(item_name)
                if a != b:
                    entries.append(
                        {"old": None if a is None else {label: a}, "new": None if b is None else {label: b}}
                    )
            continue
        label = key[:1].upper() + key[1:]
        entries.append(
            {
                "old": None if before is None else {label: before},
                "new": None if after is None else {label: after},
            }
        )
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
