"""Start-up migration of stored state: plain-text passwords from before they were hashed at push time.

Every stored blueprint (history, workspace copies, composes) and every compose's blueprint.toml gets its
plain-text user passwords replaced by SHA-512 crypt hashes; the database file is then rewritten (store.
rewrite_blueprints), so no free page keeps the old text.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from builder.service.bpcodec import encode_toml, hash_passwords
from builder.service.compose_request import builder_blueprint
from builder.service.queue import BLUEPRINT_NAME, compose_dir
from builder.service.store import BlueprintDoc, Store


def _hashed(doc: BlueprintDoc) -> BlueprintDoc | None:
    new, changed = hash_passwords(doc)
    return new if changed else None


def migrate_passwords(store: Store, state_dir: Path) -> int:
    """Hash what is stored in plain text; returns how many database rows and files were rewritten."""
    count = store.rewrite_blueprints(_hashed)
    for compose in store.composes():
        path = compose_dir(state_dir, compose.id) / BLUEPRINT_NAME
        try:
            on_disk = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # no file (a deleted compose's leftovers) or not ours to fix
        if hash_passwords(on_disk)[1]:
            partial = path.with_name(path.name + ".partial")
            partial.write_text(encode_toml(builder_blueprint(compose.blueprint)), encoding="utf-8")
            partial.replace(path)
            count += 1
    return count
