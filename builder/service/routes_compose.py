"""The Weldr compose routes (`/api/v{0,1}/compose...`), in composer's shapes.

imgbuild builds from a container image; which one a compose builds is decided in compose_request.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import ImgbuildError
from builder.service.api import Context, Handler, Request, Response, attachment, json_response
from builder.service.bpcodec import encode_toml, media_type, weldr_view
from builder.service.compose_request import builder_blueprint, choose_ref, parse_request
from builder.service.objstore import Stored, read_stored
from builder.service.queue import BLUEPRINT_NAME, LOG_NAME, OUTPUT_NAME, compose_dir
from builder.service.store import Compose, ComposeStatus
from builder.service.uploads import UPLOAD_ERROR, start_upload, upload_entry, upload_id
from builder.service.weldr import (
    BUILD_IN_WRONG_STATE,
    COMPOSE_ERROR,
    COMPOSE_TYPES,
    IMAGE_MIME_TYPES,
    MISSING_POST,
    UNKNOWN_BLUEPRINT,
    UNKNOWN_UUID,
    WeldrError,
    check_uuid,
    json_object,
)

DEFAULT_LOG_KIB = 1024
ENDED = (ComposeStatus.FINISHED, ComposeStatus.FAILED)


def _request_body(req: Request) -> dict[str, Any]:
    if media_type(req.content_type) != "application/json":
        raise WeldrError(MISSING_POST, "blueprint must be json")
    return json_object(req.body, "compose request")


def start(ctx: Context, req: Request) -> Response:
    """Queue a compose. Everything is checked before anything is created: the request (compose_request),
    the upload against the compose type, the blueprint, the image against the reference policy."""
    request = parse_request(_request_body(req))
    start_upload(request.compose_type, request.upload)
    if request.upload is not None and ctx.queue.config.workers == 0:
        # Upload credentials live only in this service's memory: remote workers never see them.
        raise WeldrError(
            UPLOAD_ERROR, "uploads run on the service's own builders, and this service has none (--workers 0)"
        )
    blueprint = ctx.store.committed(request.blueprint_name)
    if blueprint is None:
        raise WeldrError(UNKNOWN_BLUEPRINT, f"Unknown blueprint name: {request.blueprint_name}")
    ref = choose_ref(request, blueprint, ctx.default_ref, ctx.policy)
    compose_type, size, warnings = request.compose_type, request.size, list[str]()
    upload = request.upload.public() if request.upload is not None else None  # never the credentials

    compose_id = str(uuid.uuid4())
    directory = compose_dir(ctx.config.state_dir, compose_id)
    directory.mkdir(parents=True)
    try:
        partial = directory / (BLUEPRINT_NAME + ".partial")
        partial.write_text(encode_toml(builder_blueprint(blueprint)))
        partial.rename(directory / BLUEPRINT_NAME)
        test = req.param("test")
        if test in ("1", "2"):  # composer's fake composes, for clients' own tests
            status = ComposeStatus.FAILED if test == "1" else ComposeStatus.FINISHED
            reason = "test compose" if test == "1" else None
            ctx.store.add_compose(compose_id, blueprint, compose_type, ref, size, status, reason, upload)
        else:
            if request.upload is not None:  # held before it is queued: a worker may claim it at once
                ctx.queue.hold_upload(compose_id, request.upload)
            ctx.store.add_compose(
                compose_id, blueprint, compose_type, ref, size, upload=upload, arch=request.arch
            )
    except BaseException:
        ctx.queue.drop_upload(compose_id)
        shutil.rmtree(directory, ignore_errors=True)  # no directory without its compose
        raise
    ctx.queue.notify()
    reply: dict[str, object] = {"build_id": compose_id, "status": True, "warnings": warnings}
    if upload is not None:
        reply["upload_id"] = upload_id(compose_id)  # composer-cli: "Upload ... added to the upload queue"
    return json_response(reply)


def types(ctx: Context, req: Request) -> Response:
    return json_response({"types": [{"name": name, "enabled": True} for name in COMPOSE_TYPES]})


def _uploaded(ctx: Context, compose: Compose) -> dict[str, Any] | None:
    """The upload's record in the builder's result.json (AMI and snapshot ids, region), once done."""
    result = compose_dir(ctx.config.state_dir, compose.id) / OUTPUT_NAME / "result.json"
    try:
        records = json.loads(result.read_text()).get("uploads", [])
    except (OSError, ValueError, AttributeError):
        return None
    done = (
        [r for r in records if isinstance(r, dict) and r.get("image_id")] if isinstance(records, list) else []
    )
    return done[-1] if done else None


def _uploading(ctx: Context, compose: Compose) -> bool:
    """Whether a running upload compose has built its disk (the builder's build-end event is in its log)."""
    try:
        with open(_log_path(ctx, compose), "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 256 * 1024))
            tail = f.read()
    except OSError:
        return False
    return b'"what": "upload"' in tail or any(
        line.startswith(b'{"event": "build-end"') and b'"status": "ok"' in line for line in tail.splitlines()
    )


def _uploads(ctx: Context, compose: Compose) -> list[dict[str, object]]:
    """The compose's upload as composer lists it, with its own status (WAITING until the disk is built)."""
    if compose.upload is None:
        return []
    record = _uploaded(ctx, compose)
    if record is not None:
        status = "FINISHED"
    elif compose.status is ComposeStatus.RUNNING:
        status = "RUNNING" if _uploading(ctx, compose) else "WAITING"
    else:
        status = compose.status.value
    return [upload_entry(compose.id, compose.created, compose.upload, status, record)]


def _entry(ctx: Context, compose: Compose) -> dict[str, object]:
    entry = compose.entry()
    if compose.reason:
        entry["reason"] = compose.reason  # imgbuild's addition: why it failed
    uploads = _uploads(ctx, compose)
    if uploads:
        entry["uploads"] = uploads
    return entry


def queue(ctx: Context, req: Request) -> Response:
    return json_response(
        {
            "new": [_entry(ctx, c) for c in ctx.store.composes(ComposeStatus.WAITING)],
            "run": [_entry(ctx, c) for c in ctx.store.composes(ComposeStatus.RUNNING)],
        }
    )


def finished(ctx: Context, req: Request) -> Response:
    return json_response({"finished": [_entry(ctx, c) for c in ctx.store.composes(ComposeStatus.FINISHED)]})


def failed(ctx: Context, req: Request) -> Response:
    return json_response({"failed": [_entry(ctx, c) for c in ctx.store.composes(ComposeStatus.FAILED)]})


def _compose(ctx: Context, text: str) -> Compose:
    compose_id = check_uuid(text)
    compose = ctx.store.compose(compose_id)
    if compose is None:
        raise WeldrError(UNKNOWN_UUID, f"{text} is not a valid build uuid")
    return compose


def status(ctx: Context, req: Request) -> Response:
    if req.args[0] == "*":
        composes = ctx.store.composes()
    else:
        composes = [_compose(ctx, text) for text in req.args[0].split(",")]
    wanted = {k: req.param(k) for k in ("blueprint", "status", "type") if req.param(k)}
    composes = [
        c
        for c in composes
        if wanted.get("blueprint", c.blueprint_name) == c.blueprint_name
        and wanted.get("status", c.status.value) == c.status.value
        and wanted.get("type", c.compose_type) == c.compose_type
    ]
    return json_response({"uuids": [_entry(ctx, c) for c in composes]})


def info(ctx: Context, req: Request) -> Response:
    compose = _compose(ctx, req.args[0])
    reply: dict[str, object] = {
        "id": compose.id,
        "config": "",
        "blueprint": weldr_view(compose.blueprint),
        "commit": "",
        "deps": {"packages": []},
        "compose_type": compose.compose_type,
        "queue_status": compose.status.value,
        "image_size": compose.image_size,
        "container_ref": compose.container_ref,
    }
    if compose.arch:
        reply["arch"] = compose.arch
    if compose.worker:
        reply["worker"] = compose.worker
    if compose.reason:
        reply["reason"] = compose.reason
    uploads = _uploads(ctx, compose)
    if uploads:
        reply["uploads"] = uploads
    return json_response(reply)


def _wrong_state(compose: Compose) -> WeldrError:
    return WeldrError(BUILD_IN_WRONG_STATE, f"Build {compose.id} is in the wrong state: {compose.status}")


def _log_path(ctx: Context, compose: Compose) -> Path:
    return compose_dir(ctx.config.state_dir, compose.id) / LOG_NAME


def log(ctx: Context, req: Request) -> Response:
    """The tail of the log (`size` KiB, composer's parameter) or, imgbuild's addition for following a
    running compose, everything from byte `offset` on (the X-Log-Size header gives the log's length)."""
    compose = _compose(ctx, req.args[0])
    if compose.status is ComposeStatus.WAITING:
        error = WeldrError(BUILD_IN_WRONG_STATE, f"Build {compose.id} has not started yet. No logs to view")
        return json_response(error.body())  # HTTP 200, as composer answers
    offset_text, size_text = req.param("offset"), req.param("size", str(DEFAULT_LOG_KIB))
    if (offset_text and not offset_text.isdigit()) or not size_text.isdigit():
        raise WeldrError(COMPOSE_ERROR, "size and offset are numbers")
    data = b""
    length = 0
    try:
        with open(_log_path(ctx, compose), "rb") as f:
            length = f.seek(0, 2)
            start_at = int(offset_text) if offset_text else max(0, length - int(size_text) * 1024)
            f.seek(min(start_at, length))
            data = f.read(min(length - min(start_at, length), 16 * 1024 * 1024))
    except FileNotFoundError:
        pass
    return Response(
        body=data, content_type="text/plain; charset=utf-8", headers=(("X-Log-Size", str(length)),)
    )


def _ended(ctx: Context, text: str) -> Compose:
    compose = _compose(ctx, text)
    if compose.status not in ENDED:
        raise _wrong_state(compose)
    return compose


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mtime, member.mode = len(data), int(time.time()), 0o644
    tar.addfile(member, io.BytesIO(data))


def _add_metadata(ctx: Context, compose: Compose, tar: tarfile.TarFile) -> None:
    directory = compose_dir(ctx.config.state_dir, compose.id)
    result = directory / OUTPUT_NAME / "result.json"
    _add_bytes(tar, f"{compose.id}.json", result.read_bytes() if result.is_file() else b"{}\n")
    _add_bytes(tar, BLUEPRINT_NAME, encode_toml(compose.blueprint).encode())


def _add_log(ctx: Context, compose: Compose, tar: tarfile.TarFile) -> None:
    path = _log_path(ctx, compose)
    # composer's name for the log inside the tar, so scripts that extract it keep working
    _add_bytes(tar, "logs/osbuild.log", path.read_bytes() if path.is_file() else b"")


def _tar_response(filename: str, fill: Any) -> Response:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        fill(tar)
    return Response(body=buffer.getvalue(), content_type="application/x-tar", headers=(attachment(filename),))


def logs(ctx: Context, req: Request) -> Response:
    compose = _ended(ctx, req.args[0])
    return _tar_response(f"{compose.id}-logs.tar", lambda tar: _add_log(ctx, compose, tar))


def metadata(ctx: Context, req: Request) -> Response:
    compose = _ended(ctx, req.args[0])
    return _tar_response(f"{compose.id}-metadata.tar", lambda tar: _add_metadata(ctx, compose, tar))


def results(ctx: Context, req: Request) -> Response:
    """Metadata, log and image in one tar, streamed (the image may be gigabytes)."""
    compose = _ended(ctx, req.args[0])

    def write(out: BinaryIO) -> None:
        with tarfile.open(fileobj=out, mode="w|") as tar:
            _add_metadata(ctx, compose, tar)
            _add_log(ctx, compose, tar)
            if compose.image is not None:
                arcname = f"{compose.id}-{compose.image}"
                stored = _stored(ctx, compose)
                if stored is None:
                    image = compose_dir(ctx.config.state_dir, compose.id) / OUTPUT_NAME / compose.image
                    tar.add(image, arcname=arcname, recursive=False)
                else:
                    member = tarfile.TarInfo(arcname)
                    member.size, member.mtime, member.mode = stored.size, int(time.time()), 0o644
                    with _open_stored(ctx, stored) as body:
                        tar.addfile(member, body)

    return Response(
        content_type="application/x-tar", headers=(attachment(f"{compose.id}.tar"),), stream=write
    )


def image(ctx: Context, req: Request) -> Response:
    compose = _compose(ctx, req.args[0])
    if compose.status is not ComposeStatus.FINISHED or compose.image is None:
        raise _wrong_state(compose)
    content_type = IMAGE_MIME_TYPES.get(compose.compose_type, "application/octet-stream")
    headers = (attachment(f"{compose.id}-{compose.image}"),)
    stored = _stored(ctx, compose)
    if stored is not None:  # streamed through: composer-cli follows no redirect over the Unix socket
        body = _open_stored(ctx, stored)  # before the status line: a missing object is an error answer

        def copy(out: BinaryIO) -> None:
            with body:
                shutil.copyfileobj(body, out, 1 << 20)

        return Response(content_type=content_type, headers=headers, stream=copy, size=stored.size)
    path = compose_dir(ctx.config.state_dir, compose.id) / OUTPUT_NAME / compose.image
    return Response(content_type=content_type, headers=headers, file=path)


def _stored(ctx: Context, compose: Compose) -> Stored | None:
    """The compose's image in the object store (a remote worker's), or None (a local file)."""
    stored = read_stored(compose_dir(ctx.config.state_dir, compose.id) / OUTPUT_NAME)
    if stored is not None and ctx.objects is None:
        raise WeldrError(BUILD_IN_WRONG_STATE, "the image is in an object store this service has no longer")
    return stored


def _open_stored(ctx: Context, stored: Stored) -> BinaryIO:
    assert ctx.objects is not None
    try:
        return ctx.objects.open(stored.key)
    except ImgbuildError as e:
        raise WeldrError(BUILD_IN_WRONG_STATE, f"the image is gone: {e.message}") from None


def cancel(ctx: Context, req: Request) -> Response:
    compose = _compose(ctx, req.args[0])
    if not ctx.queue.cancel(compose.id):
        raise WeldrError(BUILD_IN_WRONG_STATE, f"Build {compose.id} is not in WAITING or RUNNING.")
    return json_response({"uuid": compose.id, "status": True})


def delete(ctx: Context, req: Request) -> Response:
    ids = [check_uuid(text) for text in req.args[0].split(",")]
    deleted: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []
    for compose_id in ids:
        compose = ctx.store.compose(compose_id)
        if compose is None:
            errors.append({"id": UNKNOWN_UUID, "msg": f"compose {compose_id} doesn't exist"})
        elif not ctx.store.delete_compose(compose_id):
            errors.append(
                {"id": BUILD_IN_WRONG_STATE, "msg": f"Compose {compose_id} is not in FINISHED or FAILED."}
            )
        else:
            if ctx.objects is not None:  # every run's objects, a remote worker's abandoned ones too
                try:
                    ctx.objects.delete_compose(compose_id)
                except ImgbuildError as e:
                    errors.append({"id": COMPOSE_ERROR, "msg": f"compose {compose_id}: {e.message}"})
            shutil.rmtree(compose_dir(ctx.config.state_dir, compose_id), ignore_errors=True)
            deleted.append({"uuid": compose_id, "status": True})
    return json_response({"uuids": deleted, "errors": errors})


ROUTES: tuple[tuple[str, tuple[str, ...], int, Handler], ...] = (
    ("POST", ("compose",), 0, start),
    ("GET", ("compose", "types"), 0, types),
    ("GET", ("compose", "queue"), 0, queue),
    ("GET", ("compose", "finished"), 0, finished),
    ("GET", ("compose", "failed"), 0, failed),
    ("GET", ("compose", "status"), 1, status),
    ("GET", ("compose", "info"), 1, info),
    ("GET", ("compose", "log"), 1, log),
    ("GET", ("compose", "logs"), 1, logs),
    ("GET", ("compose", "metadata"), 1, metadata),
    ("GET", ("compose", "results"), 1, results),
    ("GET", ("compose", "image"), 1, image),
    ("DELETE", ("compose", "cancel"), 1, cancel),
    ("DELETE", ("compose", "delete"), 1, delete),
)
