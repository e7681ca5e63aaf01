"""imgbuild installed from its wheel (built from a clean copy of the checkout) into a fresh venv checks a
blueprint and builds a qcow2 of the example that boots: nothing is read from the checkout at run time."""

from __future__ import annotations

import os
import re
from pathlib import Path

from builder import run
from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import check_result
from tests.packaging import build_wheel, clean_copy, fresh_venv


def test_wheel_in_fresh_venv_builds_a_bootable_qcow2(tmp_path: Path, example_x86_64: ExampleImage) -> None:
    source = clean_copy(tmp_path / "src")
    wheel = build_wheel(source, tmp_path / "dist")
    exe = fresh_venv(wheel, tmp_path / "venv")
    work = tmp_path / "work"  # far from any checkout: the installed package must carry everything
    work.mkdir()
    env = {"IMGBUILD_CACHE": os.environ.get("IMGBUILD_CACHE", str(tmp_path / "cache"))}

    def imgbuild(*args: str | Path) -> run.Completed:
        return run.run([exe, *args], cwd=work, env=env, check=False, timeout=1800)

    where = run.run(
        [exe.with_name("python"), "-c", "import builder, blueprints; print(builder.__file__)"], cwd=work
    )
    assert where.out.startswith(str(tmp_path / "venv")), where.out

    checked = imgbuild("blueprint", "check", source / "blueprints" / "examples" / "everything-applied.toml")
    assert checked.returncode == 0, checked.stderr.decode()
    broken = work / "broken.toml"
    broken.write_text('name = "x"\n[customizations]\nhostname = 5\n')
    refused = imgbuild("blueprint", "check", broken)
    assert refused.returncode == 2 and b"hostname" in refused.stderr, refused.stderr

    built = imgbuild("qcow2", "--output", work / "out", "--progress", "plain", example_x86_64.reference)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    result = check_result(work / "out" / "result.json")
    disk = work / "out" / result["outputs"][0]["path"]
    booted = imgbuild("boot", disk, "--firmware", "bios", "--timeout", "600", "--append", SELFTEST_KARG)
    line = next((x for x in booted.out.splitlines() if SELFTEST_MARKER in x), None)
    assert line is not None, booted.out[-3000:] + booted.stderr.decode()[-2000:]
    assert re.search(rf"commit={result['commit']}\b", line), line

    # The example OS recipe is not installed: one line says so.
    example = imgbuild("example", "build")
    assert example.returncode == 2
    assert example.stderr.decode().startswith("imgbuild: error: the example OS is a checkout-only feature")
