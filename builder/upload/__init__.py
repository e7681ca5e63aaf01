"""Uploading built disks to clouds. One entry point per cloud, called by the CLI and (later) the service.

AWS: `upload_disk(disk, settings, progress)` in builder.upload.aws uploads a raw disk as an EBS snapshot (EBS
direct APIs, or S3 multipart + ImportSnapshot) and registers an AMI from it.
"""
