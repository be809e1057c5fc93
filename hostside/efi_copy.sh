# kvm-drivers: put the removable-media fallback on the ESP (EFI/BOOT/BOOT<ARCH>.EFI and what it
# loads). Prepended with lib.sh and lock.sh.
# Usage: sh -c "$(cat lib.sh lock.sh efi_copy.sh)" kvm-efi-copy ESP RUN SRC TGT [SRC TGT]...
# SRC is EFI/<dir>/<file>, TGT EFI/BOOT/<file> (any case), both relative to ESP, plain names only.
# The ESP is FAT, which has no links: a link anywhere (in the ESP's own path, a source, a target
# or a directory of them) is refused, so nothing is read or written outside it. Every pair is
# checked before anything is copied; the first target must still be missing (or already hold its
# source). Each target is copied under a temporary name beside it, compared with its source,
# flushed, then renamed over it (FAT has no owner or mode to keep). RUN: each target is kept for
# rollback (lock.sh kvm_keep: one this run created is removed again, one it replaced comes back),
# and any failure here rolls back everything RUN changed. Under the host's lock.
trap '' PIPE
esp=$1; run=$2
tmp=""; locked=0
fail() {
    [ -z "$tmp" ] || rm -f "$tmp"
    [ "$locked" = 1 ] && kvm_rollback "$run"
    echo "kvm-drivers: $*" >&2
    exit 1
}
trap '[ -z "$tmp" ] || rm -f "$tmp"' EXIT
trap 'fail "interrupted"' HUP INT TERM
case "$run" in *[!a-z0-9]*) fail "bad run id" ;; esac
case "$esp" in
    */../*|*/./*|*//*|*/.|*/..|*/) fail "refusing the ESP $esp: not a plain path" ;;
    /?*) ;;
    *) fail "refusing the ESP $esp: not an absolute path" ;;
esac
shift 2
[ $# -ge 2 ] && [ $(($# % 2)) = 0 ] || fail "nothing to copy"
# pair SRC TGT: 0 when both are plain names of the kind wanted
pair() {
    case "$1" in *[!A-Za-z0-9._/+-]*|*/.*|*/*/*/*) return 1 ;; [Ee][Ff][Ii]/?*/?*) ;; *) return 1 ;; esac
    case "$2" in *[!A-Za-z0-9._/+-]*|*/.*|*/*/*/*) return 1 ;; [Ee][Ff][Ii]/[Bb][Oo][Oo][Tt]/?*) ;; *) return 1 ;; esac
}
# real PATH: 0 when PATH has no link in it (its real path is itself)
real() { [ "$(readlink -f "$1" 2>/dev/null)" = "$1" ]; }
kvm_lock || fail "$KVM_LOCK_ERR"
locked=1
kvm_stale "$run"
[ -d "$esp" ] && real "$esp" || fail "$esp is not a directory, or a link is in its path: nothing copied"
first=1; s=""
for a in "$@"; do
    [ -z "$s" ] && { s=$a; continue; }
    t=$a
    pair "$s" "$t" || fail "refusing to copy $s to $t: not EFI/<dir>/<file> to EFI/BOOT/<file>"
    [ -f "$esp/$s" ] && [ ! -L "$esp/$s" ] && real "$esp/$s" || fail "$esp/$s is gone, not a regular file or behind a link"
    if [ -e "$esp/${t%/*}" ] || [ -L "$esp/${t%/*}" ]; then
        [ -d "$esp/${t%/*}" ] && real "$esp/${t%/*}" || fail "$esp/${t%/*} is not a plain directory"
    fi
    if [ -L "$esp/$t" ] || { [ -e "$esp/$t" ] && [ ! -f "$esp/$t" ]; }; then
        fail "$esp/$t is not a regular file: nothing copied"
    fi
    if [ $first = 1 ] && [ -e "$esp/$t" ] && [ "$(cksum < "$esp/$s")" != "$(cksum < "$esp/$t")" ]; then
        fail "$esp/$t appeared since the state was gathered: nothing copied, run again"
    fi
    first=0; s=""
done
while [ $# -ge 2 ]; do
    s="$esp/$1"; t="$esp/$2"; shift 2
    if [ -f "$t" ] && [ "$(cksum < "$s")" = "$(cksum < "$t")" ]; then
        echo "kvm-drivers: $t already holds $s"
        continue
    fi
    mkdir -p "${t%/*}" && real "${t%/*}" || fail "cannot make the directory ${t%/*}"
    tmp=$(mktemp "$t.kvm-drivers.XXXXXX") || fail "cannot create a file beside $t"
    why=$(cp "$s" "$tmp" 2>&1) || fail "cannot copy $s to the ESP (${why:-cp failed})"
    [ "$(cksum < "$s")" = "$(cksum < "$tmp")" ] || fail "the copy of $s does not match it"
    sync "$tmp" 2>/dev/null || sync
    kvm_keep "$run" "$t" "$tmp" || fail "cannot keep rollback state in $KVM_STATE"
    mv -f "$tmp" "$t" || fail "cannot move the copy of $s into place as $t"
    tmp=""
    echo "kvm-drivers: copied $s to $t"
done
trap - EXIT HUP INT TERM
