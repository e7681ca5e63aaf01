"""The worker API (`/api/worker/v1/...`): what `imgbuild worker` asks the service.

Authenticated with the worker token (server.py), never with the client's. A worker names itself and its
labels; every request about a compose carries its claim (worker name and run number) and is refused with
409 once the claim is no longer current (the compose was requeued, canceled or failed meanwhile), so a
worker the service gave up on can neither upload into nor finish a compose another worker now runs.

    POST /claim                      {"worker", "labels", "wait"} -> {"job": null | {...}}
    POST /heartbeat/ID               {"worker", "labels", "run"}  -> {"owned", "cancel"}
    POST /log/ID?worker=W&run=N      the next bytes of the build's log
    PUT  /output/ID/NAME?worker=W&run=N   an output file (the image, result.json), streamed
    POST /store/ID                   {"worker", "run", "name", "size"} -> where to put it (objstore.Upload)
    POST /stored/ID                  {"worker", "run", "name", "size", ["upload_id", "etags"]}
    POST /finish/ID                  {"worker", "run", "status", "reason", "image"}

With an object store (serve --object-store) the job says so (`object_store`), and the worker puts the
image there through presigned URLs (store, stored) instead of PUT output; result.json still comes here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO, Any

from builder.errors import ImgbuildError
from builder.service.api import Context, Handler, Request, Response, json_response, ok
from builder.service.bpcodec import encode_toml
from builder.service.compose_request import MAX_SIZE, builder_blueprint
from builder.service.farm import Farm
from builder.service.objstore import ObjectStore, Stored, read_stored, write_stored
from builder.service.queue import LOG_NAME, OUTPUT_NAME, append_log, compose_dir, find_image
from builder.service.store import ComposeStatus
from builder.service.weldr import COMPOSE_ERROR, WeldrError, check_uuid, json_object

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")
OUTPUT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
MAX_LABELS = 32
MAX_WAIT = 60.0
NOT_YOURS = "CLAIM_NOT_CURRENT"


def _farm(ctx: Context) -> Farm:
    if ctx.farm is None:
        raise WeldrError(COMPOSE_ERROR, "this service takes no remote workers", 404)
    return ctx.farm


def _json(req: Request) -> dict[str, Any]:
    return json_object(req.body, "request")


def _name(value: object) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise WeldrError(COMPOSE_ERROR, "a worker name or label is 1-100 of A-Z a-z 0-9 . _ : @ -")
    return value


def _labels(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_LABELS:
        raise WeldrError(COMPOSE_ERROR, f"labels: a list of at most {MAX_LABELS}")
    return tuple(_name(label) for label in value)


def _run(value: object) -> int:
    text = str(value)
    if not text.isdigit():
        raise WeldrError(COMPOSE_ERROR, "run: the claim's run number")
    return int(text)


def _claimed(ctx: Context, compose_id: str, worker: str, run: int) -> None:
    if not _farm(ctx).owns(worker, compose_id, run):
        raise WeldrError(NOT_YOURS, f"compose {compose_id} is no longer claimed by {worker} (run {run})", 409)


def claim(ctx: Context, req: Request) -> Response:
    body = _json(req)
    worker, labels = _name(body.get("worker")), _labels(body.get("labels", []))
    wait = body.get("wait", 0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_WAIT:
        raise WeldrError(COMPOSE_ERROR, f"wait: seconds, 0 to {MAX_WAIT:.0f}")
    farm = _farm(ctx)
    compose = farm.claim(worker, labels, float(wait))
    if compose is None:
        return json_response({"job": None, "heartbeat": farm.heartbeat_interval})
    job = {
        "id": compose.id,
        "run": compose.runs,
        "compose_type": compose.compose_type,
        "container_ref": compose.container_ref,
        "image_size": compose.image_size,
        "arch": compose.arch,
        "blueprint": encode_toml(builder_blueprint(compose.blueprint)),
        "object_store": ctx.objects is not None,
    }
    return json_response({"job": job, "heartbeat": farm.heartbeat_interval})


def heartbeat(ctx: Context, req: Request) -> Response:
    compose_id = check_uuid(req.args[0])
    body = _json(req)
    worker, labels, run = _name(body.get("worker")), _labels(body.get("labels", [])), _run(body.get("run"))
    owned, cancel = _farm(ctx).heartbeat(worker, labels, compose_id, run)
    return json_response({"owned": owned, "cancel": cancel or not owned})


def log(ctx: Context, req: Request) -> Response:
    compose_id = check_uuid(req.args[0])
    _claimed(ctx, compose_id, _name(req.param("worker")), _run(req.param("run")))
    with open(compose_dir(ctx.config.state_dir, compose_id) / LOG_NAME, "ab") as f:
        f.write(req.body)
    return ok()


def receive_output(
    ctx: Context, args: tuple[str, ...], req: Request, body: IO[bytes], length: int
) -> Response:
    """PUT output/ID/NAME: the body (`length` bytes) into the compose's output directory, written beside
    and renamed, so a broken upload leaves no partial file under the final name."""
    compose_id, name = check_uuid(args[0]), args[1]
    if not OUTPUT_FILE.match(name) or name.endswith(".partial"):
        raise WeldrError(COMPOSE_ERROR, f"invalid output file name {name[:60]!r}")
    if length > MAX_SIZE:
        raise WeldrError(COMPOSE_ERROR, f"output too large: {length} bytes")
    worker, run = _name(req.param("worker")), _run(req.param("run"))
    _claimed(ctx, compose_id, worker, run)
    output = compose_dir(ctx.config.state_dir, compose_id) / OUTPUT_NAME
    output.mkdir(parents=True, exist_ok=True)
    partial = output / f"{name}.{worker}.{run}.partial"
    try:
        with open(partial, "wb") as f:
            left = length
            while left > 0:
                chunk = body.read(min(left, 1 << 20))
                if not chunk:
                    raise WeldrError(COMPOSE_ERROR, f"upload of {name} ended after {length - left} bytes")
                f.write(chunk)
                left -= len(chunk)
        _claimed(ctx, compose_id, worker, run)  # still this worker's, now that the file is complete
        partial.replace(output / name)
    finally:
        partial.unlink(missing_ok=True)
    return ok()


def _objects(ctx: Context) -> ObjectStore:
    if ctx.objects is None:
        raise WeldrError(COMPOSE_ERROR, "this service has no object store: PUT the output instead", 404)
    return ctx.objects


def _output(body: dict[str, Any]) -> tuple[str, int]:
    name, size = body.get("name"), body.get("size")
    if not isinstance(name, str) or not OUTPUT_FILE.match(name) or name == "result.json":
        raise WeldrError(COMPOSE_ERROR, "name: the image's file name")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise WeldrError(COMPOSE_ERROR, f"size: bytes, at most {MAX_SIZE}")
    return name, size


def store(ctx: Context, req: Request) -> Response:
    """Where the worker puts its image: presigned URLs for the one key of this compose, run and name."""
    compose_id, body = check_uuid(req.args[0]), _json(req)
    worker, run = _name(body.get("worker")), _run(body.get("run"))
    name, size = _output(body)
    objects = _objects(ctx)
    _claimed(ctx, compose_id, worker, run)
    try:
        return json_response(objects.plan(compose_id, run, name, size).to_json())
    except ImgbuildError as e:
        raise WeldrError(COMPOSE_ERROR, e.message, 503) from None  # the worker retries


def stored(ctx: Context, req: Request) -> Response:
    """The worker has put its image: complete a multipart upload, check the object, record its key."""
    compose_id, body = check_uuid(req.args[0]), _json(req)
    worker, run = _name(body.get("worker")), _run(body.get("run"))
    name, size = _output(body)
    objects = _objects(ctx)
    _claimed(ctx, compose_id, worker, run)
    key = objects.key(compose_id, run, name)
    upload_id, etags = body.get("upload_id"), body.get("etags")
    try:
        if upload_id is not None:
            if (
                not isinstance(upload_id, str)
                or not isinstance(etags, list)
                or not all(isinstance(e, str) for e in etags)
            ):
                raise WeldrError(COMPOSE_ERROR, "upload_id and etags: the multipart upload's id and ETags")
            objects.complete(key, upload_id, etags)
        found = objects.size(key)
    except ImgbuildError as e:
        raise WeldrError(COMPOSE_ERROR, e.message, 503) from None
    if found is None:
        raise WeldrError(COMPOSE_ERROR, f"the object store has no {name} for this compose and run")
    if found != size:
        raise WeldrError(COMPOSE_ERROR, f"the object store has {found} bytes of {name}, not {size}")
    output = compose_dir(ctx.config.state_dir, compose_id) / OUTPUT_NAME
    output.mkdir(parents=True, exist_ok=True)
    write_stored(output, Stored(name, key, size))
    return ok()


def _stored_image(ctx: Context, compose_id: str) -> str | None:
    """The image's name when the worker put it in the object store (checked again: key and size); None
    when it sent it here."""
    output = compose_dir(ctx.config.state_dir, compose_id) / OUTPUT_NAME
    record = read_stored(output)
    if record is None or ctx.objects is None:
        return None
    try:
        named = Path(str(json.loads((output / "result.json").read_text())["outputs"][0]["path"])).name
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ImgbuildError(f"the builder's result.json is missing or malformed ({e})") from None
    if named != record.name:
        raise ImgbuildError(f"result.json names {named!r}, the object store holds {record.name!r}")
    if ctx.objects.size(record.key) != record.size:
        raise ImgbuildError(f"{record.name} is not in the object store with its {record.size} bytes")
    return record.name


def finish(ctx: Context, req: Request) -> Response:
    compose_id = check_uuid(req.args[0])
    body = _json(req)
    worker, run = _name(body.get("worker")), _run(body.get("run"))
    status_text, reason = body.get("status"), body.get("reason")
    if status_text not in (ComposeStatus.FINISHED.value, ComposeStatus.FAILED.value):
        raise WeldrError(COMPOSE_ERROR, "status: FINISHED or FAILED")
    if reason is not None and not isinstance(reason, str):
        raise WeldrError(COMPOSE_ERROR, "reason: text")
    _claimed(ctx, compose_id, worker, run)
    status, image = ComposeStatus(status_text), None
    if status is ComposeStatus.FINISHED:
        try:  # the outputs it uploaded, checked as a local build's are
            image = _stored_image(ctx, compose_id) or find_image(
                compose_dir(ctx.config.state_dir, compose_id) / OUTPUT_NAME
            )
        except ImgbuildError as e:
            status, reason = ComposeStatus.FAILED, f"worker {worker}: {e.message}"
    reason = reason[:400] if reason else None
    note = f"compose {status.value} on worker {worker}" + (f": {reason}" if reason else "")
    if not ctx.store.finish(compose_id, status, reason, image, worker, run):
        raise WeldrError(NOT_YOURS, f"compose {compose_id} is no longer claimed by {worker} (run {run})", 409)
    append_log(ctx.config.state_dir, compose_id, note)
    _farm(ctx).release(worker)
    return ok()


def workers(ctx: Context, req: Request) -> Response:
    """GET /api/v1/workers (a client route): the workers, their labels, last heartbeat, compose."""
    farm = ctx.farm
    return json_response({"workers": [w.to_json() for w in farm.workers()] if farm else []})


ROUTES: tuple[tuple[str, tuple[str, ...], int, Handler], ...] = (
    ("POST", ("claim",), 0, claim),
    ("POST", ("heartbeat",), 1, heartbeat),
    ("POST", ("log",), 1, log),
    ("POST", ("store",), 1, store),
    ("POST", ("stored",), 1, stored),
    ("POST", ("finish",), 1, finish),
)
CLIENT_ROUTES: tuple[tuple[str, tuple[str, ...], int, Handler], ...] = (("GET", ("workers",), 0, workers),)
