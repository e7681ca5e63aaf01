"""Without imgbuild.selftest=1 the example OS boots normally: no self-test line, a login prompt on the serial
console (systemd's getty generator follows console=), and root cannot log in without a password."""

from __future__ import annotations

import re

from builder.example import SELFTEST_MARKER, ExampleImage
from tests.imagebuilds import ImageBuilds, imgbuild


def test_normal_boot_reaches_serial_login(example_x86_64: ExampleImage, images: ImageBuilds) -> None:
    built = images.get("qcow2", example_x86_64.reference)
    # agetty prints /etc/issue ("Debian GNU/Linux 12 <host> ttyS0") on its own line, then the prompt
    # without a newline: wait for the line.
    issue = "Debian GNU/Linux 12 debian-ostree ttyS0"
    result = imgbuild(["boot", built.image, "--firmware", "bios", "--timeout", "600", "--marker", issue])
    console = re.sub(r"\x1b\[[0-9;]*m", "", result.out)  # systemd colours its status lines
    assert "Serial Getty on ttyS0" in console
    assert SELFTEST_MARKER not in console
    assert "[FAILED]" not in console, console[-4000:]
