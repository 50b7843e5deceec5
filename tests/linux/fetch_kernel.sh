#!/bin/sh
# Download Debian's cloud kernel package and unpack it into a cache outside the
# repository (the bzImage, and its modules under lib/modules/VERSION);
# prints the path of the bzImage (vmlinuz) it leaves there.
#   tests/linux/fetch_kernel.sh [cache-dir]     (default: ~/.cache/vmm/kernels)
set -eu
cache=${1:-${VMM_KERNEL_CACHE:-$HOME/.cache/vmm/kernels}}
mkdir -p "$cache"
# The newest linux-image-<version>-cloud-amd64 this machine's apt lists know of.
package=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-cloud-amd64$' \
    | awk '{print $1}' | sort -V | tail -n 1)
if [ -z "$package" ]; then
    echo "fetch_kernel: no linux-image-*-cloud-amd64 package known to apt (run apt-get update)" >&2
    exit 1
fi
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$package" >/dev/null)
dpkg-deb -x "$work"/*.deb "$work/root"
# and its modules (virtio_mmio, virtio_blk... for `vmm linux`), beside it
mkdir -p "$cache/lib/modules"
cp -r "$work"/root/lib/modules/* "$cache/lib/modules/"
for image in "$work"/root/boot/vmlinuz-*; do
    cp "$image" "$cache/"
    echo "$cache/$(basename "$image")"
done
