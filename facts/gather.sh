# kvm-drivers: gather everything the facts need in ONE remote command.
# POSIX sh (old hosts: SLES 11, CentOS 6). Read-only: writes nothing.
# Usage: sh -c "$(cat lib.sh gather.sh)" kvm-gather PY_LISTER KNOWN DRIVER...
# KNOWN: space-separated "path|size|mtime|ctime" keys of initrds whose listing the caller
# has cached: those are not listed again (listing means decompressing the whole image).
# Output: sections, each opened by a line "@@KVM <kind> [args]".
PYLIST=$1
KNOWN=" $2 "
shift 2
W="$*"

sec() { echo "@@KVM $*"; }

sec meta
echo "uname $(uname -r)"
echo "uid $(id -u)"
for t in dracut lsinitrd mkinitramfs update-initramfs lsinitramfs mkinitrd sdbootutil python3 python; do
    p=$(command -v "$t" 2>/dev/null) && echo "tool $t $p"
done
echo "bootfree $(df -Pk /boot 2>/dev/null | awk 'NR==2 {print $4}')"
# Mount options of the file system holding /boot (the longest mount point above it).
awk '($2 == "/" || $2 == "/boot" || index("/boot", $2 "/") == 1) && length($2) >= l { l = length($2); o = $4 }
    END { print "bootmount " o }' /proc/mounts 2>/dev/null

dump() {
    [ -f "$1" ] || [ -L "$1" ] || return 0
    # Only UTF-8 text travels (pyinfra decodes output as UTF-8); anything else is "unreadable".
    if command -v iconv >/dev/null 2>&1 && ! iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1; then
        sec unreadable "$1"
        return 0
    fi
    sec file "$1"
    # The extra newline ends a last line that has none; the parser removes exactly it.
    { cat "$1" 2>/dev/null && echo; } || sec unreadable "$1"
}
for f in /etc/os-release /usr/lib/os-release /etc/SuSE-release /etc/redhat-release \
    /etc/centos-release /etc/euleros-release /etc/openEuler-release /etc/lsb-release \
    /etc/debian_version /etc/initramfs-tools/modules /etc/initramfs-tools/initramfs.conf \
    /etc/dracut.conf /etc/sysconfig/kernel /etc/sysconfig/bootloader /etc/default/grub \
    /boot/grub/grub.cfg /boot/grub2/grub.cfg /boot/grub/grubenv /boot/grub2/grubenv \
    /boot/grub/menu.lst /boot/grub/grub.conf /boot/grub/default \
    /etc/dracut.conf.d/*.conf /usr/lib/dracut/dracut.conf.d/*.conf \
    /boot/loader/entries/*.conf /boot/efi/EFI/*/grub.cfg; do
    dump "$f"
done

# modprobe.d lines that stop a wanted driver loading (copied into the initrd by both tools).
sec blacklist
for f in /etc/modprobe.d/*.conf /run/modprobe.d/*.conf /usr/lib/modprobe.d/*.conf /lib/modprobe.d/*.conf; do
    [ -f "$f" ] || continue
    case "$f" in /usr/lib/*|/lib/*|/run/*)  # a same-named file in /etc (or /run) overrides it
        b=${f##*/}; [ -f "/etc/modprobe.d/$b" ] && continue
        case "$f" in /run/*) ;; *) [ -f "/run/modprobe.d/$b" ] && continue ;; esac ;;
    esac
    awk -v want=" $W " -v f="$f" '
        $1 == "blacklist" || ($1 == "install" && $3 ~ /^\/(usr\/)?bin\/(false|true)$/) {
            n = $2; gsub(/-/, "_", n); if (index(want, " " n " ")) print f ":" FNR ":" n ":" $0 }' "$f"
done

kernels=""
for d in /lib/modules/*; do
    [ -d "$d" ] || continue
    k=${d##*/}
    kernels="$kernels $k"
    sec kernel "$k"
    for img in /boot/vmlinuz-"$k" /boot/vmlinux-"$k" /boot/Image-"$k" /boot/image-"$k" "$d"/vmlinuz; do
        [ -f "$img" ] && echo "image $img"
    done
    files=""
    [ -f "$d/modules.builtin" ] && files="$d/modules.builtin" && echo "has builtin"
    [ -f "$d/modules.dep" ] && files="$files $d/modules.dep" && echo "has dep"
    if [ -f "/boot/config-$k" ]; then
        grep -E '^(# )?CONFIG_([A-Z_]*VIRTIO[A-Z_]*|ATA_PIIX|ATA_GENERIC|NET_FAILOVER|FAILOVER)[= ]' "/boot/config-$k"
    fi
    # Dependency closure of the wanted drivers, from modules.builtin + modules.dep.
    [ -n "$files" ] && awk -v want="$W" '
        function norm(p, n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); return n }
        FILENAME ~ /modules\.builtin$/ { builtin[norm($1)] = 1; next }
        {
            i = index($0, ":"); if (!i) next
            n = norm(substr($0, 1, i - 1)); path[n] = substr($0, 1, i - 1)
            rest = substr($0, i + 1); d = ""
            m = split(rest, parts, " ")
            for (j = 1; j <= m; j++) d = d (d == "" ? "" : ",") norm(parts[j])
            deps[n] = d
        }
        END {
            m = split(want, q, " "); head = 1
            while (head <= m) {
                n = q[head++]; if (n in seen) continue; seen[n] = 1
                if (n in builtin) { print "builtin " n; continue }
                if (!(n in path)) { print "absent " n; continue }
                print "module " n " " path[n] " " (deps[n] == "" ? "-" : deps[n])
                c = split(deps[n], dd, ",")
                for (j = 1; j <= c; j++) q[++m] = dd[j]
            }
        }' $files
done

# Initrd images: those the bootloaders name, plus each kernel's conventional names.
refs=$(cat /boot/grub/grub.cfg /boot/grub2/grub.cfg /boot/grub/menu.lst /boot/grub/grub.conf \
    /boot/loader/entries/*.conf 2>/dev/null |
    awk '$1 ~ /^(initrd|initrd16|initrdefi)$/ { for (i = 2; i <= NF; i++) print $i }' | sed 's/^([^)]*)//')
cands=""
for k in $kernels; do
    cands="$cands /boot/initrd.img-$k /boot/initramfs-$k.img /boot/initrd-$k /boot/initrd-$k.img"
done
listed=" "
for p in $refs $cands; do
    r=""
    if [ -f "$p" ]; then r=$p; elif [ -f "/boot$p" ]; then r=/boot$p; fi
    [ -n "$r" ] && r=$(readlink -f "$r")
    sec ref "$p" "$r"
    [ -n "$r" ] || continue
    case "$listed" in *" $r "*) continue ;; esac
    case "$r" in *kdump*|*rescue*|*ucode*|*microcode*) continue ;; esac
    listed="$listed$r "
    sec initrd "$r" "$(wc -c < "$r" 2>/dev/null)"
    key="$r|$(stat -c '%s|%Y|%Z' "$r" 2>/dev/null)"
    echo "key $key"
    case "$KNOWN" in *" $key "*) echo "cached"; continue ;; esac
    if out=$(list_initrd "$r"); then
        printf '%s\n' "$out" | awk '
            $1 == "lister" { print; next }
            $NF ~ /\.ko(\.(gz|xz|zst|bz2|lz4))?$/ { n = $NF; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); print "m " n }
            $NF ~ /^\/?(usr\/)?lib\/modules\/[^\/]+\/?$/ { n = $NF; sub(/\/$/, "", n); sub(/.*\//, "", n); print "kver " n }
            $NF ~ /(^|\/)modprobe\.d\/[^\/]+\.conf$/ { print "modprobe " $NF }' | sort -u
    else
        sec listfail "$?"
        printf '%s\n' "$out" | tail -n 5
    fi
done
sec end
