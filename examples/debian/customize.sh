#!/bin/sh
# mmdebstrap customize hook of the example OS: the steps that must run inside the new system (dracut,
# systemctl, passwd), while mmdebstrap still has /proc, /sys and /dev mounted in it.
# Usage: customize.sh ROOT RECIPE_DIR
set -eu
root=$1
recipe=$2

# Exactly one kernel; it goes where ostree looks for it: /usr/lib/modules/$kver/vmlinuz.
set -- "$root"/usr/lib/modules/*
[ $# -eq 1 ] && [ -d "$1" ] || { echo "customize.sh: expected one kernel, found: $*" >&2; exit 1; }
kver=${1##*/}
moddir=/usr/lib/modules/$kver
mv "$root/boot/vmlinuz-$kver" "$root$moddir/vmlinuz"
rm -f "$root/boot/System.map-$kver" "$root/boot/config-$kver" "$root/boot/initrd.img-$kver" \
    "$root/initrd.img" "$root/initrd.img.old" "$root/vmlinuz" "$root/vmlinuz.old"
# The no-op that stood in for dracut's kernel hook during the install (see builder/example.py): the
# image's kernel never changes in place, so no hook at all.
rm -f "$root/etc/kernel/postinst.d/dracut"

# Whole driver families no boot of this example needs (graphics, radio, sound, cameras, NICs, HBAs,
# network filesystems): leaves that no kept module depends on, about half of the kernel's 400 MB.
# modules.dep is rebuilt below.
for d in drivers/gpu drivers/media drivers/staging drivers/infiniband drivers/isdn drivers/bluetooth \
    drivers/net/wireless drivers/net/ethernet drivers/net/can drivers/net/wwan drivers/net/ieee802154 \
    drivers/nfc drivers/usb/gadget drivers/usb/serial drivers/scsi/qla2xxx drivers/scsi/lpfc \
    drivers/scsi/mpt3sas drivers/scsi/bfa drivers/scsi/be2iscsi drivers/scsi/qedf drivers/scsi/qedi \
    drivers/scsi/megaraid drivers/scsi/aacraid drivers/scsi/fnic drivers/scsi/csiostor drivers/scsi/smartpqi \
    drivers/atm sound net/bluetooth net/wireless net/mac80211 fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/smb \
    fs/cifs fs/ntfs3 fs/jfs fs/reiserfs fs/nilfs2 fs/ubifs fs/f2fs fs/afs fs/coda fs/orangefs; do
    rm -rf "$root$moddir/kernel/$d"
done
chroot "$root" depmod "$kver"

# A small generic initramfs with dracut's ostree module, written where ostree takes it from.
install -m 0644 "$recipe/dracut.conf" "$root/etc/dracut.conf.d/50-imgbuild-example.conf"
chroot "$root" dracut --force --kver "$kver" "$moddir/initramfs.img"
chmod 0644 "$root$moddir/initramfs.img"

# The boot self-test (a no-op unless the kernel command line has imgbuild.selftest=1).
install -D -m 0755 "$recipe/imgbuild-selftest" "$root/usr/libexec/imgbuild-selftest"
install -D -m 0644 "$recipe/imgbuild-selftest.service" "$root/usr/lib/systemd/system/imgbuild-selftest.service"
chroot "$root" systemctl enable imgbuild-selftest.service

# An image system: no apt timers (nothing is installed in place), and no GPT partition auto-discovery
# (the disk image's fstab mounts /boot and the ESP; the generator's /efi automount fails on an ostree /).
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer
mkdir -p "$root/etc/systemd/system-generators"
ln -sf /dev/null "$root/etc/systemd/system-generators/systemd-gpt-auto-generator"

# No password can log in as root (the login prompt still appears on the serial console).
chroot "$root" passwd --lock root
echo debian-ostree > "$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
