"""An image built from a blueprint that uses every customization the example OS can take, inspected with
libguestfs: each one is in place."""

from __future__ import annotations

import re
from pathlib import Path

from builder.example import ExampleImage
from tests.guestfs_inspect import guest, mount_sysroot
from tests.imagebuilds import ImageBuilds

BLUEPRINT = Path(__file__).resolve().parents[1] / "data" / "e2e-blueprint.toml"
MiB = 1 << 20


def test_every_customization_in_place(example_x86_64: ExampleImage, images: ImageBuilds) -> None:
    built = images.get("qcow2", example_x86_64.reference, "--blueprint", str(BLUEPRINT))
    commit = built.result["commit"]
    with guest(built.image) as g:
        parts = {g.part_get_name("/dev/sda", p["part_num"]): p["part_size"] for p in g.part_list("/dev/sda")}
        assert parts["var-log"] == 512 * MiB and parts["root"] >= 4 << 30
        mount_sysroot(g)
        dep = f"/ostree/deploy/default/deploy/{commit}.0"
        var = "/ostree/deploy/default/var"
        etc = f"{dep}/etc"
        passwd = g.cat(f"{etc}/passwd")
        assert re.search(r"^alice:x:1500:\d+:Alice Example:/var/home/alice:", passwd, re.M), passwd
        assert re.search(r"^bob:x:\d+:", passwd, re.M)
        shadow = g.cat(f"{etc}/shadow")
        assert "alice:$6$imgbuildsalt1234$lji6zc5BgpQHn4v" in shadow
        bob_hash = re.search(r"^bob:([^:]*):", shadow, re.M)
        assert bob_hash and bob_hash.group(1).startswith("$6$") and "imgbuild" not in bob_hash.group(1)
        assert re.search(r"^developers:x:2000:.*alice", g.cat(f"{etc}/group"), re.M)
        keys = f"{var}/home/alice/.ssh/authorized_keys"
        assert "alice@example.invalid" in g.cat(keys)
        stat = g.statns(keys)
        assert (stat["st_mode"] & 0o777, stat["st_uid"]) == (0o600, 1500)
        assert "root@example.invalid" in g.cat(f"{var}/roothome/.ssh/authorized_keys")
        assert g.cat(f"{etc}/hostname").strip() == "imgbuild-demo"
        assert g.readlink(f"{etc}/localtime").endswith("zoneinfo/Europe/Berlin")
        assert "LANG=en_US.UTF-8" in g.cat(f"{etc}/locale.conf")
        assert "KEYMAP=us" in g.cat(f"{etc}/vconsole.conf")
        assert g.readlink(f"{etc}/systemd/system/console-getty.service") == "/dev/null"
        wants = g.find(f"{etc}/systemd/system")
        assert any(w.endswith("wants/systemd-networkd.service") for w in wants), wants
        motd = g.statns(f"{etc}/imgbuild/motd")
        assert (motd["st_mode"] & 0o777, motd["st_uid"], motd["st_gid"]) == (0o640, 1500, 2000)
        assert g.cat(f"{etc}/imgbuild/motd") == "Built by imgbuild from a blueprint.\n"
        hello = g.statns(f"{var}/usrlocal/bin/hello")
        assert hello["st_mode"] & 0o777 == 0o755
        assert any(u.endswith("var-log.mount") for u in wants)
        entries = [e for e in g.ls("/boot/loader/entries") if e.endswith(".conf")]
        options = next(
            line
            for line in g.cat(f"/boot/loader/entries/{entries[0]}").splitlines()
            if line.startswith("options")
        )
        assert "imgbuild.selftest=1" in options and "systemd.show_status=1" in options
