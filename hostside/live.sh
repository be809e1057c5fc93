# kvm-drivers: the live sections of gather.sh, sent on every run, even when the rest is unchanged:
# the running system (meta) and its disks, firmware and ESP (disks). Sent with gather.sh.
# gather_meta: the live values, sent on every run: running kernel, free space in /boot (KiB
# available, as df -Pk gives it) and the mount options of the file system holding it (the longest
# mount point above it), the effective uid (as id -u gives it): one program (stat -f), the rest in
# shell built-ins; df and id only where those cannot be had. Under a root: the root's /boot only.
gather_meta() {
    sec meta
    _me_u=""
    if [ -n "$KVM_R" ]; then :
    elif [ -r /proc/sys/kernel/osrelease ]; then read -r _me_u < /proc/sys/kernel/osrelease
    else _me_u=$(uname -r); fi
    echo "uname $_me_u"
    kvm_path /boot
    _me_s=$(stat -f -L -c '%a %S' "$kp" 2>/dev/null)
    _me_f=""
    case "$_me_s" in
        *[!0-9\ ]*|*\ *\ *) ;;  # anything but "AVAILABLE BLOCKSIZE": df below
        [0-9]*\ [0-9]*) _me_f=$(( ${_me_s% *} * ${_me_s#* } / 1024 )) ;;
    esac
    [ -n "$_me_f" ] || _me_f=$(df -Pk "$kp" 2>/dev/null | { read -r _h; read -r _d _t _u _me_a _r; echo "$_me_a"; })
    echo "bootfree $_me_f"
    _me_o=""; _me_l=0
    if [ -z "$KVM_R" ] && [ -r /proc/mounts ]; then
        while read -r _d _me_m _t _me_opts _r; do
            case "$_me_m" in /|/boot) ;; *) case /boot in "$_me_m"/*) ;; *) continue ;; esac ;; esac
            [ ${#_me_m} -ge $_me_l ] && { _me_l=${#_me_m}; _me_o=$_me_opts; }
        done < /proc/mounts
    fi
    echo "bootmount $_me_o"
    _me_uid=""
    if [ -n "$KVM_R" ]; then :
    elif [ -r /proc/self/status ]; then
        while read -r _me_k _r _me_e _s; do [ "$_me_k" = Uid: ] && { _me_uid=$_me_e; break; }; done < /proc/self/status
    fi
    [ -n "$_me_uid" ] || [ -n "$KVM_R" ] || _me_uid=$(id -u)
    echo "uid $_me_uid"
    [ -z "$KVM_R" ] || echo "image yes"
}

# gather_disks: live, every run (issue 20): the block devices mounted now ("mount POINT DEVICE"),
# the swaps, each device's UUID as blkid reports it ("uuid DEVICE UUID": what a device name becomes),
# whether the system booted by UEFI ("efi yes|no"), the files on the ESP ("esp PATH", relative to
# /boot/efi: is the removable-media fallback there) and whether udev writes persistent-net rules for
# new NICs ("netgen yes|no"). Under a root: no mounts, swaps, UUIDs nor firmware (not this machine's).
gather_disks() {
    sec disks
    if [ -z "$KVM_R" ]; then
        if [ -r /proc/mounts ]; then
            while read -r _di_d _di_m _di_r; do
                case "$_di_d" in /dev/*) plain_name "$_di_d$_di_m" && echo "mount $_di_m $_di_d" ;; esac
            done < /proc/mounts
        fi
        if [ -r /proc/swaps ]; then
            while read -r _di_d _di_r; do
                case "$_di_d" in /dev/*) plain_name "$_di_d" && echo "swap $_di_d" ;; esac
            done < /proc/swaps
        fi
        command -v blkid >/dev/null 2>&1 &&
            blkid -s UUID 2>/dev/null | sed -n 's|^\(/dev/[A-Za-z0-9._/:+-]*\): UUID="\([0-9A-Fa-f-]*\)".*|uuid \1 \2|p'
        if [ -d /sys/firmware/efi ]; then echo "efi yes"; else echo "efi no"; fi
    fi
    kvm_glob "/boot/efi/EFI/*"
    _di_e=$kq
    eval "set -- $_di_e"
    for _di_d do
        plain_name "$_di_d" || continue
        kvm_glob "$_di_d/*"
        eval "set -- $kq"
        for _di_f do kvm_file "$_di_f" && plain_name "$_di_f" && echo "esp ${_di_f#/boot/efi/}"; done
    done
    _di_g=no
    for _di_f in $KVM_NETGEN; do kvm_file "$_di_f" && _di_g=yes; done
    echo "netgen $_di_g"
}
