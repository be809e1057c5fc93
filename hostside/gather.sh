# kvm-drivers: gather everything the facts need in ONE remote command.
# POSIX sh (old hosts: SLES 11, CentOS 6). Read-only: writes nothing.
# Usage: set -- PY_LISTER KNOWN SEEN NAMES CAP DRIVER...; then this script (after lib.sh), in the shell
# pyinfra starts (sh -c): no second shell is started for it.
# KNOWN: space-separated "path|size|mtime|ctime" keys of initrds whose listing the caller
# has cached: those are not listed again (listing means decompressing the whole image); and bare
# paths the caller's copy depends on (what the bootloader files name): part of the fingerprint.
# SEEN: the fingerprint of the caller's cached output (see below), or "".
# NAMES: the distributions' initrd names, "{v}" standing for the kernel version
# (facts/state.py FALLBACK_INITRDS): looked up for each kernel besides what the bootloaders name.
# CAP: bytes of output at most (facts/kvm_drivers.py OUTPUT_CAP): a longer answer is cut (and refused).
# Output: sections, each opened by a line "@@KVM <kind> [args]": the format is specified in
# facts/wire.py, next to its parser (parse_snapshot).
[ $# -ge 5 ] || { echo "kvm-drivers gather: called with $# arguments, 5 or more expected" >&2; exit 2; }
PYLIST=$1
KNOWN=" $2 "
SEEN=$3
NAMES=$4
CAP=$5
shift 5
W="$*"

sec() { echo "@@KVM $*"; }
# Only printable ASCII travels outside file contents (pyinfra decodes output as UTF-8, and
# host data is untrusted): anything else becomes '?'.
ascii() { tr -c '\t\n -~' '?'; }
# boot_path P: sets r to the file a path from a bootloader configuration is on this system ('' when none):
# P itself, or under /boot (a separate /boot partition), or, for btrfs, without its leading
# subvolume (GRUB names /@/boot/x, the subvolume mounted as /, for /boot/x; /@boot/x for /boot/x).
boot_path() {
    if [ -f "$1" ]; then r=$1; elif [ -f "/boot$1" ]; then r=/boot$1; else r=""; fi
    case "$r$1" in /@*/*) q=/${1#/@*/}; if [ -f "$q" ]; then r=$q; elif [ -f "/boot$q" ]; then r=/boot$q; fi ;; esac
}
# A file name that is not plain ASCII cannot be reported or read safely: say so (the host is
# then an error, never "compliant") and skip the file.
# (The first 20 are named: this output is not under the cap below.) plain_name P: P is plain ASCII.
plain_name() { case "$1" in *[!A-Za-z0-9._@+,:=~/-]*) return 1 ;; esac; }
odds=0
odd() {
    plain_name "$1" && return 1
    odds=$((odds + 1)); [ $odds -gt 20 ] || sec oddname "$(printf '%s' "$1" | ascii)"
}

# Each program started costs about a millisecond here: the script starts as few as it can.
# Live values, sent on every run.
sec meta
if [ -r /proc/sys/kernel/osrelease ]; then read -r u < /proc/sys/kernel/osrelease; else u=$(uname -r); fi
echo "uname $u"
# Free space in /boot (KiB available, as df -Pk gives it) and the mount options of the file system
# holding it (the longest mount point above it), and the effective uid (as id -u gives it): one
# program (stat -f), the rest in shell built-ins; df and id only where those cannot be had.
s=$(stat -f -L -c '%a %S' /boot 2>/dev/null)
f=""
case "$s" in
    *[!0-9\ ]*|*\ *\ *) ;;  # anything but "AVAILABLE BLOCKSIZE": df below
    [0-9]*\ [0-9]*) f=$(( ${s% *} * ${s#* } / 1024 )) ;;
esac
[ -n "$f" ] || f=$(df -Pk /boot 2>/dev/null | { read -r _h; read -r _d _t _u f _r; echo "$f"; })
echo "bootfree $f"
o=""; l=0
if [ -r /proc/mounts ]; then
    while read -r _d m _t opts _r; do
        case "$m" in /|/boot) ;; *) case /boot in "$m"/*) ;; *) continue ;; esac ;; esac
        [ ${#m} -ge $l ] && { l=${#m}; o=$opts; }
    done < /proc/mounts
fi
echo "bootmount $o"
uid=""
if [ -r /proc/self/status ]; then
    while read -r k _r e _s; do [ "$k" = Uid: ] && { uid=$e; break; }; done < /proc/self/status
fi
[ -n "$uid" ] || uid=$(id -u)
echo "uid $uid"

# The files the facts parse (shell built-ins only: no program started).
dumps=""
for f in /etc/os-release /usr/lib/os-release /etc/SuSE-release /etc/redhat-release \
    /etc/centos-release /etc/euleros-release /etc/openEuler-release /etc/system-release /etc/lsb-release \
    /etc/debian_version /etc/initramfs-tools/modules /etc/initramfs-tools/initramfs.conf \
    /etc/dracut.conf /etc/sysconfig/kernel /etc/sysconfig/bootloader /etc/default/grub \
    /boot/grub/grub.cfg /boot/grub2/grub.cfg /boot/grub/grubenv /boot/grub2/grubenv \
    /boot/grub/custom.cfg /boot/grub2/custom.cfg /boot/extlinux/extlinux.conf /boot/extlinux.conf \
    /boot/syslinux/syslinux.cfg /boot/loader/loader.conf /boot/efi/loader/loader.conf /efi/loader/loader.conf \
    /boot/grub/menu.lst /boot/grub/grub.conf /boot/grub/default \
    /etc/dracut.conf.d/*.conf /usr/lib/dracut/dracut.conf.d/*.conf \
    /boot/loader/entries/*.conf /boot/efi/EFI/*/grub.cfg; do
    { [ -f "$f" ] || [ -L "$f" ]; } || continue
    odd "$f" || dumps="$dumps $f"
done
# Module configuration files in effect: modprobe.d files (a same-named file in /etc, or /run,
# overrides a vendor one; kmod reads *.conf only, module-init-tools (CentOS 6, SLES 11) any name but
# its backups: config_filter.c), /etc/modprobe.conf (module-init-tools) and SUSE's
# /etc/modprobe.conf.local (SUSE's documentation: read with modprobe.conf; its mkinitrd copies both).
mp=""
for f in /etc/modprobe.d/* /run/modprobe.d/* /usr/local/lib/modprobe.d/* /usr/lib/modprobe.d/* /lib/modprobe.d/*; do
    [ -f "$f" ] || continue
    b=${f##*/}
    case "$b" in
        ~*|CVS*|*.rpmsave|*.rpmorig|*.rpmnew|*.dpkg-old|*.dpkg-dist|*.dpkg-new|*.dpkg-bak|*.bak|*.orig|*.rej|*.YaST2save|*.-|*~|*,v)
            continue ;;
    esac
    odd "$f" && continue
    case "$f" in
        /run/*) [ -f "/etc/modprobe.d/$b" ] && continue ;;
        /usr/local/*) [ -f "/etc/modprobe.d/$b" ] || [ -f "/run/modprobe.d/$b" ] && continue ;;
        /usr/lib/*) [ -f "/etc/modprobe.d/$b" ] || [ -f "/run/modprobe.d/$b" ] || [ -f "/usr/local/lib/modprobe.d/$b" ] &&
            continue ;;
        /lib/*) [ -f "/etc/modprobe.d/$b" ] || [ -f "/run/modprobe.d/$b" ] || [ -f "/usr/local/lib/modprobe.d/$b" ] &&
            continue
            [ -L /lib ] && [ -f "/usr/lib/modprobe.d/$b" ] && continue ;;  # merged /usr: the same file
    esac
    mp="$mp $f"
done
for f in /etc/modprobe.conf /etc/modprobe.conf.local; do
    [ -f "$f" ] && mp="$mp $f"
done
# The tools, looked up in $PATH as command -v does, in shell built-ins ("tool NAME" alone: not installed).
tools=""
for t in dracut lsinitrd mkinitramfs update-initramfs lsinitramfs mkinitrd sdbootutil grubby python3 python; do
    p=""; _ifs=$IFS; IFS=:; set -f
    for d in $PATH; do [ -n "$d" ] && [ -f "$d/$t" ] && [ -x "$d/$t" ] && { p=$d/$t; break; }; done
    IFS=$_ifs; set +f
    tools="$tools${tools:+
}tool $t${p:+ $p}"
done
# Big files, known by size, inode, mtime and ctime (ctime cannot be set from user space:
# any write, rename or chmod changes it): modules.dep/builtin, kernels, configs, initrds (the
# files in /boot: not its directories, /boot/efi's FAT root has no times at all). The kernel
# directories are there too (one without any of those files is still a kernel).
# A name that is not plain ASCII cannot travel in the fingerprint: no fingerprint then.
big=""
plain=1
for f in /lib/modules/*/modules.dep /lib/modules/*/modules.builtin /lib/modules/*/vmlinuz /boot/* /lib/modules/*; do
    case "$f" in /boot/*) [ -f "$f" ] || continue ;; *) [ -f "$f" ] || [ -d "$f" ] || continue ;; esac
    if plain_name "$f"; then big="$big $f"; else plain=0; fi
done
# Cached initrds and the paths the bootloader files named last time (KNOWN: through a symbolic
# link, stat -L shows the target, so a link pointed elsewhere shows) are stat'ed too; a path
# already there is not added twice, so the first warm run gets the cold run's fingerprint.
set -f
for k in $KNOWN; do
    k=${k%%|*}
    plain_name "$k" || continue
    case "$big " in *" $k "*) ;; *) big="$big $k" ;; esac
done
set +f
# Small files by stat as well, but for those whose times say nothing: grubenv and legacy GRUB's
# default (GRUB itself rewrites them at boot, past the kernel: same size, inode and times) go
# in by content, read here (no program); files on the EFI partition (FAT: times to 2 s) by cksum.
small=""; efi=""; envs=""
for f in $dumps; do
    case "$f" in
        /boot/grub/grubenv|/boot/grub2/grubenv|/boot/grub/default) envs="$envs $f" ;;
        /boot/efi/*) efi="$efi $f" ;;
        *) small="$small $f" ;;
    esac
done
# text F: F's lines but comments (grubenv's padding), with %, space and comma escaped, appended
# to envfp; a line with other than printable ASCII: no fingerprint.
envfp=""
text() {
    while IFS= read -r _l || [ -n "$_l" ]; do
        case "$_l" in "#"*|"") continue ;; *[!\ -~]*) plain=0; return ;; esac
        _e=""
        while :; do
            _p="${_l%%[% ,]*}"
            [ "$_p" = "$_l" ] && { _e="$_e$_l"; break; }
            _x="${_l#"$_p"}"; _c="${_x%"${_x#?}"}"; _l="${_x#?}"
            case "$_c" in %) _e="$_e$_p%25" ;; " ") _e="$_e$_p%20" ;; *) _e="$_e$_p%2C" ;; esac
        done
        envfp="$envfp $1:$_e"
    done < "$1" 2>/dev/null || plain=0
}
for f in $envs; do text "$f"; done

# Fingerprint of everything the rest of the output is made of: the wanted drivers, the initrd
# names, the tools found, and each file read by name, size, inode, mtime and ctime, in ONE
# program (stat): the text itself, its words joined by commas (every name in it is plain ASCII);
# then the GRUB environment's text and the EFI files' checksums. When it equals SEEN, the caller's
# copy of that output is still true: say so, stop. A ctime without nanoseconds (ext3, vfat,
# BusyBox's stat) could hide a change made within the second of the last look, and a
# fingerprint over 32 KiB would not fit the command that sends it back: no fingerprint then,
# the whole state is gathered every time.
fp=""
stats=""
sums=""
set -f
[ -n "$big" ] && [ $plain = 1 ] && stats=$(stat -L -c '%n|%s|%i|%Y|%z' $big $small $mp 2>/dev/null)
[ -n "$efi" ] && [ -n "$stats" ] && sums=$(cksum $efi 2>&1)
_ifs=$IFS; IFS='
'
for _l in $stats; do
    case "$_l" in *.000000000\ *) plain=0 ;; *:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]\ *) ;; *) plain=0 ;; esac
done
IFS=$_ifs
if [ -n "$stats" ] && [ $plain = 1 ]; then
    for w in $W / $NAMES / $tools / $stats / $sums / $envfp; do fp="$fp${fp:+,}$w"; done
    [ ${#fp} -le 32768 ] || fp=""
fi
set +f
if [ -n "$fp" ] && [ "$fp" = "$SEEN" ]; then
    sec unchanged "$fp"
    sec end
    exit 0
fi
sec fingerprint "$fp"
# The rest is cut at CAP bytes whatever the host holds (the answer is then refused, having no "end").
{
sec meta
echo "drivers $W"
printf '%s\n' "$tools"
# The host's own answer for the default kernel, where it has one (RHEL family): compared with ours.
case "$tools" in *"tool grubby /"*) echo "grubby $(grubby --default-kernel 2>&1 | head -n 1 | ascii)" ;; esac

# The files, dumped by ONE awk (a program per file would cost more than all the rest):
# "@@KVM file PATH", the content byte for byte, then an extra newline that ends a last line
# that has none (the parser removes exactly it). Only UTF-8 text travels (pyinfra decodes
# output as UTF-8): a file iconv rejects is sent as "@@KVM unreadable PATH".
bad=" "
if command -v iconv >/dev/null 2>&1 && ! iconv -f UTF-8 -t UTF-8 $dumps >/dev/null 2>&1; then
    for f in $dumps; do  # rare: find which ones
        iconv -f UTF-8 -t UTF-8 "$f" >/dev/null 2>&1 || bad="$bad$f "
    done
fi
[ -n "$dumps" ] && awk -v bad="$bad" 'BEGIN {
    RS = "\001"  # whole files as one record (rejoined on the odd \001)
    for (i = 1; i < ARGC; i++) {
        f = ARGV[i]
        if (index(bad, " " f " ")) { print "@@KVM unreadable " f; continue }
        c = ""; n = 0
        while ((r = (getline line < f)) > 0) c = (n++ ? c "\001" : "") line
        close(f)
        if (r < 0) { print "@@KVM unreadable " f; continue }
        printf "@@KVM file %s\n%s\n", f, c
    }
}' $dumps

kernels=""
cl=""
for d in /lib/modules/*; do
    [ -d "$d" ] || continue
    odd "$d" && continue
    k=${d##*/}
    kernels="$kernels $k"
    sec kernel "$k"
    for img in /boot/vmlinuz-"$k" /boot/vmlinux-"$k" /boot/Image-"$k" /boot/image-"$k" "$d"/vmlinuz; do
        [ -f "$img" ] && echo "image $img"
    done
    files=""
    [ -f "$d/modules.builtin" ] && files="$d/modules.builtin" && echo "has builtin"
    [ -f "$d/modules.dep" ] && files="$files $d/modules.dep" && echo "has dep"
    closure=0; [ -n "$files" ] && closure=1
    [ -f "/boot/config-$k" ] && files="$files /boot/config-$k" && echo "has config"
    # The kernel config's virtio lines, and for each wanted driver: built in, absent, or a module
    # and its dependency closure (itself first, then breadth first), from modules.builtin and
    # modules.dep. This is the only place the closure is computed: the control side reads it.
    # The closures' modules go in cl: their blacklists stop the drivers too (kmod runs the install
    # commands of the whole list it loads).
    kout=""
    [ -n "$files" ] && kout=$(awk -v want="$W" -v closure=$closure "$KVM_NORM"'
        FILENAME ~ /\/config-[^\/]*$/ {
            if ($0 ~ /^(# )?CONFIG_([A-Z_]*VIRTIO[A-Z_]*|ATA_PIIX|ATA_GENERIC|NET_FAILOVER|FAILOVER)[= ]/) print
            next
        }
        FILENAME ~ /modules\.builtin$/ { builtin[norm($1)] = 1; next }
        {   # deps stay raw: only the lines of the closure get normalised (half the CPU)
            i = index($0, ":"); if (!i) next
            p = substr($0, 1, i - 1); n = norm(p); path[n] = p; rest[n] = substr($0, i + 1)
        }
        END {
            if (!closure) exit
            w = split(want, drv, " ")
            for (i = 1; i <= w; i++) {
                n = drv[i]
                if (n in builtin) { print "builtin " n; continue }
                if (!(n in path)) { print "absent " n; continue }
                split("", seen); t = 1; q[1] = n; h = 1; c = ""
                while (h <= t) {
                    x = q[h++]; if ((x in seen) || !(x in path)) continue
                    seen[x] = 1; c = c (c == "" ? "" : ",") x
                    if (!(x in shown)) { shown[x] = 1; print "module " x " " path[x] }
                    k = split(rest[x], dd, " ")
                    for (j = 1; j <= k; j++) q[++t] = norm(dd[j])
                }
                print "closure " n " " c
            }
        }' $files)
    [ -z "$kout" ] && continue
    printf '%s\n' "$kout"
    _ifs=$IFS; IFS='
'; set -f
    for l in $kout; do
        case "$l" in
            "closure "*) IFS=,; for m in ${l#closure * }; do case " $W$cl " in *" $m "*) ;; *) cl="$cl $m" ;; esac; done; IFS='
' ;;
        esac
    done
    IFS=$_ifs; set +f
done

# Module configuration lines that may stop a looked-up driver or a module of its closure, each
# logical line (continuations joined) once for each module it names (facts/blacklist.py judges;
# the initrds carry copies of these files).
sec blacklist
[ -n "$mp" ] && awk -v want="$W$cl" "$KVM_NORM$KVM_CONF"' BEGIN { n = split(want, x, " "); for (i = 1; i <= n; i++) kvm_w[x[i]] = 1 }
    { kvm_phys(FILENAME, FNR, $0) } END { kvm_flush() }' $mp | ascii

# Initrd images: those the bootloaders name, plus each kernel's conventional names.
bl=""
for f in /boot/grub/grub.cfg /boot/grub2/grub.cfg /boot/grub/custom.cfg /boot/grub2/custom.cfg /boot/grub/menu.lst \
    /boot/grub/grub.conf /boot/loader/entries/*.conf; do
    [ -f "$f" ] && bl="$bl $f"
done
refs=""
[ -n "$bl" ] && refs=$(awk '$1 ~ /^(initrd|initrd16|initrdefi)$/ {
    for (i = 2; i <= NF; i++) { p = $i; sub(/^\([^)]*\)/, "", p); print p } }' $bl | ascii)
cands=""
for k in $kernels; do
    for n in $NAMES; do cands="$cands ${n%%\{v\}*}$k${n#*\{v\}}"; done
done
listed=" "
set -f  # the paths come from configuration files: never expand them as patterns
for p in $refs $cands; do
    boot_path "$p"
    case "$r" in "") ;; */./*|*/../*|*//*) r=$(readlink -f "$r") ;; *) [ -L "$r" ] && r=$(readlink -f "$r") ;; esac
    sec ref "$p" "$r"
    [ -n "$r" ] || continue
    case "$listed" in *" $r "*) continue ;; esac
    case "$r" in *kdump*|*rescue*|*ucode*|*microcode*) continue ;; esac
    listed="$listed$r "
    case "$r" in /boot/*) ;; *) continue ;; esac  # never read a file outside /boot as an initrd
    st=$(stat -c '%s|%Y|%Z' "$r" 2>/dev/null)
    sec initrd "$r" "${st%%|*}"
    key="$r|$st"
    echo "key $key"
    echo "magic $(od -An -tx1 -N6 "$r" 2>/dev/null | tr -d ' \n')"
    case "$KNOWN" in *" $key "*) echo "cached"; continue ;; esac
    if out=$(list_initrd "$r"); then
        lst=$(printf '%s\n' "$out" | awk "$KVM_NORM"'
            $1 == "lister" { print; next }
            ko($NF) { print "m " norm($NF) }
            $NF ~ /^\/?(usr\/)?lib\/modules\/[^\/]+\/?$/ { n = $NF; sub(/\/$/, "", n); sub(/.*\//, "", n); print "kver " n }
            $NF ~ /(^|\/)modprobe\.d\/[^\/]+\.conf$/ { print "modprobe " $NF }' | sort -u | ascii)
        printf '%s\n' "$lst"
        # What the image's own module configuration and command-line files say about the modules
        # it holds and the looked-up ones ("conf", "cmdline" lines), then "confread N" or
        # "conferror WHY": its content, so the listing's cache key covers it too.
        cf=$(printf '%s\n' "$out" | awk "$KVM_CONF_FILES")
        fl=""; _ifs=$IFS; IFS='
'
        for l in $cf; do case "$l" in "x "*) fl="$fl ${l#x }" ;; esac; done
        IFS=$_ifs
        { printf '%s\n' "$lst" "$cf"; printf 'm %s\n' $W $cl; initrd_conf "$r" $fl; } |
            awk -v kvm_pre="conf " "$KVM_NORM$KVM_CONF$KVM_CONF_STREAM" | ascii
    else
        sec listfail "$?"
        printf '%s\n' "$out" | tail -n 5 | ascii
    fi
done
set +f
# Kernel images that bootloader entries name without a version (SLES 11 KIWI images boot
# /boot/linux.vmx): tie each to its kernel through the image itself, never by its name. The
# version string from the x86 boot protocol header ("HdrS" at 0x202; kernel_version at 0x20E,
# a pointer to the string at that value + 0x200), and the versioned images that are the same file.
kimgs=""
[ -n "$bl" ] && kimgs=$(awk '$1 ~ /^(linux|linux16|linuxefi|kernel)$/ && $2 !~ /^[$-]/ {
    p = $2; sub(/^\([^)]*\)/, "", p); b = p; sub(/.*\//, "", b)
    if (b !~ /^(vmlinuz|vmlinux|bzImage|Image|image|kernel)-./) print p }' $bl | sort -u)
for p in $kimgs; do
    case "$p" in *[*?[]*) continue ;; esac  # a pattern, not a file name
    odd "$p" && continue
    boot_path "$p"
    sec kimage "$p" "$r"
    [ -n "$r" ] || continue
    if [ "$(dd if="$r" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ]; then
        set -- $(od -An -tu1 -j 526 -N 2 "$r")
        [ $# -eq 2 ] && dd if="$r" bs=1 skip=$(($1 + 256 * $2 + 512)) count=200 2>/dev/null |
            tr '\000' '\n' | sed -n '1s/^\([A-Za-z0-9._+~-]*\).*/version \1/p'
    fi
    for f in /boot/vmlinuz-* /boot/vmlinux-* /boot/Image-* /boot/image-*; do
        plain_name "$f" || continue  # reported as oddname above
        [ -f "$f" ] && [ "$f" -ef "$r" ] && echo "same $f"
    done
done
sec end
} | head -c "$CAP"
