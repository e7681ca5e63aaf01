"""Register an AMI from an uploaded snapshot, tag it and its snapshot, share it; find and retire old ones."""

from __future__ import annotations

from typing import Any

from builder.arch import Arch
from builder.upload.diskinfo import DiskInfo
from builder.upload.ebs import volume_gib
from builder.upload.session import Clients, explain
from builder.upload.settings import AwsSettings

ROOT_DEVICE = "/dev/xvda"
EC2_ARCH = {Arch.X86_64: "x86_64", Arch.AARCH64: "arm64"}


def registration(settings: AwsSettings, disk: DiskInfo, snapshot_id: str) -> dict[str, Any]:
    """The RegisterImage request for the disk (a pure function, so tests can compare it exactly)."""
    request: dict[str, Any] = {
        "Name": settings.ami_name,
        "Description": f"{settings.ami_name} (imgbuild)",
        "Architecture": EC2_ARCH[disk.arch],
        "BootMode": disk.boot_mode.value,
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "SriovNetSupport": "simple",
        "RootDeviceName": ROOT_DEVICE,
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE,
                "Ebs": {
                    "SnapshotId": snapshot_id,
                    "VolumeSize": volume_gib(disk.size),
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
    }
    if settings.imds_v2_only:
        request["ImdsSupport"] = "v2.0"
    return request


def register(clients: Clients, settings: AwsSettings, disk: DiskInfo, snapshot_id: str) -> str:
    try:
        return str(clients.ec2.register_image(**registration(settings, disk, snapshot_id))["ImageId"])
    except Exception as e:
        raise explain(e, "ec2:RegisterImage") from e


def tag(clients: Clients, resources: list[str], tags: tuple[tuple[str, str], ...]) -> None:
    if not tags:
        return
    try:
        clients.ec2.create_tags(Resources=resources, Tags=[{"Key": k, "Value": v} for k, v in tags])
    except Exception as e:
        raise explain(e, "ec2:CreateTags") from e


def share(clients: Clients, image_id: str, accounts: tuple[str, ...]) -> None:
    if not accounts:
        return
    try:
        clients.ec2.modify_image_attribute(
            ImageId=image_id, LaunchPermission={"Add": [{"UserId": a} for a in accounts]}
        )
    except Exception as e:
        raise explain(e, "ec2:ModifyImageAttribute") from e


def images_named(clients: Clients, name: str) -> list[dict[str, Any]]:
    """The account's own AMIs with this name (EC2 allows one per account and region)."""
    try:
        images = clients.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    except Exception as e:
        raise explain(e, "ec2:DescribeImages") from e
    return [i for i in images["Images"] if i.get("Name") == name]


def retire(clients: Clients, image: dict[str, Any]) -> None:
    """Deregister an AMI and delete the EBS snapshots it was made from (--aws-replace)."""
    try:
        clients.ec2.deregister_image(ImageId=image["ImageId"])
    except Exception as e:
        raise explain(e, "ec2:DeregisterImage") from e
    for mapping in image.get("BlockDeviceMappings", []):
        snapshot_id = mapping.get("Ebs", {}).get("SnapshotId")
        if snapshot_id:
            try:
                clients.ec2.delete_snapshot(SnapshotId=snapshot_id)
            except Exception as e:
                raise explain(e, f"ec2:DeleteSnapshot of the replaced AMI's {snapshot_id}") from e
