#!/bin/sh
# imgbuild's installer: PID 1 of the installer initramfs (busybox sh). It finds the installer medium by its
# volume label, writes the disk image on it to the chosen disk, verifies what it wrote, moves the backup GPT
# to the end of the disk, grows the root partition and filesystem, then powers off (or reboots).
# Settings: the kernel command line (the medium's boot menu carries the blueprint's choices there):
# imgbuild.install.volid=LABEL, imgbuild.install.device=/dev/..., imgbuild.install.unattended=1,
# imgbuild.install.after=reboot.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /mnt/medium
/bin/busybox mount -t proc proc /proc
# The applets beside the Debian programs (existing files are not replaced); --install needs /proc/self/exe.
/bin/busybox --install -s
# Debian's busybox prefers its own applets to PATH: the Debian programs are called by their full path.
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "imgbuild-installer: $*"; }
finish() {
    sync
    if [ "$AFTER" = reboot ]; then reboot -f; else poweroff -f; fi
    sleep 60
}
# One clear line, nothing (more) written, then off.
fail() {
    say "ERROR: $*"
    AFTER=poweroff
    finish
}

DEVICE=
UNATTENDED=0
AFTER=poweroff
VOLID=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        imgbuild.install.device=*) DEVICE="${arg#*=}" ;;
        imgbuild.install.unattended=*) UNATTENDED="${arg#*=}" ;;
        imgbuild.install.after=*) AFTER="${arg#*=}" ;;
        imgbuild.install.volid=*) VOLID="${arg#*=}" ;;
    esac
done
[ "$UNATTENDED" = true ] && UNATTENDED=1

say "loading drivers"
while read -r module; do
    insmod "/lib/modules/$module" 2>/dev/null
done </lib/modules/load-order

# The medium: a CD (sr*) or a USB stick (the hybrid image's whole disk) carrying the volume label.
MEDIUM=
tries=0
while [ -z "$MEDIUM" ] && [ $tries -lt 60 ]; do
    MEDIUM=$(findfs "LABEL=$VOLID" 2>/dev/null)
    [ -z "$MEDIUM" ] && { sleep 1; tries=$((tries + 1)); }
done
[ -n "$MEDIUM" ] || fail "no installer medium labelled $VOLID found (CD or USB disk)"
mount -t iso9660 -o ro "$MEDIUM" /mnt/medium || fail "cannot mount the installer medium $MEDIUM"
P=/mnt/medium/imgbuild
. $P/install.conf   # IMAGE_SIZE, IMAGE_SHA256, ROOT_PART, ROOT_FS (from the build)
say "medium $MEDIUM: image of $IMAGE_SIZE bytes"
# On a USB stick the label is found on the hybrid image's partition (sda1) as well as the disk: the disk to
# keep out of the list is the one holding it.
MEDIUM_DISK=$(basename "$MEDIUM")
for d in /sys/block/*; do
    [ -e "$d/$MEDIUM_DISK" ] && MEDIUM_DISK=$(basename "$d")
done

disks() {
    for d in /sys/block/*; do
        name=$(basename "$d")
        case "$name" in loop*|ram*|sr*|fd*|zram*|dm-*) continue ;; esac
        [ "$name" = "$MEDIUM_DISK" ] && continue
        [ "$(cat "$d/removable" 2>/dev/null)" = 1 ] && [ "$(cat "$d/size")" = 0 ] && continue
        echo "$name $(($(cat "$d/size") * 512))"
    done
}

if [ "$UNATTENDED" != 1 ]; then
    # Attended: nothing is written without an answer on the console, whatever the settings suggest.
    LIST=$(disks)
    [ -n "$LIST" ] || fail "no disk to install to (only the installer medium was found)"
    say "disks:"
    echo "$LIST" | while read -r name size; do echo "  /dev/$name  $((size / 1048576)) MiB"; done
    [ -n "$DEVICE" ] && say "suggested: $DEVICE"
    while :; do
        printf 'imgbuild-installer: install to which disk (ALL ITS DATA WILL BE LOST)? type its path: \n'
        read -r answer || fail "no answer on the console: nothing written"
        [ -n "$answer" ] && [ -b "$answer" ] && { DEVICE=$answer; break; }
        say "$answer is not a disk"
    done
elif [ -z "$DEVICE" ]; then
    LIST=$(disks)
    [ -n "$LIST" ] || fail "no disk to install to (only the installer medium was found)"
    set -- $LIST
    [ $# -eq 2 ] || fail "an unattended install needs imgbuild.install.device=/dev/... when there are several disks"
    DEVICE=/dev/$1
fi
[ -b "$DEVICE" ] || fail "the install device $DEVICE does not exist: nothing written"
SIZE=$(blockdev --getsize64 "$DEVICE")
[ "$SIZE" -ge "$IMAGE_SIZE" ] || fail "$DEVICE ($SIZE bytes) is smaller than the image ($IMAGE_SIZE bytes): nothing written"

say "writing the image to $DEVICE"
# The image's holes become zeros with one BLKZEROOUT; then only the chunks holding data are written.
/sbin/blkdiscard -z -l "$IMAGE_SIZE" "$DEVICE" || fail "cannot zero $DEVICE"
# dd reads the runs from the decompressed stream (stdin); the index comes on fd 3.
/usr/bin/zstd -dc $P/disk.zst | {
    while read -r start count <&3; do
        dd of="$DEVICE" bs=1M seek="$start" count="$count" iflag=fullblock conv=notrunc status=none || exit 1
    done 3<$P/index
} || fail "writing $DEVICE failed"
sync
echo 3 >/proc/sys/vm/drop_caches
say "verifying"
GOT=$(while read -r start count; do dd if="$DEVICE" bs=1M skip="$start" count="$count" status=none; done <$P/index | sha256sum | cut -d' ' -f1)
[ "$GOT" = "$IMAGE_SHA256" ] || fail "verification failed: $DEVICE holds $GOT, the image is $IMAGE_SHA256"
say "verified sha256 $GOT"

case "$DEVICE" in *[0-9]) PART="${DEVICE}p$ROOT_PART" ;; *) PART="$DEVICE$ROOT_PART" ;; esac
say "moving the backup GPT to the end of $DEVICE and growing partition $ROOT_PART"
/sbin/sfdisk --quiet --relocate gpt-bak-std "$DEVICE" || fail "cannot move the backup GPT"
echo ", +" | /sbin/sfdisk --quiet --no-reread -N "$ROOT_PART" "$DEVICE" || fail "cannot grow partition $ROOT_PART"
blockdev --rereadpt "$DEVICE"
tries=0
while [ ! -b "$PART" ] && [ $tries -lt 10 ]; do sleep 1; tries=$((tries + 1)); done
case "$ROOT_FS" in
    ext4)
        /sbin/e2fsck -f -p "$PART" >/dev/null
        [ $? -le 1 ] || fail "e2fsck $PART failed"
        /sbin/resize2fs "$PART" >/dev/null 2>&1 || fail "resize2fs $PART failed"
        ;;
    xfs)
        mkdir -p /mnt/root
        mount -t xfs "$PART" /mnt/root || fail "cannot mount $PART to grow it"
        /usr/sbin/xfs_growfs /mnt/root >/dev/null || fail "xfs_growfs $PART failed"
        umount /mnt/root
        ;;
    *) say "the root filesystem ($ROOT_FS) grows on its own: only the partition was grown" ;;
esac
sync
say "INSTALL-DONE $DEVICE"
finish
