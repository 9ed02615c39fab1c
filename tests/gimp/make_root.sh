#!/bin/bash
# make_root.sh [DIR] -- create a Debian 13 (trixie) chroot containing GIMP 3.0
# (gimp-console-3.0 + Python 3 plug-in support) at DIR (default /var/cache/gimp-trixie).
#
# Idempotent: if DIR/usr/bin/gimp-console-3.0 already exists it does nothing.
# If a previous run was interrupted after debootstrap finished, it just
# re-runs the apt-get install step inside the existing root.
#
# Why a chroot: the host is Debian 12 (bookworm), which ships GIMP 2.10 only.
# On a Debian 13 (trixie) host none of this is needed:
#     apt-get install -y --no-install-recommends gimp python3-gi
# gives /usr/bin/gimp-console-3.0 directly.
#
# WITH_GUI=1 additionally installs xvfb xauth x11-apps(xwd) xdotool, for running the
# full GIMP UI under xvfb-run (screenshots of plug-in dialogs); also works on an
# existing root.
#
# Note: listing gimp in `debootstrap --include=` fails (dependency-order
# problems in debootstrap's resolver), so gimp is installed with apt-get
# inside the chroot after the minbase bootstrap.
set -euo pipefail

DIR="${1:-/var/cache/gimp-trixie}"
# Same mirror the host's apt already uses (/etc/apt/sources.list.d/debian.sources)
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

GUI_PKGS=""
if [ "${WITH_GUI:-0}" = 1 ]; then GUI_PKGS="xvfb xauth x11-apps xdotool"; fi

if [ -x "$DIR/usr/bin/gimp-console-3.0" ] && { [ -z "$GUI_PKGS" ] || [ -x "$DIR/usr/bin/xvfb-run" ]; }; then
    echo "make_root: $DIR already has gimp-console-3.0${GUI_PKGS:+ and xvfb-run}, nothing to do"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "make_root: must run as root" >&2; exit 1
fi

start=$(date +%s)

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi

if [ ! -x "$DIR/usr/bin/apt-get" ]; then
    # leftovers from an interrupted debootstrap confuse it; start clean
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        echo "make_root: removing incomplete root $DIR"
        # make sure nothing is still mounted inside before deleting
        for m in $(awk -v d="$DIR" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r); do umount -l "$m" || true; done
        rm -rf --one-file-system "$DIR"
    fi
    mkdir -p "$DIR"
    # debootstrap in bookworm knows "trixie" (symlink to the sid script)
    debootstrap --variant=minbase trixie "$DIR" "$MIRROR"
fi
t_boot=$(date +%s)

# host resolver for apt inside the chroot
cp -L /etc/resolv.conf "$DIR/etc/resolv.conf" 2>/dev/null || true

# no daemons may start inside the chroot
printf '#!/bin/sh\nexit 101\n' > "$DIR/usr/sbin/policy-rc.d"
chmod +x "$DIR/usr/sbin/policy-rc.d"

mounted_proc=0
if ! mountpoint -q "$DIR/proc"; then mount -t proc proc "$DIR/proc"; mounted_proc=1; fi
cleanup() { if [ "$mounted_proc" = 1 ]; then umount "$DIR/proc" || umount -l "$DIR/proc" || true; fi; }
trap cleanup EXIT

chroot "$DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    sh -c "apt-get update && apt-get install -y --no-install-recommends gimp python3-gi $GUI_PKGS && apt-get clean"

end=$(date +%s)
echo "make_root: debootstrap $((t_boot-start))s, apt install $((end-t_boot))s, total $((end-start))s"
chroot "$DIR" /usr/bin/gimp-console-3.0 --version || true
