"""The worker's side of the worker API (routes_worker.py): HTTP over TCP with the worker token.

Every failure to reach the service, and every 5xx, is ServerLost (the caller retries: the service may be
restarting); 409 is NotYours (the claim is no longer current: abandon the job); 401 means a wrong token,
which retrying cannot fix.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError

PREFIX = "/api/worker/v1"


class ServerLost(Exception):
    """The service did not answer (down, restarting, unreachable) or failed (5xx)."""


class NotYours(Exception):
    """The service no longer counts the compose as this worker's (requeued, canceled, failed)."""


class Refused(ImgbuildError):
    """The service refused the request itself (a wrong token, a malformed request)."""


@dataclass(frozen=True)
class Job:
    id: str
    run: int
    compose_type: str
    container_ref: str
    image_size: int
    arch: str | None
    blueprint: str  # TOML, as the builder reads it
    object_store: bool = False  # the image goes to the service's object store (presigned URLs)


@dataclass(frozen=True)
class WorkerApi:
    server: str  # http://HOST:PORT or https://HOST:PORT
    token: str
    name: str
    labels: tuple[str, ...]
    timeout: float = 60.0

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ImgbuildError(f"--server wants http://HOST:PORT, not {self.server!r}")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.server)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        return kind(url.hostname or "", url.port, timeout=timeout)

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 0
    ) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        headers = {"Authorization": f"Bearer {self.token}", "Content-Length": str(len(data))}
        headers["Content-Type"] = "application/octet-stream" if raw is not None else "application/json"
        return self._request(method, path, data, headers, timeout or self.timeout)

    def _request(self, method: str, path: str, body: Any, headers: dict[str, str], timeout: float) -> Any:
        conn = self._connection(timeout)
        try:
            conn.request(method, PREFIX + path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise ServerLost(f"{self.server}: {e}") from None
        finally:
            conn.close()
        if response.status >= 500:
            raise ServerLost(f"{self.server}: HTTP {response.status}")
        try:
            answer = json.loads(payload) if payload else {}
        except ValueError:
            raise ServerLost(f"{self.server}: an answer that is not JSON (HTTP {response.status})") from None
        if response.status == 409:
            raise NotYours(_message(answer))
        if response.status == 401:
            raise Refused("the service refused the worker token", hint="check --token-file")
        if response.status != 200:
            raise Refused(f"the service refused {method} {path}: {_message(answer)}")
        return answer

    # -- the calls

    def claim(self, wait: float) -> tuple[Job | None, float]:
        """A job (None when none came within `wait` seconds) and the heartbeat interval to keep."""
        body = {"worker": self.name, "labels": list(self.labels), "wait": wait}
        answer = self.call("POST", "/claim", body, timeout=wait + self.timeout)
        job = answer.get("job")
        interval = float(answer.get("heartbeat", 5.0))
        return (Job(**job) if isinstance(job, dict) else None), interval

    def heartbeat(self, job: Job) -> tuple[bool, bool]:
        """(still ours, cancel it)."""
        body = {"worker": self.name, "labels": list(self.labels), "run": job.run}
        answer = self.call("POST", f"/heartbeat/{job.id}", body)
        return bool(answer.get("owned")), bool(answer.get("cancel"))

    def _claim_query(self, job: Job) -> str:
        return urllib.parse.urlencode({"worker": self.name, "run": job.run})

    def send_log(self, job: Job, data: bytes) -> None:
        self.call("POST", f"/log/{job.id}?{self._claim_query(job)}", raw=data)

    def upload(self, job: Job, path: Path) -> None:
        """An output file, streamed from disk."""
        size = path.stat().st_size
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        }
        target = f"/output/{job.id}/{urllib.parse.quote(path.name)}?{self._claim_query(job)}"
        with open(path, "rb") as f:
            self._request("PUT", target, f, headers, max(self.timeout, 600.0))

    def store(self, job: Job, path: Path) -> None:
        """The image, straight into the service's object store: the service hands out presigned URLs
        for this compose's key (one PUT, or one per part of a multipart upload), then checks the object."""
        size = path.stat().st_size
        claim = {"worker": self.name, "run": job.run, "name": path.name, "size": size}
        plan = self.call("POST", f"/store/{job.id}", claim)
        report: dict[str, Any] = dict(claim)
        if "url" in plan:
            _put(str(plan["url"]), path, 0, size)
        else:
            part_size = int(plan["part_size"])
            etags = [
                _put(str(url), path, n * part_size, min(part_size, size - n * part_size))
                for n, url in enumerate(plan["urls"])
            ]
            report.update(upload_id=plan["upload_id"], etags=etags)
        self.call("POST", f"/stored/{job.id}", report, timeout=max(self.timeout, 300.0))

    def finish(self, job: Job, status: str, reason: str | None, image: str | None) -> None:
        body = {"worker": self.name, "run": job.run, "status": status, "reason": reason, "image": image}
        self.call("POST", f"/finish/{job.id}", body)


def _put(url: str, path: Path, offset: int, length: int) -> str:
    """`length` bytes of `path` from `offset` to a presigned URL, streamed; the object's (part's) ETag.
    The URL is never logged: until it expires it lets anyone write that key."""
    target = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    conn = kind(target.hostname or "", target.port, timeout=600.0)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            conn.putrequest("PUT", f"{target.path}?{target.query}", skip_accept_encoding=True)
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            left = length
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise ServerLost(f"{path.name} shrank while it was uploaded")
                conn.send(chunk)
                left -= len(chunk)
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise ServerLost(f"the object store at {target.hostname}: {e}") from None
    finally:
        conn.close()
    if response.status >= 500:
        raise ServerLost(f"the object store at {target.hostname}: HTTP {response.status}")
    if response.status != 200:
        detail = " ".join(payload.decode(errors="replace").split())[:200]
        raise Refused(f"the object store refused {path.name} (HTTP {response.status}): {detail}")
    return str(response.getheader("ETag") or "")


def _message(answer: Any) -> str:
    try:
        return str(answer["errors"][0]["msg"])
    except (KeyError, IndexError, TypeError):
        return str(answer)[:200]
