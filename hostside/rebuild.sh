# kvm-drivers: rebuild ONE initrd safely, then prove it. Prepended with lib.sh.
# Usage: sh -c "$(cat lib.sh rebuild.sh)" kvm-rebuild PY_LISTER GENERATOR IMAGE KVER RUN LAST FORCE MODULE...
# The new image is built beside the old one under a temporary name, listed, checked for
# every required module, flushed to disk, and only then renamed over the old one (atomic on
# one file system). The image it replaces is backed up first as IMAGE.kvm-drivers.bak, unless
# that already holds a verified copy of the last image kvm-drivers did not build itself (see
# "Backup" below); without a complete backup the image is never replaced. On any failure the
# old image stays in place untouched, what run RUN changed (declaration, modprobe.d edits) is
# rolled back (lock.sh kvm_rollback: only while each file holds what RUN wrote) and the exit
# status is non-zero. LAST=1 on the run's last rebuild: on success it drops the rollback state.
# Each rebuild is logged in $KVM_STATE/log (root only; never /var/log, where others may write).
# IMAGE must be a regular file in /boot (or absent): anything else is refused.
# One run at a time per host: the lock (lib.sh kvm_lock) waits up to KVM_DRIVERS_LOCK_WAIT seconds.
trap '' PIPE  # a dropped SSH channel must not kill the script between two steps: it finishes
PYLIST=$1
gen=$2
img=$3
kver=$4
run=$5
last=$6
force=$7  # 1: rebuild even if the image holds every module (e.g. a blacklist was removed)
shift 7
required="$*"
locked=0
tmp=""
log=""
bak=""

cleanup() {
    [ -z "$tmp" ] || rm -f "$tmp"
    [ -z "$log" ] || rm -f "$log"
    [ -z "$bak" ] || rm -f "$bak.part" "$bak.sum.part"
}
rollback() {
    [ "$locked" = 1 ] && kvm_rollback "$run"  # never another run's: only with the lock held
}
fail() {  # clean up first: the message may not reach anyone
    cleanup
    rollback
    echo "kvm-drivers: $*" >&2
    exit 1
}
trap 'cleanup; rollback; exit 1' HUP INT TERM

# Backup. IMAGE.kvm-drivers.bak is the last image kvm-drivers did not build itself, and
# IMAGE.kvm-drivers.bak.sum (written after it, under a temporary name, flushed, then renamed)
# records its checksum and size ("bak CKSUM") and those of the images kvm-drivers put in its
# place ("ours CKSUM"). The backup is trusted only while it matches its "bak" line: a backup
# cut short, or one the sidecar does not vouch for (older kvm-drivers versions wrote none), is
# not. It is kept while trusted and the image is still one kvm-drivers built (an "ours" line)
# or the backed-up one: the image from before kvm-drivers is kept through later rebuilds.
# Otherwise (the image was rebuilt by something else since, e.g. a kernel update's
# update-initramfs, or the backup is not trusted), the image is copied afresh under a
# temporary name, flushed, checked against the image, and renamed over the old backup. If no
# complete backup can be taken (no space left, ...), the image is not replaced.
backup() {
    for _b in "$bak" "$bak.sum"; do  # mv would move into a directory, or write through a link
        [ -L "$_b" ] && rm -f "$_b"
        [ ! -e "$_b" ] || [ -f "$_b" ] || fail "$_b is not a regular file: $img left unchanged"
    done
    now=$(cksum < "$img") || fail "cannot read $img"
    had=""
    if [ -f "$bak" ] && [ -f "$bak.sum" ]; then
        had=$(sed -n 's/^bak //p' "$bak.sum")
        [ -n "$had" ] && [ "$(cksum < "$bak")" = "$had" ] || had=""
    fi
    keep=""
    if [ -n "$had" ] && { [ "$now" = "$had" ] || grep -qxF "ours $now" "$bak.sum"; }; then
        keep="ours $now"
    else
        rm -f "$bak.part"
        why=$( (umask 077 && cp -p "$img" "$bak.part") 2>&1) ||
            fail "cannot back up $img (${why:-cp failed}): $img left unchanged"
        sync "$bak.part" 2>/dev/null || sync
        [ "$(cksum < "$bak.part")" = "$now" ] ||
            fail "the backup of $img does not match it (did it change meanwhile?): $img left unchanged"
        mv -f "$bak.part" "$bak" || fail "cannot rename the backup of $img into place: $img left unchanged"
        had=$now
    fi
    # vouch for the backup, and name the image about to replace this one as ours
    sum="bak $had
${keep:+$keep
}ours $(cksum < "$tmp")"
    why=$( (umask 077 && printf '%s\n' "$sum" > "$bak.sum.part") 2>&1) && [ "$(cat "$bak.sum.part")" = "$sum" ] &&
        { sync "$bak.sum.part" 2>/dev/null || sync; } && mv -f "$bak.sum.part" "$bak.sum" ||
        fail "cannot record the backup of $img (${why:-write failed}): $img left unchanged"
}

case "$run" in *[!a-z0-9]*) fail "bad run id" ;; esac
kvm_lock || fail "$KVM_LOCK_ERR"
locked=1
kvm_stale "$run"
case "$img" in
    */../*|*/./*|*//*|*/.|*/..) fail "refusing to rebuild $img: not a plain path" ;;
    /boot/?*) ;;
    *) fail "refusing to rebuild $img: not in /boot" ;;
esac
[ -L "$img" ] && fail "refusing to replace $img: it is a symbolic link"
# a link among its directories could lead anywhere: the path must be its own real path
[ "$(readlink -f "$(dirname "$img")")" = "$(dirname "$img")" ] || fail "refusing $img: a directory of it is a link"
[ ! -e "$img" ] || [ -f "$img" ] || fail "refusing to replace $img: not a regular file"
tmp="$img.kvm-drivers.new"
bak="$img.kvm-drivers.bak"
# The log of rebuilds, opened once (fd 8) in the root-only state directory: nobody else can
# create anything there, so what is checked here is what gets opened (a link is removed, never
# followed). /var/log is not used: whoever may write there could swap in a link.
rm -f "$KVM_STATE/log.out."*  # the tool output of interrupted runs (the lock is held: none is running)
[ -L "$KVM_STATE/log" ] && rm -f "$KVM_STATE/log"
[ ! -e "$KVM_STATE/log" ] || [ -f "$KVM_STATE/log" ] || fail "$KVM_STATE/log is not a regular file"
command exec 8>>"$KVM_STATE/log" || fail "cannot open the log $KVM_STATE/log"
log=$(mktemp "$KVM_STATE/log.out.XXXXXX") || fail "cannot create a file for the tool's output in $KVM_STATE"
# Left by interrupted runs: temporary images and backups; backups of initrds that no longer exist.
for f in /boot/*.kvm-drivers.new /boot/*.kvm-drivers.bak.part /boot/*.kvm-drivers.bak.sum.part \
    /boot/*.kvm-drivers.bak /boot/*.kvm-drivers.bak.sum; do
    case "$f" in
        *.new|*.part) [ -f "$f" ] && rm -f "$f" ;;
        *.bak) [ -f "$f" ] && [ ! -e "${f%.kvm-drivers.bak}" ] && rm -f "$f" ;;
        *.bak.sum) [ -f "$f" ] && [ ! -e "${f%.kvm-drivers.bak.sum}" ] && rm -f "$f" ;;
    esac
done

# A run that held the lock may have done the work already: then there is nothing to do.
if [ "$force" != 1 ] && [ -f "$img" ] && have=$(initrd_modules "$img") && [ -n "$have" ]; then
    lacking=""
    for m in $required; do
        printf '%s\n' "$have" | grep -qx "$m" || lacking="$lacking $m"
    done
    if [ -z "$lacking" ]; then
        cleanup
        [ "$last" = 1 ] && rm -rf "$KVM_STATE/rollback.$run"
        echo "kvm-drivers: $img already holds the drivers (rebuilt by another run); nothing to do"
        exit 0
    fi
fi

dir=$(dirname "$img")
[ -d "$dir" ] || fail "$dir does not exist"
# Room for the new image and the backup: twice the current image plus 8 MiB.
cur=0
[ -f "$img" ] && cur=$(($(wc -c < "$img") / 1024))
need=$((cur * 2 + 8192))
[ -f "$bak" ] && [ -f "$bak.sum" ] && need=$((cur + 8192))  # a backup that is likely kept
free=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
[ -n "$free" ] && [ "$free" -lt "$need" ] &&
    fail "not enough free space in $dir for kernel $kver: need $need KiB, $free KiB free"

# KVM_IMAGE=1: a disk image's tree (kvm-drivers image fix), not the running system. A host-only
# build would bake in the control machine's devices (dracut-ng #2519), and initramfs-tools'
# MODULES=dep reads the running system's root device: neither is used.
if [ "${KVM_IMAGE:-}" = 1 ] && [ "$gen" = initramfs-tools ] &&
    cat /etc/initramfs-tools/initramfs.conf /etc/initramfs-tools/conf.d/* 2>/dev/null |
    grep -q '^[[:space:]]*MODULES=["'"'"']*dep'; then
    fail "MODULES=dep cannot be built in an image (it reads the running system's root device): set MODULES=most or list, $img left unchanged"
fi
case $gen in
    dracut)
        if [ "${KVM_IMAGE:-}" = 1 ]; then
            dracut --no-hostonly --no-hostonly-cmdline -f "$tmp" "$kver" >"$log" 2>&1
        else
            dracut -f "$tmp" "$kver" >"$log" 2>&1
        fi ;;
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
# ... and that nothing in it stops one loading: no blacklist, install command that does not load
# it or alias elsewhere in its modprobe.d files, modprobe.conf or modprobe.conf.local, and no
# blacklist word in its command-line files (lib.sh KVM_CONF judges as facts/blacklist.py does,
# never more leniently). A rebuild forced by removing a blacklist proves here that it is gone
# from the image; files that cannot be read prove nothing.
lst=$(list_initrd "$tmp") || fail "rebuilt initrd for kernel $kver is unreadable, $img left unchanged"
# ... and, built in an image, that it names no root of the machine that built it (dracut's
# host-only command line, etc/cmdline.d, would carry the control machine's root=).
if [ "${KVM_IMAGE:-}" = 1 ] && printf '%s\n' "$lst" | grep -q 'etc/cmdline\.d/[^/]*\.conf$'; then
    fail "rebuilt initrd for kernel $kver carries a host-only command line (etc/cmdline.d), $img left unchanged"
fi
cf=$(printf '%s\n' "$lst" | awk "$KVM_CONF_FILES")
fl=""; _ifs=$IFS; IFS='
'
for l in $cf; do case "$l" in "x "*) fl="$fl ${l#x }" ;; esac; done
IFS=$_ifs
set -f
verdict=$({ printf 'm %s\n' $required; printf '%s\n' "$cf"; initrd_conf "$tmp" $fl; } |
    awk -v kvm_judge=1 -v kvm_pre="" "$KVM_NORM$KVM_CONF$KVM_CONF_STREAM" | tr -c '\t\n -~' '?')
set +f
case "$verdict" in
    *"conferror "*) fail "cannot read the module configuration inside the rebuilt initrd for kernel $kver" \
        "(${verdict##*conferror }), $img left unchanged" ;;
esac
stops=$(printf '%s\n' "$verdict" | grep -v '^confread ' | head -n 5 | tr '\n' ';')
[ -n "$stops" ] &&
    fail "rebuilt initrd for kernel $kver still stops a required module ($img left unchanged): ${stops%;}"

chmod --reference="$img" "$tmp" 2>/dev/null || chmod 600 "$tmp"
sync "$tmp" 2>/dev/null || sync  # the new image is on disk before it takes the old one's name
[ -f "$img" ] && backup
mv -f "$tmp" "$img" || fail "cannot move the new initrd into place as $img"
tmp=""
sync
# What update-initramfs does after writing an image (flash-kernel, copies to an ESP, ...).
if [ "$gen" = initramfs-tools ] && [ -d /etc/initramfs/post-update.d ]; then
    run-parts --arg="$kver" --arg="$img" /etc/initramfs/post-update.d/ >"$log" 2>&1 ||
        echo "kvm-drivers: warning: /etc/initramfs/post-update.d hooks failed: $(tail -n 5 "$log")" >&2
fi
cleanup
[ "$last" = 1 ] && rm -rf "$KVM_STATE/rollback.$run"
msg="rebuilt $img for kernel $kver; it holds: $required"
echo "$(date '+%Y-%m-%dT%H:%M:%S%z') $msg" >&8
echo "kvm-drivers: $msg"
