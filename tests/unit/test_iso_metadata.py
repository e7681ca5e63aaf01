"""ISO ids: the blueprint's [customizations.iso] (schema-checked, as Image Builder spells it) or defaults
naming the OS from its os-release."""

from __future__ import annotations

import pytest

from builder.arch import Arch
from builder.blueprint.loader import parse_blueprint
from builder.blueprint.model import IsoCustomization
from builder.errors import BlueprintError
from builder.iso import metadata

DEBIAN = {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}


def test_defaults_name_the_os_version_kind_and_arch() -> None:
    meta = metadata.resolve(None, DEBIAN, Arch.X86_64, "live")
    assert meta.volume_id == "debian-12-live-x86_64"
    assert meta.application_id == "Debian GNU/Linux 12 (bookworm) live ISO"
    assert meta.publisher == "imgbuild"
    assert meta.menu_title == "Debian GNU/Linux 12 (bookworm) (live)"
    assert (
        metadata.resolve(None, DEBIAN, Arch.AARCH64, "installer").volume_id == "debian-12-installer-aarch64"
    )


def test_default_volume_id_fits_32_characters_and_the_label_alphabet() -> None:
    long = {"ID": "fedora coreos!", "VERSION_ID": "41.20241027.3.0"}
    volid = metadata.default_volume_id(long, Arch.AARCH64, "installer")
    assert len(volid) <= 32
    assert volid == "fedora_coreos-41_20241027_3_0-in"
    assert metadata.default_volume_id({}, Arch.X86_64, "live") == "linux-live-x86_64"


def test_blueprint_values_win() -> None:
    custom = IsoCustomization(volume_id="MYOS", application_id="My OS", publisher="Me")
    meta = metadata.resolve(custom, DEBIAN, Arch.X86_64, "live")
    assert (meta.volume_id, meta.application_id, meta.publisher) == ("MYOS", "My OS", "Me")
    partial = metadata.resolve(IsoCustomization(publisher="Me"), DEBIAN, Arch.X86_64, "live")
    assert partial.volume_id == "debian-12-live-x86_64" and partial.publisher == "Me"


def test_blueprint_iso_section_is_parsed_and_round_trips() -> None:
    bp = parse_blueprint(
        'name = "x"\n[customizations.iso]\nvolume_id = "MYOS-1"\npublisher = "Example Inc."\n', "toml"
    )
    assert bp.iso == IsoCustomization(volume_id="MYOS-1", publisher="Example Inc.")
    assert bp.to_dict()["customizations"]["iso"] == {"volume_id": "MYOS-1", "publisher": "Example Inc."}


@pytest.mark.parametrize(
    "line",
    ['volume_id = "has space"', f'volume_id = "{"A" * 33}"', f'publisher = "{"p" * 129}"', "label = 1"],
)
def test_bad_iso_section_is_refused(line: str) -> None:
    with pytest.raises(BlueprintError, match=r"customizations\.iso"):
        parse_blueprint(f'name = "x"\n[customizations.iso]\n{line}\n', "toml")
