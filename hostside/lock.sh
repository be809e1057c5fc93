# kvm-drivers: the shell functions of the changes (write.sh, unblacklist.sh, rebuild.sh): the lock,
# the root-only state directory, rollback, and swapping a file in. Prepended after lib.sh; the
# read-only gather.sh does not carry them.
# kvm_lock: one kvm-drivers change at a time on this host. The lock, the logs and the rollback
# state live in $KVM_STATE, a directory only root can use (/run/kvm-drivers; /var/lib/kvm-drivers
# without /run): made with mkdir (which never follows a link) and refused when it is a link,
# not owned by root or open to others. Nothing goes to world-writable places such as /var/lock
# or /tmp, where another user could plant a link or hold the lock. Holds fd 9 on the lock until
# the shell exits; waits up to KVM_DRIVERS_LOCK_WAIT seconds (no flock: no lock). On failure
# returns 1 with the reason in $KVM_LOCK_ERR.
kvm_lock() {
    KVM_STATE=/var/lib/kvm-drivers
    [ -d /run ] && [ ! -L /run ] && KVM_STATE=/run/kvm-drivers
    mkdir -m 700 "$KVM_STATE" 2>/dev/null
    if [ -L "$KVM_STATE" ] || [ ! -d "$KVM_STATE" ] || [ "$(stat -c '%u %a' "$KVM_STATE" 2>/dev/null)" != "0 700" ]; then
        KVM_LOCK_ERR="$KVM_STATE is not a directory that only root can use (mode 700): refusing to change this host"
        return 1
    fi
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>>"$KVM_STATE/lock"
    flock -w "${KVM_DRIVERS_LOCK_WAIT:-600}" 9 && return 0
    KVM_LOCK_ERR="another kvm-drivers run is still changing this host (lock $KVM_STATE/lock)"
    return 1
}

# kvm_stale RUN: with the lock held, forget the rollback state of every other run (an
# interrupted run's copy must never be restored over later edits), and remove the rollback
# copies older kvm-drivers versions kept beside the declarations (KVM_DECLARATIONS: hostside CONFIG_PATHS).
kvm_stale() {
    for _r in "$KVM_STATE"/rollback.*; do
        if [ -d "$_r" ] && [ "$_r" != "$KVM_STATE/rollback.$1" ]; then rm -rf "$_r"; fi
    done
    for _c in $KVM_DECLARATIONS; do
        rm -f "$_c.kvm-drivers.prev" "$_c.kvm-drivers.absent"
    done
    return 0
}

# kvm_keep RUN FILE NEW: before the temporary file NEW replaces FILE, keep in
# $KVM_STATE/rollback.RUN what undoing it takes (kvm_rollback): one entry per file, made
# of a copy of FILE ("prev"; none when FILE does not exist yet: undoing removes it), FILE's path,
# then the checksum of NEW ("written", last: an entry without it is never acted on). A file
# changed twice in one run keeps its first copy (the state before the run). RUN "": nothing kept.
# NEW "": FILE is about to be removed (moved aside): "written" says "absent", and undoing puts
# the copy back while nothing is at FILE.
kvm_keep() {
    [ -n "$1" ] || return 0
    _k="$KVM_STATE/rollback.$1"
    [ -d "$_k" ] || mkdir -m 700 "$_k" || return 1
    _e=""
    for _x in "$_k"/*/path; do
        [ -f "$_x" ] && [ "$(cat "$_x")" = "$2" ] && _e=${_x%/path}
    done
    if [ -z "$_e" ]; then
        _e=$(mktemp -d "$_k/f.XXXXXX") || return 1
        if [ -f "$2" ] && ! cp -p "$2" "$_e/prev"; then rm -rf "$_e"; return 1; fi
        printf '%s' "$2" > "$_e/path" || { rm -rf "$_e"; return 1; }
    fi
    if [ -n "$3" ]; then cksum < "$3" > "$_e/written"; else echo absent > "$_e/written"; fi || { rm -rf "$_e"; return 1; }
}

# kvm_rollback RUN: undo every change RUN kept (kvm_keep: declarations, modprobe.d edits and
# overrides, boot-path fixes), each only while its file still holds exactly what RUN wrote: a later
# edit is never overwritten. A file RUN created is removed again; a file RUN removed (moved aside)
# comes back while nothing else took its place. Then RUN's rollback state is gone.
kvm_rollback() {
    _r="$KVM_STATE/rollback.$1"
    [ -n "$1" ] && [ -d "$_r" ] || return 0
    for _e in "$_r"/*/; do
        _e=${_e%/}
        [ -f "$_e/path" ] && [ -f "$_e/written" ] || continue
        _f=$(cat "$_e/path")
        _m="cannot restore $_f"
        if [ "$(cat "$_e/written")" = absent ]; then
            if [ -e "$_f" ] || [ -L "$_f" ]; then
                _m="$_f is back since this run removed it: not rolled back"
            elif [ -f "$_e/prev" ]; then
                cp -p "$_e/prev" "$_f.kvm-drivers.$$" && mv -f "$_f.kvm-drivers.$$" "$_f" && _m="restored $_f"
                rm -f "$_f.kvm-drivers.$$"
            fi
        elif [ "$(cksum < "$_f" 2>/dev/null)" != "$(cat "$_e/written")" ]; then
            _m="$_f changed since this run wrote it: not rolled back"
        elif [ -f "$_e/prev" ]; then
            cp -p "$_e/prev" "$_f.kvm-drivers.$$" && mv -f "$_f.kvm-drivers.$$" "$_f" && _m="restored $_f"
            rm -f "$_f.kvm-drivers.$$"
        else
            rm -f "$_f" && _m="removed $_f again"
        fi
        echo "kvm-drivers: $_m" >&2
    done
    rm -rf "$_r"
    return 0
}

# kvm_attrs TMP FILE: give TMP the owner, mode and SELinux label of FILE (0644 when FILE does
# not exist), then flush it to disk. kvm_swap TMP FILE does that and renames TMP over FILE.
kvm_attrs() {
    if [ -e "$2" ]; then
        chown --reference="$2" "$1" && chmod --reference="$2" "$1" || return 1
        if command -v chcon >/dev/null 2>&1; then chcon --reference="$2" "$1" 2>/dev/null || true; fi
    else
        chmod 644 "$1" || return 1
    fi
    sync "$1" 2>/dev/null || sync
}
kvm_swap() {
    kvm_attrs "$1" "$2" && mv -f "$1" "$2"
}
