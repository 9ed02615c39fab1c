#!/bin/bash
# gimp_batch.sh -- run GIMP 3.0 headless (gimp-console-3.0) with python-fu-eval
# batch commands inside the trixie chroot made by make_root.sh.
#
# Usage:
#   gimp_batch.sh [options] [--] CODE [CODE ...]
#     CODE        one python-fu-eval batch command (Python source). "@FILE" means
#                 "exec the Python file FILE" (FILE must be visible in the
#                 chroot: under /tmp or a --bind/--plugins dir).
#   options:
#     --root DIR      chroot (default $GIMP_ROOT or /var/cache/gimp-trixie)
#     --plugins DIR   folder holding plug-in sub-folders (DIR/NAME/NAME.py);
#                     bind-mounted at the same path and appended to plug-in-path.
#                     Repeatable. Default: <this script's dir>/plug-ins
#     --bind DIR      extra host dir bind-mounted at the same path. Repeatable.
#     --keep          keep the throw-away GIMP3_DIRECTORY (printed on stderr)
#     --no-quit       do not append the quit batch command
#     --gui           run gimp-3.0 (full UI) under xvfb-run instead of
#                     gimp-console-3.0 (needs xvfb+xauth in the chroot)
#     --gimp-arg ARG  extra gimp command-line argument, repeatable
#                     (e.g. --gimp-arg -d --gimp-arg -f: no data/fonts, ~1.5 s faster)
#     --pluginrc FILE cache of GIMP's pluginrc (plug-in query results): copied
#                     in before and back after the run; saves startup time.
#
# Env passed to the chroot is clean: env -i PATH=/usr/bin:/bin HOME=$tmp
# GIMP3_DIRECTORY=$tmp/gimp3 (+ LANG=C.UTF-8). GIMP runs python plug-ins via
# "/usr/bin/env python3", so PATH must resolve to the chroot's python3.
# Exit status: gimp's exit status (non-zero if a batch command failed).
#
# The mounts are made inside a private mount namespace (unshare -m), so they
# are invisible to the rest of the host and vanish even if this script is
# killed; they are also unmounted explicitly at the end.
set -euo pipefail

SELF="$(readlink -f "$0")"
HERE="$(dirname "$SELF")"

if [ -z "${_GIMP_BATCH_NS:-}" ] && command -v unshare >/dev/null 2>&1 \
   && unshare --mount --propagation private true 2>/dev/null; then
    _GIMP_BATCH_NS=1 exec unshare --mount --propagation private "$SELF" "$@"
fi

ROOT="${GIMP_ROOT:-/var/cache/gimp-trixie}"
PLUGIN_DIRS=()
BINDS=()
KEEP=0
QUIT=1
GUI=0
PLUGINRC=""
GIMP_ARGS=()
CODES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2;;
        --plugins) PLUGIN_DIRS+=("$(readlink -f "$2")"); shift 2;;
        --bind) BINDS+=("$(readlink -f "$2")"); shift 2;;
        --keep) KEEP=1; shift;;
        --no-quit) QUIT=0; shift;;
        --gui) GUI=1; shift;;
        --gimp-arg) GIMP_ARGS+=("$2"); shift 2;;
        --pluginrc) PLUGINRC="$(readlink -f "$2")"; shift 2;;
        --) shift; CODES+=("$@"); break;;
        *) CODES+=("$1"); shift;;
    esac
done
[ ${#PLUGIN_DIRS[@]} -eq 0 ] && PLUGIN_DIRS=("$HERE/plug-ins")
ROOT="$(readlink -f "$ROOT")"

if [ ! -x "$ROOT/usr/bin/gimp-console-3.0" ]; then
    echo "gimp_batch: no GIMP 3 in $ROOT; run make_root.sh first" >&2; exit 2
fi

TMP="$(mktemp -d /tmp/gimp-batch.XXXXXX)"
GDIR="$TMP/gimp3"
mkdir -p "$GDIR"

MOUNTED=()
do_mount() {  # do_mount TARGET mount-args...
    local tgt="$1"; shift
    mkdir -p "$tgt"
    mount "$@" "$tgt"
    MOUNTED+=("$tgt")
}
cleanup() {
    local i
    for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    if [ -n "$PLUGINRC" ] && [ -s "$GDIR/pluginrc" ]; then cp "$GDIR/pluginrc" "$PLUGINRC" || true; fi
    if [ "$KEEP" = 1 ]; then echo "gimp_batch: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

do_mount "$ROOT/proc"    -t proc proc
do_mount "$ROOT/dev"     --bind /dev
do_mount "$ROOT/dev/shm" --bind /dev/shm     # POSIX shm for core<->plug-in tiles
do_mount "$ROOT/tmp"     --bind /tmp         # same /tmp inside and outside
for d in "${PLUGIN_DIRS[@]}" "${BINDS[@]}"; do
    case "$d" in /tmp|/tmp/*) continue;; esac
    do_mount "$ROOT$d" --bind "$d"
done

# gimprc: keep the defaults (python-eval itself lives in ${gimp_plug_in_dir}/plug-ins!)
PPATH='${gimp_dir}/plug-ins:${gimp_plug_in_dir}/plug-ins'
for d in "${PLUGIN_DIRS[@]}"; do PPATH="$PPATH:$d"; done
cat > "$GDIR/gimprc" <<EOF
(plug-in-path "$PPATH")
(num-processors 1)
(tile-cache-size 512M)
(show-welcome-dialog no)
(check-updates no)
EOF
if [ -n "$PLUGINRC" ] && [ -s "$PLUGINRC" ]; then cp "$PLUGINRC" "$GDIR/pluginrc"; fi

if [ "$GUI" = 1 ]; then ARGS=(); else ARGS=(-i); fi   # -i = no interface
ARGS+=("${GIMP_ARGS[@]}" --batch-interpreter=python-fu-eval)
for c in "${CODES[@]}"; do
    if [ "${c:0:1}" = "@" ]; then
        f="$(readlink -f "${c:1}")"
        c="exec(compile(open('$f').read(), '$f', 'exec'))"
    fi
    ARGS+=(-b "$c")
done
# --quit makes GIMP exit after the batch commands (the 2.10 idiom
# -b '(gimp-quit 0)' needs the script-fu interpreter).
[ "$QUIT" = 1 ] && ARGS+=(--quit)

ENVV=(env -i PATH=/usr/bin:/bin HOME="$TMP" GIMP3_DIRECTORY="$GDIR" LANG=C.UTF-8
      TMPDIR="$TMP")
if [ "$GUI" = 1 ]; then
    CMD=(chroot "$ROOT" "${ENVV[@]}" xvfb-run -a -s "-screen 0 1280x1024x24" gimp-3.0 "${ARGS[@]}")
else
    CMD=(chroot "$ROOT" "${ENVV[@]}" gimp-console-3.0 "${ARGS[@]}")
fi
# run in the background so that TERM/INT/HUP can be forwarded to GIMP
"${CMD[@]}" &
CHILD=$!
trap 'kill -TERM $CHILD 2>/dev/null' TERM INT HUP
set +e
wait $CHILD; rc=$?
# wait returns early (>128) when a trapped signal arrives: reap the child
while kill -0 $CHILD 2>/dev/null; do wait $CHILD; rc=$?; done
set -e
exit $rc
