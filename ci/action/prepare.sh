#!/bin/bash
# GitHub Action step 1: give the runner what a hosted Ubuntu runner lacks for imgbuild's container, and free
# disk space when asked. Idempotent; every change is said on stdout.
# Environment: FREE_DISK_SPACE (true/false); IMGBUILD_STORAGE_CONF (default /etc/containers/storage.conf).
set -euo pipefail
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)

if [[ ${FREE_DISK_SPACE:-false} == true ]]; then
    before=$(df -P --block-size=1M / | awk 'NR==2 {print $4}')
    # Preinstalled toolchains a disk-image build does not use (GitHub's Ubuntu images; absent elsewhere).
    for dir in /usr/share/dotnet /usr/local/lib/android /opt/ghc /usr/local/.ghcup /opt/hostedtoolcache/CodeQL \
        /usr/local/share/boost /usr/share/swift /usr/local/julia*; do
        [[ -e $dir ]] && "${sudo[@]}" rm -rf "$dir"
    done
    if command -v docker >/dev/null 2>&1; then
        "${sudo[@]}" docker image prune --all --force >/dev/null 2>&1 || true
    fi
    after=$(df -P --block-size=1M / | awk 'NR==2 {print $4}')
    echo "imgbuild: freed $((after - before)) MiB on / ($after MiB free)"
fi

# Loop devices: the module may not be loaded and the control node may be missing (containers, some VMs).
if [[ ! -e /dev/loop-control ]]; then
    "${sudo[@]}" modprobe loop 2>/dev/null || true
    [[ -e /dev/loop-control ]] || "${sudo[@]}" mknod -m 0660 /dev/loop-control c 10 237
    echo "imgbuild: created /dev/loop-control"
fi

# Rootful podman's storage: hosted runners ship a storage.conf some podman versions reject (no driver or a
# rootless runroot); imgbuild's container reads this storage, so it must be the plain rootful overlay one.
conf=${IMGBUILD_STORAGE_CONF:-/etc/containers/storage.conf}
if [[ ! -s $conf ]] || ! grep -qE '^\s*driver\s*=' "$conf"; then
    "${sudo[@]}" mkdir -p "$(dirname "$conf")"
    printf '[storage]\ndriver = "overlay"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' |
        "${sudo[@]}" tee "$conf" >/dev/null
    echo "imgbuild: wrote $conf (overlay, /var/lib/containers/storage)"
fi
"${sudo[@]}" mkdir -p /var/lib/containers/storage
