"""ISO media: the hybrid BIOS/UEFI medium writer (medium.py), its metadata from the blueprint and the image
(metadata.py), and what a live ISO needs from the image's initramfs (initramfs.py)."""
