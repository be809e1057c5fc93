# kvm-drivers: rebuild ONE initrd safely, then prove it. Prepended with facts/lib.sh.
# Usage: sh -c "$(cat lib.sh rebuild.sh)" kvm-rebuild PY_LISTER GENERATOR IMAGE KVER CONFIG LAST FORCE MODULE...
# The new image is built beside the old one under a temporary name, listed, checked for
# every required module, and only then renamed over the old one (atomic on one file
# system). The original image is kept once as IMAGE.kvm-drivers.bak. On any failure the
# old image stays in place untouched, the declaration CONFIG written by this run is rolled
# back (from CONFIG.kvm-drivers.prev) and the exit status is non-zero. LAST=1 on the last
# rebuild of the run: on success it drops the rollback copy.
# One run at a time per host: a lock (flock) waits up to KVM_DRIVERS_LOCK_WAIT seconds.
PYLIST=$1
gen=$2
img=$3
kver=$4
config=$5
last=$6
force=$7  # 1: rebuild even if the image holds every module (e.g. a blacklist was removed)
shift 7
required="$*"
tmp="$img.kvm-drivers.new"
bak="$img.kvm-drivers.bak"
log=$(mktemp 2>/dev/null || echo "/tmp/kvm-drivers.$$.log")

rollback() {
    [ -n "$config" ] || return 0
    if [ -f "$config.kvm-drivers.prev" ]; then
        mv -f "$config.kvm-drivers.prev" "$config" && echo "kvm-drivers: restored $config" >&2
    elif [ -f "$config.kvm-drivers.absent" ]; then
        rm -f "$config" "$config.kvm-drivers.absent" && echo "kvm-drivers: removed $config again" >&2
    fi
}
fail() {
    echo "kvm-drivers: $*" >&2
    rm -f "$tmp" "$log"
    rollback
    exit 1
}
trap 'rm -f "$tmp" "$log"; rollback; exit 1' HUP INT TERM

# One kvm-drivers change at a time on this host; released on every exit path.
kvm_lock || fail "$KVM_LOCK_ERR"
# A run that held the lock may have done the work already: then there is nothing to do.
if [ "$force" != 1 ] && [ -f "$img" ] && have=$(initrd_modules "$img") && [ -n "$have" ]; then
    lacking=""
    for m in $required; do
        printf '%s\n' "$have" | grep -qx "$m" || lacking="$lacking $m"
    done
    if [ -z "$lacking" ]; then
        echo "kvm-drivers: $img already holds the drivers (rebuilt by another run); nothing to do"
        [ "$last" = 1 ] && rm -f "$config.kvm-drivers.prev" "$config.kvm-drivers.absent"
        exit 0
    fi
fi

dir=$(dirname "$img")
[ -d "$dir" ] || fail "$dir does not exist"
# Room for the new image and the backup: twice the current image plus 8 MiB.
cur=0
[ -f "$img" ] && cur=$(($(wc -c < "$img") / 1024))
need=$((cur * 2 + 8192))
[ -f "$bak" ] && need=$((cur + 8192))
free=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
[ -n "$free" ] && [ "$free" -lt "$need" ] &&
    fail "not enough free space in $dir for kernel $kver: need $need KiB, $free KiB free"

case $gen in
    dracut) dracut -f "$tmp" "$kver" >"$log" 2>&1 ;;
    initramfs-tools) mkinitramfs -o "$tmp" "$kver" >"$log" 2>&1 ;;
    suse-mkinitrd) mkinitrd -k "/boot/vmlinuz-$kver" -i "$tmp" >"$log" 2>&1 ;;
    *) fail "unknown initrd generator '$gen'" ;;
esac
rc=$?
if [ $rc -ne 0 ] || [ ! -s "$tmp" ]; then
    fail "$gen failed for kernel $kver (exit $rc), $img left unchanged: $(tail -n 15 "$log")"
fi

# Prove the new image: readable, and every required module is in it.
if ! have=$(initrd_modules "$tmp") || [ -z "$have" ]; then
    fail "rebuilt initrd for kernel $kver is unreadable, $img left unchanged"
fi
missing=""
for m in $required; do
    printf '%s\n' "$have" | grep -qx "$m" || missing="$missing $m"
done
[ -n "$missing" ] &&
    fail "rebuilt initrd for kernel $kver still lacks:$missing ($img left unchanged)"

if [ -f "$img" ] && [ ! -f "$bak" ]; then
    cp -p "$img" "$bak" || fail "cannot back up $img"
fi
chmod --reference="$img" "$tmp" 2>/dev/null || chmod 600 "$tmp"
mv -f "$tmp" "$img" || fail "cannot move the new initrd into place as $img"
sync
rm -f "$log"
[ "$last" = 1 ] && [ -n "$config" ] && rm -f "$config.kvm-drivers.prev" "$config.kvm-drivers.absent"
msg="rebuilt $img for kernel $kver; it holds: $required"
echo "$(date '+%Y-%m-%dT%H:%M:%S%z') $msg" >> /var/log/kvm-drivers.log 2>/dev/null
echo "kvm-drivers: $msg"
