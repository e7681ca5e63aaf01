"""The OVF 1.0 descriptor of an OVA (DMTF DSP0243), written and read with a real XML parser.

One virtual system with one streamOptimized disk on an LSI Logic SCSI controller (the adapter the vmdk
declares) and one VMXNET3 network card, the hardware VMware and VirtualBox both import. CIM resource
elements (rasd:) follow the schema's alphabetical sequence, which strict importers (ovftool) insist on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from builder.errors import StageFailed

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
OS_OTHER_LINUX_64 = "101"  # CIM_OperatingSystem: "Other Linux (64-bit)"
for _prefix, _uri in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD)):
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True)
class Machine:
    name: str
    disk_file: str  # the vmdk's name inside the OVA
    disk_file_size: int  # bytes of the vmdk file
    capacity: int  # the disk's virtual size in bytes
    cpus: int = 2
    memory_mib: int = 4096


def _o(tag: str) -> str:
    return f"{{{OVF}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {(_o(k) if ":" not in k else k): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _item(section: ET.Element, **fields: str) -> None:
    item = _sub(section, _o("Item"))
    for name in sorted(fields):  # the CIM schema's sequence is alphabetical
        _sub(item, f"{{{RASD}}}{name}", fields[name])


def descriptor(machine: Machine) -> bytes:
    envelope = ET.Element(_o("Envelope"))
    references = _sub(envelope, _o("References"))
    _sub(references, _o("File"), id="file1", href=machine.disk_file, size=str(machine.disk_file_size))
    disks = _sub(envelope, _o("DiskSection"))
    _sub(disks, _o("Info"), "Virtual disk information")
    _sub(
        disks,
        _o("Disk"),
        diskId="vmdisk1",
        fileRef="file1",
        capacity=str(machine.capacity),
        format=VMDK_FORMAT,
    )
    networks = _sub(envelope, _o("NetworkSection"))
    _sub(networks, _o("Info"), "The logical networks")
    network = _sub(networks, _o("Network"), name="nat")
    _sub(network, _o("Description"), "The network of the first card")
    system = _sub(envelope, _o("VirtualSystem"), id=machine.name)
    _sub(system, _o("Info"), "A virtual machine")
    _sub(system, _o("Name"), machine.name)
    os_section = _sub(system, _o("OperatingSystemSection"), id=OS_OTHER_LINUX_64)
    _sub(os_section, _o("Info"), "The kind of installed guest operating system")
    hardware = _sub(system, _o("VirtualHardwareSection"))
    _sub(hardware, _o("Info"), "Virtual hardware requirements")
    vssd = _sub(hardware, _o("System"))
    for name, value in (
        ("ElementName", "Virtual Hardware Family"),
        ("InstanceID", "0"),
        ("VirtualSystemIdentifier", machine.name),
        ("VirtualSystemType", "vmx-13"),
    ):
        _sub(vssd, f"{{{VSSD}}}{name}", value)
    _item(
        hardware,
        AllocationUnits="hertz * 10^6",
        Description="Number of virtual CPUs",
        ElementName=f"{machine.cpus} virtual CPU(s)",
        InstanceID="1",
        ResourceType="3",
        VirtualQuantity=str(machine.cpus),
    )
    _item(
        hardware,
        AllocationUnits="byte * 2^20",
        Description="Memory size",
        ElementName=f"{machine.memory_mib}MB of memory",
        InstanceID="2",
        ResourceType="4",
        VirtualQuantity=str(machine.memory_mib),
    )
    _item(
        hardware,
        Address="0",
        Description="SCSI controller",
        ElementName="SCSI controller 0",
        InstanceID="3",
        ResourceSubType="lsilogic",
        ResourceType="6",
    )
    _item(
        hardware,
        AddressOnParent="0",
        ElementName="Hard disk 1",
        HostResource="ovf:/disk/vmdisk1",
        InstanceID="4",
        Parent="3",
        ResourceType="17",
    )
    _item(
        hardware,
        AddressOnParent="0",
        AutomaticAllocation="true",
        Connection="nat",
        Description="VMXNET3 ethernet adapter",
        ElementName="Network adapter 1",
        InstanceID="5",
        ResourceSubType="VmxNet3",
        ResourceType="10",
    )
    ET.indent(envelope)
    text: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


# What DSP8023 (the OVF 1.x envelope schema) requires of the elements a descriptor like ours carries:
# (path from the envelope, required attributes). Info is required in every section.
REQUIRED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ovf:References", ()),
    ("ovf:References/ovf:File", ("href", "id")),
    ("ovf:DiskSection/ovf:Info", ()),
    ("ovf:DiskSection/ovf:Disk", ("capacity", "diskId", "format")),
    ("ovf:NetworkSection/ovf:Info", ()),
    ("ovf:NetworkSection/ovf:Network", ("name",)),
    ("ovf:VirtualSystem", ("id",)),
    ("ovf:VirtualSystem/ovf:Info", ()),
    ("ovf:VirtualSystem/ovf:OperatingSystemSection", ("id",)),
    ("ovf:VirtualSystem/ovf:OperatingSystemSection/ovf:Info", ()),
    ("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Info", ()),
    ("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", ()),
)
ITEM_REQUIRED = ("ElementName", "InstanceID", "ResourceType")
NAMESPACES = {"ovf": OVF, "rasd": RASD, "vssd": VSSD}


def parse(text: bytes) -> ET.Element:
    """Parse a descriptor (expat) and check the elements and attributes the OVF schema requires."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise StageFailed(f"the OVF descriptor is not well-formed XML: {e}") from e
    if root.tag != _o("Envelope"):
        raise StageFailed(f"the OVF descriptor's root is {root.tag}, not ovf:Envelope")
    for path, attrs in REQUIRED:
        found = root.findall(path, NAMESPACES)
        if not found:
            raise StageFailed(f"the OVF descriptor has no {path}")
        for element in found:
            missing = [a for a in attrs if element.get(_o(a)) is None]
            if missing:
                raise StageFailed(f"the OVF descriptor's {path} lacks ovf:{', ovf:'.join(missing)}")
    for item in root.findall("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", NAMESPACES):
        names = [child.tag.rpartition("}")[2] for child in item]
        if names != sorted(names) or any(f not in names for f in ITEM_REQUIRED):
            raise StageFailed(f"an OVF Item's elements {names} are unordered or lack {ITEM_REQUIRED}")
    return root


def disk_reference(root: ET.Element) -> tuple[str, int, int]:
    """(file name, file size, disk capacity) of the descriptor's disk."""
    file = root.find("ovf:References/ovf:File", NAMESPACES)
    disk = root.find("ovf:DiskSection/ovf:Disk", NAMESPACES)
    assert file is not None and disk is not None, "parse() checked both"
    return file.get(_o("href"), ""), int(file.get(_o("size"), "-1")), int(disk.get(_o("capacity"), "-1"))
