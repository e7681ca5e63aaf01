"""The GitHub Action's outputs from imgbuild's result.json files (docs/results.md), as GITHUB_OUTPUT lines.

`outputs.py OUTDIR TYPE...` prints `name=value` lines; `outputs.py --find TYPE OUTDIR` prints the path
(relative to OUTDIR) of the output of that type. Standard library only: it runs on the bare runner.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Every type gets <type>-output-path and <type>-output-checksum (empty when not built), as
# bootc-image-builder-action does for its types.
KNOWN_TYPES = ("qcow2", "raw", "vmdk", "vhd", "iso", "anaconda-iso", "gce", "ova", "ami")


def results(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """result.json of a `build --type` run (OUTDIR/result.json) or of one run per type (OUTDIR/TYPE/)."""
    files = [out / "result.json", *sorted(out.glob("*/result.json"))]
    return [(f, json.loads(f.read_text())) for f in files if f.is_file()]


def outputs_by_type(out: Path, types: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for result_file, result in results(out):
        for entry in result["outputs"]:
            names = {entry.get("format"), entry.get("target"), entry.get("type")}
            if result_file.parent != out:
                names.add(result_file.parent.name)
            for t in types:
                if t in names and t not in found:
                    path = result_file.parent / entry["path"]
                    found[t] = {"type": t, "path": str(path), "sha256": entry["sha256"]}
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["--find"]:
        wanted, out = argv[1], Path(argv[2])
        hit = outputs_by_type(out, [wanted]).get(wanted)
        print(Path(hit["path"]).relative_to(out) if hit else "")
        return 0
    out, types = Path(argv[0]), argv[1:]
    all_results = results(out)
    if not all_results:
        print(f"::error::imgbuild wrote no result.json in {out}", file=sys.stderr)
        return 1
    found = outputs_by_type(out, types)
    missing = [t for t in types if t not in found]
    if missing:
        print(f"::error::imgbuild built no output of type {', '.join(missing)}", file=sys.stderr)
        return 1
    result_file, result = all_results[0]
    lines = {
        "output-directory": str(out),
        "output-paths": json.dumps([{"type": t, "path": found[t]["path"]} for t in types]),
        "manifest-path": str(result_file.parent / result["manifest"]),
        "result-path": str(result_file),
        "source-digest": result["source"]["digest"],
    }
    for t in dict.fromkeys([*KNOWN_TYPES, *types]):
        lines[f"{t}-output-path"] = found[t]["path"] if t in found else ""
        lines[f"{t}-output-checksum"] = found[t]["sha256"] if t in found else ""
    ami_log = out / "ami.jsonl"
    ami = re.search(r"\bami-[0-9a-f]{8,17}\b", ami_log.read_text()) if ami_log.is_file() else None
    lines["ami-id"] = ami.group(0) if ami else ""
    for name, value in lines.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
