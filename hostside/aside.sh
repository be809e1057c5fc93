# kvm-drivers: move ONE configuration file aside, as PATH.kvm-drivers-disabled. Prepended with lib.sh and lock.sh.
# Usage: sh -c "$(cat lib.sh lock.sh aside.sh)" kvm-aside PATH OLD RUN
# Only files whose readers skip the new name: udev rules (*.rules), systemd-networkd files
# (*.link, *.network) and netplan files (*.yaml, *.yml). PATH must still hold OLD (the text the
# state was read from), else nothing is moved; a link, or a PATH.kvm-drivers-disabled already
# there, is refused. The rename keeps owner, mode and SELinux label. RUN (a run id, or ""): both
# names are kept for rollback (lock.sh kvm_keep): undoing puts PATH back and removes the
# disabled copy, each only while nothing changed them since. Under the host's lock.
trap '' PIPE
f=$1; old=$2; run=$3
case "$run" in *[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
case "$f" in
    */../*|*/./*|*//*|*/.|*/..) echo "kvm-drivers: refusing $f: not a plain path" >&2; exit 1 ;;
    /?*.rules|/?*.link|/?*.network|/?*.yaml|/?*.yml) ;;
    *) echo "kvm-drivers: refusing to move $f aside: its reader would still read it" >&2; exit 1 ;;
esac
d="$f.kvm-drivers-disabled"
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
kvm_stale "$run"
if [ ! -e "$f" ] && [ ! -L "$f" ] && [ -f "$d" ] && [ "$(cat "$d"; echo x)" = "$(printf '%sx' "$old")" ]; then
    echo "kvm-drivers: $f is already moved aside (another run did it)"
    exit 0
fi
[ -L "$f" ] && { echo "kvm-drivers: $f is a symbolic link: not moved" >&2; exit 1; }
[ -f "$f" ] || { echo "kvm-drivers: $f is gone or not a regular file: nothing moved, run again" >&2; exit 1; }
if [ "$(cat "$f"; echo x)" != "$(printf '%sx' "$old")" ]; then
    echo "kvm-drivers: $f changed since its state was gathered: nothing moved, run again" >&2; exit 1
fi
if [ -e "$d" ] || [ -L "$d" ]; then
    echo "kvm-drivers: $d exists already: $f not moved (remove one of them)" >&2; exit 1
fi
kvm_keep "$run" "$d" "$f" && kvm_keep "$run" "$f" "" ||
    { echo "kvm-drivers: cannot keep rollback state in $KVM_STATE" >&2; exit 1; }
mv -f "$f" "$d" || exit 1
echo "kvm-drivers: moved $f aside as $d"
