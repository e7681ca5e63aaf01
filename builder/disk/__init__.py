"""Disk images: GPT partitioning, filesystems and the FAT EFI system partition."""
