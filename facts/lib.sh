# kvm-drivers shared shell functions, prepended to gather.sh, rebuild.sh and the declaration
# write (POSIX sh).
# Needs $PYLIST: the Python initrd lister (facts/initrd_ls.py), used when native tools fail.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
LC_ALL=C
export PATH LC_ALL

# list_initrd IMAGE: print the image's file list (native lsinitrd/lsinitramfs, else Python).
# Prints "lister python" first when the fallback was used. Fails with the tool's message.
list_initrd() {
    _out=""; _rc=127
    if command -v lsinitrd >/dev/null 2>&1; then
        _out=$(lsinitrd "$1" 2>&1); _rc=$?
    elif command -v lsinitramfs >/dev/null 2>&1; then
        _out=$(lsinitramfs "$1" 2>&1); _rc=$?
    fi
    # No native lister, it failed, or it saw no module (old lsinitrd shows only early microcode).
    if [ $_rc -ne 0 ] || ! printf '%s\n' "$_out" | grep -q '\.ko'; then
        if [ -n "$PYLIST" ] && _py=$(command -v python3 || command -v python); then
            _out=$("$_py" -c "$PYLIST" "$1" 2>&1) || { _rc=$?; printf '%s\n' "$_out"; return $_rc; }
            echo "lister python"
        elif [ $_rc -eq 127 ]; then
            echo "no initrd lister found (lsinitrd, lsinitramfs, python3)"
            return 127
        elif [ $_rc -ne 0 ]; then
            printf '%s\n' "$_out"
            return $_rc
        fi
    fi
    printf '%s\n' "$_out"
}

# initrd_modules IMAGE: module names (normalised) in the image, one per line.
initrd_modules() {
    list_initrd "$1" | awk '$NF ~ /\.ko(\.(gz|xz|zst|bz2|lz4))?$/ {
        n = $NF; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); print n }' | sort -u
}

# kvm_lock: one kvm-drivers change at a time on this host. Holds fd 9 on the lock file until
# the shell exits; waits up to KVM_DRIVERS_LOCK_WAIT seconds (no flock: no lock). On failure
# returns 1 with the reason in $KVM_LOCK_ERR.
kvm_lock() {
    _lockdir=/var/lock
    [ -d "$_lockdir" ] || _lockdir=/tmp
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$_lockdir/kvm-drivers.lock"
    flock -w "${KVM_DRIVERS_LOCK_WAIT:-600}" 9 && return 0
    KVM_LOCK_ERR="another kvm-drivers run is still changing this host (lock $_lockdir/kvm-drivers.lock)"
    return 1
}
