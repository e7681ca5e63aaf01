"""builder.source.fetch against a real registry (Debian's docker-registry, the distribution registry) that
the test starts on loopback: the docker:// path, multi-arch resolution, and a cache that never fetches a
blob twice (counted in the registry's access log)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.errors import SourceError
from builder.source.fetch import fetch_image
from builder.source.image import LayerRole, Layout
from builder.source.inspect import kernel_versions
from builder.source.reference import parse_reference
from tests.source_oci import LayerSpec, write_multiarch_dir

V1_MANIFEST = "sha256:7477731ebb732a7fdcf9a46c77967aa49d3519a411a81e713bb1297c87f061e3"
BASE_LAYER = "sha256:ee02768e65e6fb2bb7058282338896282910f3560de3e0d6cd9b1d5985e8360d"
COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
_BLOB_GET = re.compile(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200')


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    log: Path
    proc: run.Popen[bytes]

    def blob_gets(self) -> list[str]:
        return _BLOB_GET.findall(self.log.read_text(errors="replace"))

    def stop(self) -> None:
        run.terminate(self.proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: run.Popen[bytes], log: Path, expect: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"docker-registry exited: {log.read_text()[-2000:]}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/")
            if conn.getresponse().status == expect:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("docker-registry did not answer within 20 s")


def _start(tmp_path: Path, htpasswd: str | None = None) -> Registry:
    port = _free_port()
    config = tmp_path / "registry.yml"
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: imgbuild-test\n" + auth
    )
    log = tmp_path / "registry.log"
    with open(log, "wb") as out:
        proc = run.Popen(
            [run.require("docker-registry"), "serve", str(config)], stdout=out, stderr=run.STDOUT
        )
    try:
        _wait_ready(port, proc, log, expect=401 if htpasswd else 200)
    except BaseException:
        run.terminate(proc)
        raise
    return Registry(f"127.0.0.1:{port}", log, proc)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    started = _start(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def push(source: str, registry: Registry, name: str, *extra: str) -> None:
    run.run(
        [
            "skopeo",
            "copy",
            "-q",
            *extra,
            "--dest-tls-verify=false",
            source,
            f"docker://{registry.host}/{name}",
        ]
    )


def test_fetch_from_registry_and_never_twice(
    ostree_ext_fixtures: Path, registry: Registry, tmp_path: Path
) -> None:
    push(f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}", registry, "exampleos:v1")
    push(f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive-v2.ociarchive'}", registry, "exampleos:v2")
    cache = tmp_path / "cache"
    ref = parse_reference(f"docker://{registry.host}/exampleos:v1")
    assert ref.origin == f"ostree-unverified-registry:{registry.host}/exampleos:v1"

    image = fetch_image(ref, cache=cache, tls_verify=False)
    assert image.manifest_digest == V1_MANIFEST
    assert image.layout is Layout.LEGACY_UNLABELLED
    assert image.ostree_commit == COMMIT
    assert [layer.role for layer in image.layers] == [LayerRole.OSTREE_COMMIT, LayerRole.DERIVED]
    assert kernel_versions(image) == ("5.10.18-200.x86_64",)
    first = registry.blob_gets()
    assert sorted(first) == sorted(
        [image.layers[0].digest, image.layers[1].digest, _config_digest(image.manifest)]
    )

    # Same tag again: the manifest is asked for, no blob is.
    assert fetch_image(ref, cache=cache, tls_verify=False) == image
    assert registry.blob_gets() == first

    # The update shares the base layer: only its new layer and config are downloaded.
    v2 = fetch_image(parse_reference(f"{registry.host}/exampleos:v2"), cache=cache, tls_verify=False)
    new = registry.blob_gets()[len(first) :]
    assert BASE_LAYER not in new
    assert sorted(new) == sorted([v2.layers[1].digest, _config_digest(v2.manifest)])

    # With the registry gone, a reference pinned to a cached digest needs no network; a tag does.
    registry.stop()
    pinned = fetch_image(
        parse_reference(f"{registry.host}/exampleos@{V1_MANIFEST}"), cache=cache, tls_verify=False
    )
    assert pinned.manifest_digest == V1_MANIFEST
    start = time.monotonic()
    with pytest.raises(SourceError, match=f"cannot read {registry.host}/exampleos:v1: .*connection refused"):
        fetch_image(ref, cache=cache, tls_verify=False)
    assert time.monotonic() - start < 60


def _config_digest(manifest: bytes) -> str:
    match = re.search(rb'"config":\{[^}]*"digest":"(sha256:[0-9a-f]{64})"', manifest)
    assert match is not None
    return match[1].decode()


def test_multiarch_from_registry(registry: Registry, tmp_path: Path) -> None:
    written = write_multiarch_dir(
        tmp_path / "multi",
        {
            "amd64": [LayerSpec({"usr/lib/modules/6.1.0-amd64/vmlinuz": b"x86"})],
            "arm64": [LayerSpec({"usr/lib/modules/6.1.0-arm64/vmlinuz": b"arm"})],
        },
    )
    push(f"oci:{tmp_path / 'multi'}", registry, "multi:1", "--all")
    ref = parse_reference(f"{registry.host}/multi:1")
    arm = fetch_image(ref, arch=Arch.AARCH64, cache=tmp_path / "cache", tls_verify=False)
    assert arm.manifest_digest == written["arm64"].manifest_digest
    assert kernel_versions(arm) == ("6.1.0-arm64",)
    x86 = fetch_image(ref, arch=Arch.X86_64, cache=tmp_path / "cache", tls_verify=False)
    assert x86.manifest_digest == written["amd64"].manifest_digest
    gets = registry.blob_gets()
    assert len(gets) == len(set(gets)) == 4, "each arch's config and layer, once"


def test_registry_errors(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=f"cannot read {registry.host}/nothing/here:1: .*manifest unknown"
    ) as info:
        fetch_image(parse_reference(f"{registry.host}/nothing/here:1"), cache=tmp_path, tls_verify=False)
    assert info.value.hint == "check the repository name and tag"
    # TLS verification stays on unless turned off: this registry speaks plain HTTP.
    with pytest.raises(SourceError, match=r"(?i)http response to https client"):
        fetch_image(parse_reference(f"{registry.host}/nothing/here:1"), cache=tmp_path)
    with pytest.raises(SourceError, match="auth file"):
        fetch_image(
            parse_reference(f"{registry.host}/a:1"), cache=tmp_path, authfile=tmp_path / "missing-auth.json"
        )


def test_registry_with_credentials(ostree_ext_fixtures: Path, tmp_path: Path) -> None:
    """--authfile, and the standard REGISTRY_AUTH_FILE that run.py passes through to skopeo."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # glibc's bcrypt: the registry's htpasswd wants one, and Python has no other

        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"tester:{hashed}\n")
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(b"tester:s3cret").decode()
    registry = _start(tmp_path, str(htpasswd))
    try:
        authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        source = f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}"
        push(source, registry, "private:1", "--dest-authfile", str(authfile))
        ref = parse_reference(f"{registry.host}/private:1")
        with pytest.raises(SourceError, match="unauthorized") as info:
            fetch_image(ref, cache=tmp_path / "c0", tls_verify=False)
        assert info.value.hint is not None and "--authfile" in info.value.hint
        image = fetch_image(ref, cache=tmp_path / "c1", tls_verify=False, authfile=authfile)
        assert image.manifest_digest == V1_MANIFEST
        with pytest.MonkeyPatch.context() as env:
            env.setenv("REGISTRY_AUTH_FILE", str(authfile))
            assert fetch_image(ref, cache=tmp_path / "c2", tls_verify=False).manifest_digest == V1_MANIFEST
    finally:
        registry.stop()
