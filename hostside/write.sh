# kvm-drivers: write a declaration file: compare, then swap, under the host's lock. Prepended with lib.sh.
# Usage: sh -c "$(cat lib.sh write.sh)" kvm-write PATH CONTENT HAD OLD RUN
# The file must still hold what the declaration was computed from (HAD=1: the text OLD; HAD=0:
# no file), else nothing is written: an edit made since the state was gathered is never
# overwritten. A symbolic link is written through to its target. The new text goes to a
# temporary file beside it (owner, mode and SELinux label of the old one), is flushed, then
# renamed over it. RUN (a run id, or ""): what was there is kept in the root-only
# $KVM_STATE/rollback.RUN, so that a failed rebuild of the same run can undo the change
# (lock.sh kvm_keep, kvm_rollback). A file that already has the content is left alone.
trap '' PIPE
f=$1; new=$2; had=$3; old=$4; run=$5
case "$run" in *[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
kvm_stale "$run"
if [ -L "$f" ]; then
    t=$(readlink -f "$f") || { echo "kvm-drivers: cannot resolve the link $f" >&2; exit 1; }
    f=$t
fi
if [ -e "$f" ] && [ ! -f "$f" ]; then
    echo "kvm-drivers: $f is not a regular file: refusing to write it" >&2; exit 1
fi
if [ -f "$f" ] && [ "$(cat "$f"; echo x)" = "$(printf '%sx' "$new")" ]; then
    echo "kvm-drivers: $f already has the wanted content (another run wrote it)"
    exit 0
fi
if [ "$had" = 1 ]; then
    if [ ! -f "$f" ] || [ "$(cat "$f"; echo x)" != "$(printf '%sx' "$old")" ]; then
        echo "kvm-drivers: $f changed since its state was gathered: nothing written, run again" >&2; exit 1
    fi
elif [ -e "$f" ]; then
    echo "kvm-drivers: $f was created since the state was gathered: nothing written, run again" >&2; exit 1
fi
d=$(dirname "$f")
mkdir -p "$d" || exit 1
tmp=$(mktemp "$f.kvm-drivers.XXXXXX") || exit 1
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM
printf '%s' "$new" > "$tmp" || exit 1
kvm_attrs "$tmp" "$f" || exit 1
kvm_keep "$run" "$f" "$tmp" || { echo "kvm-drivers: cannot keep rollback state in $KVM_STATE" >&2; exit 1; }
mv -f "$tmp" "$f" || exit 1
trap - EXIT HUP INT TERM
