"""`serve --object-store s3://...`: remote workers put their images into S3 (a real moto server on
loopback) through presigned URLs, with no AWS credentials of their own; the service checks the objects,
streams them to clients as it streams local files, and deletes them with the compose."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import pytest

from builder import run
from builder.service.weldr import IMAGE_MIME_TYPES
from tests.aws_helpers import FAKE_CREDENTIALS, MotoServer, moto_server
from tests.unit.test_service_support import ComposerCli, blueprint, running_service, standin_builder
from tests.workerfarm import CLIENT_TOKEN, ROOT, WORKER_TOKEN, free_port, worker_processes

BUCKET = "imgbuild-farm"
MiB = 1 << 20


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        server.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield server


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The service's AWS environment (the service runs in this process); the workers get none."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return moto


def _start(cli: ComposerCli, ref: str) -> str:
    body = {"blueprint_name": "demo", "compose_type": "qcow2", "container_ref": ref}
    answer = cli.raw("POST", "/api/v1/compose", json.dumps(body).encode(), "application/json")
    assert answer.status == 200, answer.body
    return str(answer.json()["build_id"])


def _standin_image(ref: str) -> bytes:
    """What the stand-in builder writes for a qcow2 compose of `ref`."""
    data = f"qcow2:{ref}\n".encode() * 1000
    return data * 400 if ref == "oci:/standin/big" else data


def _keys(moto: MotoServer, prefix: str) -> list[str]:
    listing = moto.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_remote_worker_images_go_to_the_object_store(tmp_path: Path, aws_env: MotoServer) -> None:
    """A small image (one presigned PUT) and a 9 MB one (multipart, two 5 MiB parts): in S3 with their
    bytes, not in the compose directory; `compose image` and `compose results` stream them with the
    local file's headers; `compose delete` removes them."""
    port = free_port()
    store = f"s3://{BUCKET}/farm"
    with running_service(
        tmp_path / "state",
        token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        workers=0,
        port=port,
        object_store=store,
        object_part_size=5 * MiB,
    ) as (service, cli):
        assert cli.push(blueprint()).json() == {"status": True}
        refs = {_start(cli, ref): ref for ref in ("oci:/standin/slow", "oci:/standin/big")}
        with worker_processes(
            tmp_path, f"http://127.0.0.1:{port}", {"w1": "arch:x86_64"}, standin_builder(tmp_path)
        ) as workers:
            for compose_id in refs:
                assert cli.wait(compose_id, timeout=120) == "FINISHED", workers["w1"].output()
        s3 = aws_env.client("s3")
        for compose_id, ref in refs.items():
            expected = _standin_image(ref)
            key = f"farm/{compose_id}/run-1/disk.qcow2"
            assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == expected
            etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
            parts = -(-len(expected) // (5 * MiB))  # a multipart upload's ETag ends in -PARTS
            assert etag.endswith(f'-{parts}"') if parts > 1 else "-" not in etag, (ref, etag)
            output = service.config.state_dir / "composes" / compose_id / "output"
            assert sorted(p.name for p in output.iterdir()) == ["result.json", "stored.json"]

            image = cli.get(f"/api/v1/compose/image/{compose_id}")
            assert image.status == 200 and image.body == expected
            assert image.headers["Content-Type"] == IMAGE_MIME_TYPES["qcow2"]
            assert image.headers["Content-Disposition"] == f"attachment; filename={compose_id}-disk.qcow2"
            assert image.headers["Content-Length"] == str(len(expected))
            assert "Transfer-Encoding" not in image.headers

            results = cli.get(f"/api/v1/compose/results/{compose_id}")
            assert results.status == 200
            with tarfile.open(fileobj=io.BytesIO(results.body)) as tar:
                member = tar.extractfile(f"{compose_id}-disk.qcow2")
                assert member is not None and member.read() == expected

        assert len(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 0
        big = next(c for c, r in refs.items() if r == "oci:/standin/big")
        deleted = cli.raw("DELETE", f"/api/v1/compose/delete/{big}", None, None).json()
        assert deleted == {"uuids": [{"uuid": big, "status": True}], "errors": []}
        assert _keys(aws_env, f"farm/{big}/") == []
        assert not (service.config.state_dir / "composes" / big).exists()
        assert cli.get(f"/api/v1/compose/image/{big}").status == 400
        other = next(c for c in refs if c != big)
        assert _keys(aws_env, f"farm/{other}/") == [f"farm/{other}/run-1/disk.qcow2"]


def _worker(port: int, name: str) -> ComposerCli:
    return ComposerCli(tcp=("127.0.0.1", port), token=WORKER_TOKEN)


def _post(worker: ComposerCli, path: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    answer = worker.raw("POST", "/api/worker/v1" + path, json.dumps(body).encode(), "application/json")
    return answer.status, answer.json()


def test_presigned_urls_are_per_compose_and_run(tmp_path: Path, aws_env: MotoServer) -> None:
    """A worker gets URLs only for the compose and run it holds the claim of, each for its one key; the
    service counts an image only once the object is there with the size the worker reported."""
    port = free_port()
    with running_service(
        tmp_path / "state",
        token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        workers=0,
        port=port,
        object_store=f"s3://{BUCKET}/scoped",
    ) as (_, cli):
        assert cli.push(blueprint()).json() == {"status": True}
        first, second = _start(cli, "oci:/standin/slow"), _start(cli, "oci:/standin/slow")
        api = _worker(port, "w1")
        jobs = {}
        for name in ("w1", "w2"):
            status, answer = _post(api, "/claim", {"worker": name, "labels": [], "wait": 0})
            job = answer["job"]
            assert status == 200 and isinstance(job, dict) and job["object_store"] is True
            jobs[name] = job
        mine, theirs = str(jobs["w1"]["id"]), str(jobs["w2"]["id"])
        assert {mine, theirs} == {first, second}
        ask = {"worker": "w1", "run": 1, "name": "disk.qcow2", "size": 5}
        # another worker's compose, or another run of its own: refused, no URL
        assert _post(api, f"/store/{theirs}", ask)[0] == 409
        assert _post(api, f"/store/{mine}", {**ask, "run": 2})[0] == 409
        assert _post(api, f"/store/{mine}", {**ask, "name": "../x"})[0] == 400
        status, plan = _post(api, f"/store/{mine}", ask)
        assert status == 200, plan
        url = urlsplit(str(plan["url"]))
        assert url.path == f"/{BUCKET}/scoped/{mine}/run-1/disk.qcow2" == f"/{BUCKET}/{plan['key']}"
        query = parse_qs(url.query)  # SigV4: the signature covers the method, the path (the key), the host
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-SignedHeaders"] == ["host"]
        assert "imgbuild-test-secret" not in json.dumps(plan)
        # moto does not check presigned signatures; S3 does: the signature, recomputed here as SigV4
        # defines it, is the URL's for its own key and not for another compose's key
        secret = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        assert _sigv4(str(plan["url"]), secret) == query["X-Amz-Signature"][0]
        other_key = str(plan["url"]).replace(mine, theirs)
        assert _sigv4(other_key, secret) != query["X-Amz-Signature"][0]
        # not uploaded yet: not accepted
        assert _post(api, f"/stored/{mine}", ask)[0] == 400
        run.run(
            [sys.executable, "-c", PUT, str(plan["url"])],
            input=b"12345",
            env={"PYTHONPATH": str(ROOT)},
        )
        assert _post(api, f"/stored/{mine}", {**ask, "size": 6})[0] == 400  # the wrong size
        assert _post(api, f"/stored/{mine}", ask)[0] == 200
        assert _keys(aws_env, "scoped/") == [f"scoped/{mine}/run-1/disk.qcow2"]


def _sigv4(url: str, secret: str, method: str = "PUT") -> str:
    """The SigV4 query signature S3 expects for `url` (AWS's "Authenticating Requests: Using Query
    Parameters"), from its own X-Amz-* parameters."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"]
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params))
    fields = dict(params)
    canonical = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    _, date, region, service, terminator = fields["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminator}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{fields['X-Amz-Date']}\n{scope}\n{digest}"
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


# A PUT to a presigned URL from a process with no AWS environment (what a worker does).
PUT = """
import sys
from pathlib import Path
from builder.service.worker_api import _put
data = sys.stdin.buffer.read()
path = Path("/dev/shm") / "imgbuild-objstore-put-test"
path.write_bytes(data)
try:
    _put(sys.argv[1], path, 0, len(data))
finally:
    path.unlink()
"""


def test_a_store_the_service_cannot_write_stops_it_at_start(tmp_path: Path, aws_env: MotoServer) -> None:
    token = tmp_path / "token"
    token.write_text(CLIENT_TOKEN)
    worker_token = tmp_path / "worker-token"
    worker_token.write_text(WORKER_TOKEN)
    env = {"PYTHONPATH": str(ROOT), **aws_env.env()}
    for store, message in (
        ("s3://no-such-bucket/x", "cannot write to the object store: s3:PutObject on s3://no-such-bucket/x"),
        ("http://bucket", "--object-store wants s3://BUCKET[/PREFIX]"),
    ):
        argv = [sys.executable, "-m", "builder", "serve", "--state", str(tmp_path / "state")]
        argv += ["--socket", str(tmp_path / "sock" / "api.socket"), "--listen", "127.0.0.1:0"]
        argv += ["--token-file", str(token), "--worker-token-file", str(worker_token), "--workers", "0"]
        result = run.run([*argv, "--object-store", store], env=env, check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.decode().splitlines()
        assert lines[0].startswith(f"imgbuild: error: {message}") or message in lines[0], lines
        assert "Traceback" not in result.stderr.decode()
        assert not (tmp_path / "state").exists() and not (tmp_path / "sock").exists()
