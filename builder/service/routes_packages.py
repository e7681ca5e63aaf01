"""The package routes (`projects`, `modules`, `projects/source`): a container image brings its own packages,
so there are none to list, in the shapes composer-cli reads; what would add or read one is refused."""

from __future__ import annotations

from builder.service.api import Context, Handler, Request, Response, json_response
from builder.service.weldr import WeldrError, check_names, page_bounds

NO_PACKAGES = "imgbuild builds from container images: the image brings its packages, there are none to list"


def _empty_page(key: str, req: Request) -> Response:
    offset, limit = page_bounds(dict(req.query))
    return json_response({key: [], "total": 0, "offset": offset, "limit": limit})


def projects_list(ctx: Context, req: Request) -> Response:
    return _empty_page("projects", req)


def modules_list(ctx: Context, req: Request) -> Response:
    if req.args:
        check_names(req.args[0])
    return _empty_page("modules", req)


def projects_info(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    raise WeldrError(
        "UnknownProject", f"No packages have been found: {','.join(names)[:200]} ({NO_PACKAGES})"
    )


def modules_info(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    raise WeldrError("UnknownModule", f"No modules have been found: {','.join(names)[:200]} ({NO_PACKAGES})")


def sources_list(ctx: Context, req: Request) -> Response:
    return json_response({"sources": []})


def sources_info(ctx: Context, req: Request) -> Response:
    names = check_names(req.args[0])
    errors = [{"id": "UnknownSource", "msg": f"{name} is not a valid source"} for name in names]
    if req.param("format") == "toml":
        raise WeldrError("UnknownSource", errors[0]["msg"])
    return json_response({"sources": {}, "errors": errors})


def sources_new(ctx: Context, req: Request) -> Response:
    raise WeldrError(
        "ProjectsError", "imgbuild has no package sources: the container image brings its packages"
    )


def sources_delete(ctx: Context, req: Request) -> Response:
    name = check_names(req.args[0])[0]
    raise WeldrError("UnknownSource", f"{name} is not a valid source")


ROUTES: tuple[tuple[str, tuple[str, ...], int, Handler], ...] = (
    ("GET", ("projects", "list"), 0, projects_list),
    ("GET", ("projects", "info"), 1, projects_info),
    ("GET", ("projects", "depsolve"), 1, projects_info),
    ("GET", ("modules", "list"), 0, modules_list),
    ("GET", ("modules", "list"), 1, modules_list),
    ("GET", ("modules", "info"), 1, modules_info),
    ("GET", ("projects", "source", "list"), 0, sources_list),
    ("GET", ("projects", "source", "info"), 1, sources_info),
    ("POST", ("projects", "source", "new"), 0, sources_new),
    ("DELETE", ("projects", "source", "delete"), 1, sources_delete),
)
