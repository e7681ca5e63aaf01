"""imgbuild: bootable disk images from ostree-native and bootc container images."""

__version__ = "0.1.0"
