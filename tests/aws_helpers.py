"""AWS upload test helpers: a moto server on a loopback port, and small GPT disks made with real tools.

moto (PyPI moto[server]) is a real HTTP implementation of the EC2, EBS direct, S3, STS and IAM APIs; the tests
start it as a separate process and point boto3 at it through AWS_ENDPOINT_URL, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from builder import run
from builder.disk.esp import MTOOLS_ENV

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIMGBUILDTESTKEY1",
    "AWS_SECRET_ACCESS_KEY": "imgbuild-test-secret",
}
REGION = "eu-west-1"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    url: str
    proc: Any

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a client of this server needs (fake credentials, endpoint, region)."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": REGION, **extra}

    def client(self, service: str, **credentials: str) -> Any:
        keys = credentials or {
            "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **keys)

    def stop(self) -> None:
        run.terminate(self.proc, grace=5)


@contextmanager
def moto_server(**env: str) -> Iterator[MotoServer]:
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    with run.spawn(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        check=False,
        stdout=run.DEVNULL,
        stderr=run.DEVNULL,
    ) as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto_server did not start on port {port}") from None
                time.sleep(0.2)
        moto = MotoServer(url, proc)
        try:
            yield moto
        finally:
            moto.stop()


def _write_nonzero(disk: Path, offset: int, data: bytes) -> None:
    """Copy `data` into `disk` at `offset`, leaving holes where `data` has zeros (keeps the file sparse)."""
    chunk = 64 * 1024
    fd = os.open(disk, os.O_WRONLY)
    try:
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            if piece.count(0) != len(piece):
                os.pwrite(fd, piece, offset + start)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TestDisk:
    path: Path
    esp_offset: int
    data_offset: int  # where the root partition starts


def make_disk(
    path: Path,
    *,
    size: int = 64 * MiB,
    arch: str = "x86_64",
    bios: bool = True,
    uefi: bool = True,
    data: bytes = b"",
    explicit_zeros: int = 0,
) -> TestDisk:
    """A sparse GPT disk: BIOS boot (x86_64), an ESP with EFI/BOOT's loader, a root partition holding `data`.

    `explicit_zeros` bytes of zeros are written (not left as a hole) after `data`, so the upload must skip
    them by reading, not through the sparse map.
    """
    with path.open("wb") as f:
        f.truncate(size)
    root_type = {
        "x86_64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "aarch64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    }
    argv: list[str | os.PathLike[str]] = ["sgdisk", "-Z"]
    if bios:
        argv += ["-n", "1:2048:+1M", "-t", "1:EF02"]
    argv += ["-n", "2:0:+33M", "-t", "2:EF00", "-n", "3:0:0", "-t", f"3:{root_type[arch]}", path]
    run.run(argv)
    parts = {
        p["node"][-1]: p
        for p in json.loads(run.run(["sfdisk", "--json", path]).out)["partitiontable"]["partitions"]
    }
    esp_offset = int(parts["2"]["start"]) * 512
    data_offset = int(parts["3"]["start"]) * 512
    esp = path.with_name(path.name + ".esp")
    with esp.open("wb") as f:
        f.truncate(33 * MiB)
    run.run(["mkfs.fat", "-F", "32", "-n", "EFI-SYSTEM", esp])
    run.run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], env=MTOOLS_ENV)
    if uefi:
        loader = path.with_name("BOOTX64.EFI" if arch == "x86_64" else "BOOTAA64.EFI")
        loader.write_bytes(b"MZ" + os.urandom(4096))
        run.run(["mcopy", "-i", esp, loader, "::/EFI/BOOT/"], env=MTOOLS_ENV)
        loader.unlink()
    _write_nonzero(path, esp_offset, esp.read_bytes())
    esp.unlink()
    if data:
        _write_nonzero(path, data_offset, data)
    if explicit_zeros:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(explicit_zeros), data_offset + len(data) + MiB)
        finally:
            os.close(fd)
    return TestDisk(path, esp_offset, data_offset)


def nonzero_blocks(disk: Path, block: int = 512 * 1024) -> dict[int, bytes]:
    """Every non-zero block of the disk, read plainly (the reference the snapshot is compared with)."""
    blocks = {}
    with disk.open("rb") as f:
        index = 0
        while chunk := f.read(block):
            chunk = chunk.ljust(block, b"\0")
            if chunk.count(0) != block:
                blocks[index] = chunk
            index += 1
    return blocks


def snapshot_blocks(ebs: Any, snapshot_id: str) -> dict[int, bytes]:
    """The blocks of a snapshot read back through ListSnapshotBlocks/GetSnapshotBlock."""
    blocks = {}
    params: dict[str, Any] = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**params)
        for b in page["Blocks"]:
            got = ebs.get_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
            )
            blocks[int(b["BlockIndex"])] = got["BlockData"].read()
        if not page.get("NextToken"):
            return blocks
        params["NextToken"] = page["NextToken"]


class CuttableProxy:
    """A TCP proxy on loopback that can be cut: every connection is closed and new ones are refused.

    Put in front of one service's endpoint (AWS_ENDPOINT_URL_EBS) it is the network dying under the block
    uploads while the other endpoints stay reachable for the cleanup.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # the other direction or cut() closed the sockets
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):  # already closed
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self.listener.close()
            for s in self._sockets:
                with contextlib.suppress(OSError):  # already closed
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
