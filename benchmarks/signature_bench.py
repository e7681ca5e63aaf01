"""What verifying an ostree commit's signature costs, against the import it guards, measured in one run.

The example OS's commit (IMGBUILD_EXAMPLES) is signed with a fresh test key in a copy of its repository and
encapsulated (not timed). Then, each timed: the verification alone (reading the commit and its detached
metadata from the head of the commit layer, gpg through libostree), and `import_image` of the image into a
fresh repository without and with the ostree remote. Prints the figures and the ratios.
Run as root: `.venv/bin/python benchmarks/signature_bench.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402
from builder.ostree.importer import import_image  # noqa: E402
from builder.ostree.remotes import from_key_files  # noqa: E402
from builder.ostree.signature import verify_image_commit  # noqa: E402
from builder.source.fetch import fetch_image  # noqa: E402
from builder.source.reference import parse_reference  # noqa: E402
from tests.signing import make_keys, make_signed_images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgbuild-sigbench-") as tmp:
        base = Path(tmp)
        keys = make_keys(base / "keys")
        (base / "signed").mkdir()
        signed = make_signed_images(build_example(Arch.X86_64), keys, base / "signed")
        ref = parse_reference(f"oci-archive:{signed.signed}")
        image = fetch_image(ref, cache=base / "cache")
        remote = from_key_files("bench", (keys.good,))
        verify: list[float] = []
        plain: list[float] = []
        verified: list[float] = []
        for i in range(args.runs):
            start = time.perf_counter()
            verify_image_commit(image, remote, reference=str(ref))
            verify.append(time.perf_counter() - start)
            for times, with_remote in ((plain, None), (verified, remote)):
                repo = base / f"repo-{i}-{with_remote is not None}"
                start = time.perf_counter()
                import_image(image, repo, imgref=ref.skopeo, remote=with_remote)
                times.append(time.perf_counter() - start)
                shutil.rmtree(repo)
        size = sum(layer.size for layer in image.layers)
        print(f"image: {size / 2**20:.1f} MiB in {len(image.layers)} layers; runs: {args.runs} (best of)")
        print(f"verify signature only:       {min(verify):8.3f} s")
        print(f"import without verification: {min(plain):8.3f} s")
        print(f"import with verification:    {min(verified):8.3f} s")
        print(f"ratio verify / import:        {min(verify) / min(plain):8.4f}")
        print(f"ratio verified / plain import: {min(verified) / min(plain):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
