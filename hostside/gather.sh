# kvm-drivers: gather everything the facts need in ONE remote command.
# POSIX sh (old hosts: SLES 11, CentOS 6). Read-only: writes nothing.
# Usage: set -- PY_LISTER KNOWN SEEN NAMES CAP DRIVER...; then this script (after the KVM_*
# assignments and lib.sh), in the shell pyinfra starts (sh -c): no second shell is started for it.
# KNOWN: space-separated "path|size|mtime|ctime" keys of initrds whose listing the caller
# has cached: those are not listed again (listing means decompressing the whole image); and bare
# paths the caller's copy depends on (what the bootloader files name): part of the fingerprint.
# SEEN: the fingerprint of the caller's cached output (see gather_fingerprint), or "".
# NAMES: the distributions' initrd names, "{v}" standing for the kernel version
# (facts/state.py FALLBACK_INITRDS): looked up for each kernel besides what the bootloaders name.
# CAP: bytes of output at most (facts/kvm_drivers.py OUTPUT_CAP): a longer answer is cut (and refused).
# KVM_ROOT (a variable, default /): the directory that is the host's "/": every file is read under it,
# every path is reported as the host's own. Not /: nothing of the running system is read (a disk
# image: no uname, uid or mount options, no grubby; "image yes" says so), and no link inside the root
# is followed out of it (kvm_path).
# From hostside/__init__.py (SHELL_CONSTANTS): KVM_DUMPS (the files sent whole), KVM_MODPROBE_DIRS
# (first the one that overrides the others), KVM_MODPROBE_CONFS, KVM_MAGIC_BYTES, KVM_FP_MAX.
# Output: sections, each opened by a line "@@KVM <kind> [args]": the format is specified in
# facts/wire.py, next to its parser (parse_snapshot).
# Each program started costs about a millisecond here: the script starts as few as it can. Every
# function's own variables start with its prefix; what one section leaves to the next is named.

sec() { echo "@@KVM $*"; }
# Only printable ASCII travels outside file contents (pyinfra decodes output as UTF-8, and
# host data is untrusted): anything else becomes '?'.
ascii() { tr -c '\t\n -~' '?'; }
# A file name that is not plain ASCII cannot be reported or read safely: say so (the host is
# then an error, never "compliant") and skip the file.
# (The first 20 are named: this output is not under the cap.) plain_name P: P is plain ASCII.
plain_name() { case "$1" in *[!A-Za-z0-9._@+,:=~/-]*) return 1 ;; esac; }
odds=0
odd() {
    plain_name "$1" && return 1
    odds=$((odds + 1)); [ $odds -gt 20 ] || sec oddname "$(printf '%s' "$1" | ascii)"
}

# gather_files: the files the facts parse (KVM_DUMPS; shell built-ins only): dumps, their host
# paths, and dumps_read, where each is read (the same under KVM_ROOT=/), word for word.
gather_files() {
    dumps=""; dumps_read=""
    kvm_glob "$KVM_DUMPS"
    eval "set -- $kq"
    for _fi_f do
        kvm_path "$_fi_f"; _fi_r=$kp  # a link that cannot be followed: sent as unreadable
        { [ -f "$_fi_r" ] || kvm_link "$_fi_f"; } || continue
        odd "$_fi_f" && continue
        dumps="$dumps $_fi_f"; dumps_read="$dumps_read $_fi_r"
    done
}

# gather_modprobe: module configuration files in effect (modprobe_files): modprobe.d files (a
# same-named file in an earlier directory of KVM_MODPROBE_DIRS overrides a later one's, but /usr/lib's
# overrides /lib's only when they are one directory, a merged /usr; kmod reads *.conf only,
# module-init-tools (CentOS 6, SLES 11) any name but its backups: config_filter.c), then
# KVM_MODPROBE_CONFS: /etc/modprobe.conf (module-init-tools) and SUSE's /etc/modprobe.conf.local
# (SUSE's documentation: read with modprobe.conf; its mkinitrd copies both).
gather_modprobe() {
    modprobe_files=""
    set -f
    for _mo_d in $KVM_MODPROBE_DIRS; do
        set +f
        kvm_glob "$_mo_d/*"
        eval "set -- $kq"
        for _mo_f do
            kvm_file "$_mo_f" || continue
            _mo_b=${_mo_f##*/}
            case "$_mo_b" in
                ~*|CVS*|*.rpmsave|*.rpmorig|*.rpmnew|*.dpkg-old|*.dpkg-dist|*.dpkg-new|*.dpkg-bak|*.bak|*.orig|*.rej|*.YaST2save|*.-|*~|*,v)
                    continue ;;
            esac
            odd "$_mo_f" && continue
            gather_overridden "$_mo_d" "$_mo_b" && continue
            modprobe_files="$modprobe_files $_mo_f"
        done
        set -f
    done
    for _mo_f in $KVM_MODPROBE_CONFS; do
        kvm_file "$_mo_f" && modprobe_files="$modprobe_files $_mo_f"
    done
    set +f
}
# gather_overridden DIR NAME: a directory before DIR in KVM_MODPROBE_DIRS has a file NAME that
# overrides DIR/NAME (/usr/X's overrides /X's only when /X's first component is a link: merged /usr).
gather_overridden() {
    for _ov_d in $KVM_MODPROBE_DIRS; do
        [ "$_ov_d" = "$1" ] && return 1
        if [ "$_ov_d" = "/usr$1" ]; then
            _ov_t=${1#/}; kvm_link "/${_ov_t%%/*}" || continue
        fi
        kvm_file "$_ov_d/$2" && return 0
    done
    return 1
}

# gather_tools: the tools, looked up in $PATH as command -v does, in shell built-ins ("tool NAME"
# alone: not installed). Under a root: in the standard directories of the root (lib.sh's PATH).
gather_tools() {
    tools=""
    _to_path=$PATH
    [ -z "$KVM_R" ] || _to_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    for _to_t in dracut lsinitrd mkinitramfs update-initramfs lsinitramfs mkinitrd sdbootutil grubby python3 python; do
        _to_p=""; _to_ifs=$IFS; IFS=:; set -f
        for _to_d in $_to_path; do
            [ -n "$_to_d" ] && kvm_file "$_to_d/$_to_t" && [ -x "$kp" ] && { _to_p=$_to_d/$_to_t; break; }
        done
        IFS=$_to_ifs; set +f
        tools="$tools${tools:+
}tool $_to_t${_to_p:+ $_to_p}"
    done
}

# gather_fingerprint: the fingerprint of everything the rest of the output is made of: the wanted
# drivers, the initrd names, the tools found, and each file read by name, size, inode, mtime and
# ctime, in ONE program (stat): the text itself, its words joined by commas (every name in it is
# plain ASCII); then the GRUB environment's text and the EFI files' checksums. When it equals SEEN,
# the caller's copy of that output is still true: say so, stop. A ctime without nanoseconds (ext3,
# vfat, BusyBox's stat) could hide a change made within the second of the last look, and a
# fingerprint over KVM_FP_MAX (32 KiB) would not fit the command that sends it back: no fingerprint
# then, the whole state is gathered every time.
gather_fingerprint() {
    # Big files, known by size, inode, mtime and ctime (ctime cannot be set from user space:
    # any write, rename or chmod changes it): modules.dep/builtin, kernels, configs, initrds (the
    # files in /boot: not its directories, /boot/efi's FAT root has no times at all). The kernel
    # directories are there too (one without any of those files is still a kernel).
    # A name that is not plain ASCII cannot travel in the fingerprint: no fingerprint then.
    _fp_big=""
    fp_plain=1
    kvm_glob "/lib/modules/*/modules.dep /lib/modules/*/modules.builtin /lib/modules/*/vmlinuz /boot/* /lib/modules/*"
    eval "set -- $kq"
    for _fp_f do
        kvm_path "$_fp_f"
        case "$_fp_f" in /boot/*) [ -f "$kp" ] || continue ;; *) [ -f "$kp" ] || [ -d "$kp" ] || continue ;; esac
        if plain_name "$_fp_f"; then _fp_big="$_fp_big $_fp_f"; else fp_plain=0; fi
    done
    # Cached initrds and the paths the bootloader files named last time (KNOWN: through a symbolic
    # link, stat -L shows the target, so a link pointed elsewhere shows) are stat'ed too; a path
    # already there is not added twice, so the first warm run gets the cold run's fingerprint.
    set -f
    for _fp_k in $KNOWN; do
        _fp_k=${_fp_k%%|*}
        plain_name "$_fp_k" || continue
        case "$_fp_big " in *" $_fp_k "*) ;; *) _fp_big="$_fp_big $_fp_k" ;; esac
    done
    set +f
    # Small files by stat as well, but for those whose times say nothing: grubenv and legacy GRUB's
    # default (GRUB itself rewrites them at boot, past the kernel: same size, inode and times) go
    # in by content, read here (no program); files on the EFI partition (FAT: times to 2 s) by cksum.
    _fp_small=""; _fp_efi=""; _fp_envs=""
    for _fp_f in $dumps; do
        case "$_fp_f" in
            /boot/grub/grubenv|/boot/grub2/grubenv|/boot/grub/default) _fp_envs="$_fp_envs $_fp_f" ;;
            /boot/efi/*) _fp_efi="$_fp_efi $_fp_f" ;;
            *) _fp_small="$_fp_small $_fp_f" ;;
        esac
    done
    fp_env=""
    for _fp_f in $_fp_envs; do kvm_path "$_fp_f"; fp_text "$_fp_f" "$kp"; done
    fp=""
    _fp_stats=""
    _fp_sums=""
    set -f
    if [ -n "$_fp_big" ] && [ $fp_plain = 1 ]; then
        if [ -z "$KVM_R" ]; then
            _fp_stats=$(stat -L -c '%n|%s|%i|%Y|%z' $_fp_big $_fp_small $modprobe_files 2>/dev/null)
        else  # one stat each: the names stat prints are the paths read, not the host's
            for _fp_f in $_fp_big $_fp_small $modprobe_files; do
                kvm_path "$_fp_f" && _fp_s=$(stat -L -c '%s|%i|%Y|%z' "$kp" 2>/dev/null) || continue
                _fp_stats="$_fp_stats${_fp_stats:+
}$_fp_f|$_fp_s"
            done
        fi
    fi
    if [ -n "$_fp_efi" ] && [ -n "$_fp_stats" ]; then
        if [ -z "$KVM_R" ]; then
            _fp_sums=$(cksum $_fp_efi 2>&1)
        else
            for _fp_f in $_fp_efi; do
                kvm_path "$_fp_f"; _fp_s=$(cksum "$kp" 2>&1)
                case "$_fp_s" in *" $kp") _fp_s="${_fp_s%" $kp"} $_fp_f" ;; esac
                _fp_sums="$_fp_sums${_fp_sums:+
}$_fp_s"
            done
        fi
    fi
    _fp_ifs=$IFS; IFS='
'
    for _fp_l in $_fp_stats; do
        case "$_fp_l" in *.000000000\ *) fp_plain=0 ;; *:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]\ *) ;; *) fp_plain=0 ;; esac
    done
    IFS=$_fp_ifs
    if [ -n "$_fp_stats" ] && [ $fp_plain = 1 ]; then
        for _fp_w in $want / $NAMES / $tools / $_fp_stats / $_fp_sums / $fp_env; do fp="$fp${fp:+,}$_fp_w"; done
        [ ${#fp} -le "$KVM_FP_MAX" ] || fp=""
    fi
    set +f
    if [ -n "$fp" ] && [ "$fp" = "$SEEN" ]; then
        sec unchanged "$fp"
        sec end
        exit 0
    fi
    sec fingerprint "$fp"
}
# fp_text FILE READ: FILE's lines (read from READ) but comments (grubenv's padding), with %, space
# and comma escaped, appended to fp_env; a line with other than printable ASCII: no fingerprint.
fp_text() {
    while IFS= read -r _ft_l || [ -n "$_ft_l" ]; do
        case "$_ft_l" in "#"*|"") continue ;; *[!\ -~]*) fp_plain=0; return ;; esac
        _ft_e=""
        while :; do
            _ft_p="${_ft_l%%[% ,]*}"
            [ "$_ft_p" = "$_ft_l" ] && { _ft_e="$_ft_e$_ft_l"; break; }
            _ft_x="${_ft_l#"$_ft_p"}"; _ft_c="${_ft_x%"${_ft_x#?}"}"; _ft_l="${_ft_x#?}"
            case "$_ft_c" in %) _ft_e="$_ft_e$_ft_p%25" ;; " ") _ft_e="$_ft_e$_ft_p%20" ;; *) _ft_e="$_ft_e$_ft_p%2C" ;; esac
        done
        fp_env="$fp_env $1:$_ft_e"
    done < "$2" 2>/dev/null || fp_plain=0
}

# gather_settings: what the host is asked for besides the files: the drivers this answer looked
# up, the tools, and the host's own answer for the default kernel, where it has one (RHEL family:
# grubby; never under a root, where it would answer for this machine): compared with ours.
gather_settings() {
    sec meta
    echo "drivers $want"
    printf '%s\n' "$tools"
    [ -n "$KVM_R" ] ||
        case "$tools" in *"tool grubby /"*) echo "grubby $(grubby --default-kernel 2>&1 | head -n 1 | ascii)" ;; esac
}

# gather_dump: the files, dumped by ONE awk (a program per file would cost more than all the rest):
# "@@KVM file PATH", the content byte for byte, then an extra newline that ends a last line
# that has none (the parser removes exactly it). Only UTF-8 text travels (pyinfra decodes
# output as UTF-8): a file iconv rejects is sent as "@@KVM unreadable PATH".
gather_dump() {
    [ -n "$dumps" ] || return 0
    _du_bad=" "
    if command -v iconv >/dev/null 2>&1 && ! iconv -f UTF-8 -t UTF-8 $dumps_read >/dev/null 2>&1; then
        set -- $dumps_read
        for _du_f in $dumps; do  # rare: find which ones
            iconv -f UTF-8 -t UTF-8 "$1" >/dev/null 2>&1 || _du_bad="$_du_bad$_du_f "
            shift
        done
    fi
    set -- $dumps_read
    _du_args=""
    for _du_f in $dumps; do _du_args="$_du_args $_du_f $1"; shift; done
    awk -v bad="$_du_bad" 'BEGIN {
        RS = "\001"  # whole files as one record (rejoined on the odd \001)
        for (i = 1; i + 1 < ARGC; i += 2) {
            f = ARGV[i]; g = ARGV[i + 1]  # the host path, where it is read
            if (index(bad, " " f " ")) { print "@@KVM unreadable " f; continue }
            c = ""; n = 0
            while ((r = (getline line < g)) > 0) c = (n++ ? c "\001" : "") line
            close(g)
            if (r < 0) { print "@@KVM unreadable " f; continue }
            printf "@@KVM file %s\n%s\n", f, c
        }
    }' $_du_args
}

# gather_kernels: one "kernel K" section for each /lib/modules/K: its images, which of modules.builtin,
# modules.dep and /boot/config-K it has, and what gather_kernel_awk makes of them. Leaves kernels
# (their versions) and closure_modules (the modules the drivers' closures add).
gather_kernels() {
    kernels=""
    closure_modules=""
    kvm_glob "/lib/modules/*"
    eval "set -- $kq"
    for _ke_d do
        kvm_path "$_ke_d"; [ -d "$kp" ] || continue
        odd "$_ke_d" && continue
        _ke_k=${_ke_d##*/}
        kernels="$kernels $_ke_k"
        sec kernel "$_ke_k"
        for _ke_i in /boot/vmlinuz-"$_ke_k" /boot/vmlinux-"$_ke_k" /boot/Image-"$_ke_k" /boot/image-"$_ke_k" "$_ke_d"/vmlinuz; do
            kvm_file "$_ke_i" && echo "image $_ke_i"
        done
        _ke_files=""
        kvm_file "$_ke_d/modules.builtin" && _ke_files="kvm_k=builtin $kp" && echo "has builtin"
        kvm_file "$_ke_d/modules.dep" && _ke_files="$_ke_files kvm_k=dep $kp" && echo "has dep"
        _ke_closure=0; [ -n "$_ke_files" ] && _ke_closure=1
        kvm_file "/boot/config-$_ke_k" && _ke_files="$_ke_files kvm_k=config $kp" && echo "has config"
        _ke_out=""
        [ -n "$_ke_files" ] && _ke_out=$(gather_kernel_awk $_ke_closure $_ke_files)
        [ -z "$_ke_out" ] && continue
        printf '%s\n' "$_ke_out"
        _ke_ifs=$IFS; IFS='
'; set -f
        for _ke_l in $_ke_out; do
            case "$_ke_l" in
                "closure "*) IFS=,; for _ke_m in ${_ke_l#closure * }; do
                    case " $want$closure_modules " in *" $_ke_m "*) ;; *) closure_modules="$closure_modules $_ke_m" ;; esac
                done; IFS='
' ;;
            esac
        done
        IFS=$_ke_ifs; set +f
    done
}
# gather_kernel_awk CLOSURE kvm_k=KIND FILE...: the kernel config's virtio lines (KIND config), and
# for each wanted driver: built in, absent, or a module and its dependency closure (itself first,
# then breadth first), from modules.builtin and modules.dep (KIND builtin, dep; CLOSURE 1: there is
# one of them). This is the only place the closure is computed: the control side reads it.
# The closures' modules matter too: their blacklists stop the drivers (kmod runs the install
# commands of the whole list it loads).
gather_kernel_awk() {
    _ka_c=$1; shift
    awk -v want="$want" -v closure="$_ka_c" "$KVM_NORM"'
        kvm_k == "config" {
            if ($0 ~ /^(# )?CONFIG_([A-Z_]*VIRTIO[A-Z_]*|ATA_PIIX|ATA_GENERIC|NET_FAILOVER|FAILOVER|X86_XEN|X86_64_XEN)[= ]/) print
            next
        }
        kvm_k == "builtin" { builtin[norm($1)] = 1; next }
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
        }' "$@"
}

# gather_blacklist: module configuration lines that may stop a looked-up driver or a module of its
# closure, each logical line (continuations joined) once for each module it names (facts/blacklist.py
# judges; the initrds carry copies of these files).
gather_blacklist() {
    sec blacklist
    [ -n "$modprobe_files" ] || return 0
    _bl_args=""
    for _bl_f in $modprobe_files; do kvm_path "$_bl_f"; _bl_args="$_bl_args kvm_h=$_bl_f $kp"; done
    awk -v want="$want$closure_modules" "$KVM_NORM$KVM_CONF"' BEGIN { n = split(want, x, " "); for (i = 1; i <= n; i++) kvm_w[x[i]] = 1 }
        { kvm_phys(kvm_h, FNR, $0) } END { kvm_flush() }' $_bl_args | ascii
}

# gather_initrds: initrd images: those the bootloaders name (boot_confs: their configurations, where
# they are read), plus each kernel's conventional names (NAMES): a "ref" for each, then an "initrd"
# section for each image in /boot (its key, first bytes, listing, and what its own files say).
gather_initrds() {
    boot_confs=""
    kvm_glob "/boot/grub/grub.cfg /boot/grub2/grub.cfg /boot/grub/custom.cfg /boot/grub2/custom.cfg /boot/grub/menu.lst
        /boot/grub/grub.conf /boot/loader/entries/*.conf"
    eval "set -- $kq"
    for _in_f do
        kvm_file "$_in_f" || continue
        [ -z "$KVM_R" ] || plain_name "$kp" || continue  # split on blanks below: never read a part of a name
        boot_confs="$boot_confs $kp"
    done
    _in_refs=""
    [ -n "$boot_confs" ] && _in_refs=$(awk '$1 ~ /^(initrd|initrd16|initrdefi)$/ {
        for (i = 2; i <= NF; i++) { p = $i; sub(/^\([^)]*\)/, "", p); print p } }' $boot_confs | ascii)
    _in_cands=""
    for _in_k in $kernels; do
        for _in_n in $NAMES; do _in_cands="$_in_cands ${_in_n%%\{v\}*}$_in_k${_in_n#*\{v\}}"; done
    done
    _in_listed=" "
    set -f  # the paths come from configuration files: never expand them as patterns
    for _in_p in $_in_refs $_in_cands; do
        boot_path "$_in_p"
        case "$bp" in "") ;; */./*|*/../*|*//*) kvm_real "$bp"; bp=$kr ;; *) kvm_link "$bp" && { kvm_real "$bp"; bp=$kr; } ;; esac
        sec ref "$_in_p" "$bp"
        [ -n "$bp" ] || continue
        case "$_in_listed" in *" $bp "*) continue ;; esac
        case "$bp" in *kdump*|*rescue*|*ucode*|*microcode*) continue ;; esac
        _in_listed="$_in_listed$bp "
        case "$bp" in /boot/*) ;; *) continue ;; esac  # never read a file outside /boot as an initrd
        kvm_path "$bp"
        gather_initrd "$bp" "$kp"
    done
    set +f
}
# gather_initrd IMAGE READ: the "initrd" section of IMAGE (a host path, read from READ).
gather_initrd() {
    _ir_st=$(stat -c '%s|%Y|%Z' "$2" 2>/dev/null)
    sec initrd "$1" "${_ir_st%%|*}"
    _ir_key="$1|$_ir_st"
    echo "key $_ir_key"
    echo "magic $(od -An -tx1 -N"$KVM_MAGIC_BYTES" "$2" 2>/dev/null | tr -d ' \n')"
    case "$KNOWN" in *" $_ir_key "*) echo "cached"; return ;; esac
    if _ir_out=$(list_initrd "$2"); then
        _ir_lst=$(printf '%s\n' "$_ir_out" | awk "$KVM_NORM"'
            $1 == "lister" { print; next }
            ko($NF) { print "m " norm($NF) }
            $NF ~ /^\/?(usr\/)?lib\/modules\/[^\/]+\/?$/ { n = $NF; sub(/\/$/, "", n); sub(/.*\//, "", n); print "kver " n }
            $NF ~ /(^|\/)modprobe\.d\/[^\/]+\.conf$/ { print "modprobe " $NF }' | sort -u | ascii)
        printf '%s\n' "$_ir_lst"
        # What the image's own module configuration and command-line files say about the modules
        # it holds and the looked-up ones ("conf", "cmdline" lines), then "confread N" or
        # "conferror WHY": its content, so the listing's cache key covers it too.
        _ir_cf=$(printf '%s\n' "$_ir_out" | awk "$KVM_CONF_FILES")
        _ir_fl=""; _ir_ifs=$IFS; IFS='
'
        for _ir_l in $_ir_cf; do case "$_ir_l" in "x "*) _ir_fl="$_ir_fl ${_ir_l#x }" ;; esac; done
        IFS=$_ir_ifs
        { printf '%s\n' "$_ir_lst" "$_ir_cf"; printf 'm %s\n' $want $closure_modules; initrd_conf "$2" $_ir_fl; } |
            awk -v kvm_pre="conf " "$KVM_NORM$KVM_CONF$KVM_CONF_STREAM" | ascii
    else
        sec listfail "$?"
        printf '%s\n' "$_ir_out" | tail -n 5 | ascii
    fi
}

# gather_kimages: kernel images that bootloader entries name without a version (SLES 11 KIWI images
# boot /boot/linux.vmx): tie each to its kernel through the image itself, never by its name. The
# version string from the x86 boot protocol header ("HdrS" at 0x202; kernel_version at 0x20E,
# a pointer to the string at that value + 0x200), and the versioned images that are the same file.
gather_kimages() {
    _ki_imgs=""
    [ -n "$boot_confs" ] && _ki_imgs=$(awk '$1 ~ /^(linux|linux16|linuxefi|kernel)$/ && $2 !~ /^[$-]/ {
        p = $2; sub(/^\([^)]*\)/, "", p); b = p; sub(/.*\//, "", b)
        if (b !~ /^(vmlinuz|vmlinux|bzImage|Image|image|kernel)-./) print p }' $boot_confs | sort -u)
    [ -z "$KVM_R" ] || set -f  # (with KVM_ROOT=/, a pattern is still expanded here, as it always was)
    for _ki_p in $_ki_imgs; do
        set +f
        case "$_ki_p" in *[*?[]*) continue ;; esac  # a pattern, not a file name
        odd "$_ki_p" && continue
        boot_path "$_ki_p"
        sec kimage "$_ki_p" "$bp"
        [ -n "$bp" ] || continue
        kvm_path "$bp"; _ki_r=$kp
        if [ "$(dd if="$_ki_r" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ]; then
            set -- $(od -An -tu1 -j 526 -N 2 "$_ki_r")
            [ $# -eq 2 ] && dd if="$_ki_r" bs=1 skip=$(($1 + 256 * $2 + 512)) count=200 2>/dev/null |
                tr '\000' '\n' | sed -n '1s/^\([A-Za-z0-9._+~-]*\).*/version \1/p'
        fi
        kvm_glob "/boot/vmlinuz-* /boot/vmlinux-* /boot/Image-* /boot/image-*"
        eval "set -- $kq"
        for _ki_f do
            plain_name "$_ki_f" || continue  # reported as oddname above
            kvm_file "$_ki_f" && [ "$kp" -ef "$_ki_r" ] && echo "same $_ki_f"
        done
    done
    set +f
}

# gather_main PY_LISTER KNOWN SEEN NAMES CAP DRIVER...: the whole answer; what follows the fingerprint
# is cut at CAP bytes whatever the host holds (the answer is then refused, having no "end").
gather_main() {
    [ $# -ge 5 ] || { echo "kvm-drivers gather: called with $# arguments, 5 or more expected" >&2; exit 2; }
    PYLIST=$1
    KNOWN=" $2 "
    SEEN=$3
    NAMES=$4
    CAP=$5
    shift 5
    want="$*"
    KVM_R=${KVM_ROOT:-/}
    while case "$KVM_R" in */) true ;; *) false ;; esac; do KVM_R=${KVM_R%/}; done
    case "$KVM_R" in ""|/*) ;; *) echo "kvm-drivers gather: KVM_ROOT $KVM_ROOT is not an absolute path" >&2; exit 2 ;; esac
    { plain_name "$KVM_R" && [ -d "$KVM_R/" ]; } ||
        { echo "kvm-drivers gather: KVM_ROOT $KVM_ROOT is not a directory with a plain name" >&2; exit 2; }
    gather_meta
    gather_disks
    gather_files
    gather_modprobe
    gather_tools
    gather_fingerprint
    {
        gather_settings
        gather_dump
        gather_kernels
        gather_blacklist
        gather_initrds
        gather_kimages
        sec end
    } | head -c "$CAP"
}
gather_main "$@"
