# kvm-drivers: after a run rewrote device names to UUID=, prove each UUID names the device the
# old name named. Prepended with lib.sh and lock.sh.
# Usage: sh -c "$(cat lib.sh lock.sh verify_uuid.sh)" kvm-verify-uuid RUN LAST UUID DEVICE [UUID DEVICE]...
# Each UUID is looked up as the boot will (findfs UUID=..., else blkid -U) and the device found
# is compared with DEVICE, both resolved (readlink -f). On any mismatch, or a UUID nothing has,
# everything RUN changed is rolled back (lock.sh kvm_rollback) and the exit status is 1, with a
# message naming both devices. LAST=1: on success, RUN's rollback state is dropped (the run is
# done). Under the host's lock.
trap '' PIPE
run=$1; last=$2
case "$run" in *[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
shift 2
[ $# -ge 2 ] && [ $(($# % 2)) = 0 ] || { echo "kvm-drivers: nothing to verify" >&2; exit 1; }
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
bad=""; ok=""
while [ $# -ge 2 ]; do
    u=$1; d=$2; shift 2
    case "$u" in ''|*[!0-9A-Fa-f-]*) bad="$bad; '$u' is not a UUID"; continue ;; esac
    case "$d" in /dev/?*) ;; *) bad="$bad; '$d' is not a device"; continue ;; esac
    got=$(findfs "UUID=$u" 2>/dev/null) || got=$(blkid -U "$u" 2>/dev/null) || got=""
    want=$(readlink -f "$d" 2>/dev/null) || want=""
    have=""
    [ -n "$got" ] && have=$(readlink -f "$got" 2>/dev/null)
    if [ -z "$have" ]; then
        bad="$bad; UUID=$u names no device on this host (expected $d)"
    elif [ "$have" != "$want" ] || [ -z "$want" ]; then
        bad="$bad; UUID=$u is $got ($have), not $d (${want:-no such device})"
    else
        ok="$ok UUID=$u=$d"
    fi
done
if [ -n "$bad" ]; then
    kvm_rollback "$run"
    echo "kvm-drivers: ${bad#; }: what run $run changed is rolled back" >&2
    exit 1
fi
[ "$last" = 1 ] && [ -n "$run" ] && rm -rf "$KVM_STATE/rollback.$run"
echo "kvm-drivers: verified:$ok"
