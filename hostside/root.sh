# kvm-drivers: reading a host's tree, "/" or a disk image's root under KVM_ROOT, without ever leaving
# it: path resolution, pattern expansion, bootloader paths. Sent with gather.sh (after lib.sh).
# kvm_path P: where the host's path P is read. Sets kp, the path to read, and kr, the host path it
# stands for (P resolved, as readlink -f gives it). With KVM_ROOT=/, both are P (the kernel resolves
# it). Else P is walked one component at a time under the root, as the kernel would in a chroot: a
# link's absolute target starts again at the root, ".." at the root stays there: nothing outside
# the root is ever reached. Refused (status 1; kp a path that is never a file, kr ""): a link whose
# target is not a plain name (kvm_path's own lists are split on blanks), or more than 40 links (a loop).
kvm_path() {
    kp=$1; kr=$1
    [ -n "$KVM_R" ] || return 0
    _kp_t=$1; _kp_c=""; _kp_n=0
    while [ -n "$_kp_t" ]; do
        _kp_x=${_kp_t%%/*}
        case "$_kp_t" in */*) _kp_t=${_kp_t#*/} ;; *) _kp_t="" ;; esac
        case "$_kp_x" in
            ""|.) continue ;;
            ..) _kp_c=${_kp_c%/*}; continue ;;
        esac
        if [ -L "$KVM_R$_kp_c/$_kp_x" ]; then
            _kp_n=$((_kp_n + 1))
            if [ $_kp_n -gt 40 ] || ! _kp_l=$(readlink "$KVM_R$_kp_c/$_kp_x") || [ -z "$_kp_l" ] ||
                ! plain_name "$_kp_l"; then
                kp=/dev/null/kvm-drivers-refused; kr=""; return 1
            fi
            case "$_kp_l" in /*) _kp_c="" ;; esac
            _kp_t=$_kp_l/$_kp_t
        else
            _kp_c=$_kp_c/$_kp_x
        fi
    done
    kp=$KVM_R$_kp_c; kr=${_kp_c:-/}
}
# kvm_link P: P itself is a symbolic link (its directory resolved by kvm_path).
kvm_link() {
    [ -n "$KVM_R" ] || { [ -L "$1" ]; return; }
    kvm_path "${1%/*}" && [ -L "$kp/${1##*/}" ]
}
# kvm_real P: sets kr to P resolved (readlink -f: '' when it cannot be).
kvm_real() {
    if [ -n "$KVM_R" ]; then kvm_path "$1"; else kr=$(readlink -f "$1"); fi
}
# kvm_glob "PATTERN...": sets kq to what the host's shell makes of the patterns (each one's matches in
# order, or the pattern itself when nothing matches), quoted for eval "set -- $kq". A pattern is
# absolute, with at most one component holding * ? or [. Under a root, each directory is resolved
# by kvm_path before it is listed (the shell would follow a link out of the root).
kvm_glob() {
    kq=""; _kg_f=""
    case $- in *f*) _kg_f=1 ;; esac
    set -f
    for _kg_p in $1; do
        if [ -z "$KVM_R" ]; then
            set +f
            for _kg_m in $_kg_p; do kvm_quote "$_kg_m"; done
            set -f
        else
            kvm_glob_root "$_kg_p"
        fi
    done
    [ -n "$_kg_f" ] || set +f
}
# kvm_glob_root PATTERN: kvm_glob's work for one pattern under a root. The matches of a pattern
# whose last component holds no * ? [ (e.g. /lib/modules/*/modules.dep) are sorted as the shell
# sorts whole paths (sort, LC_ALL=C); a name with a newline goes after the others.
kvm_glob_root() {
    _kr_d=${1%%[*?[]*}; _kr_d=${_kr_d%/*}; _kr_g=${1#"$_kr_d"/}
    case "$_kr_g" in */*) _kr_s=/${_kr_g#*/}; _kr_g=${_kr_g%%/*} ;; *) _kr_s="" ;; esac
    case "$_kr_g" in *[*?[]*) ;; *) kvm_quote "$1"; return ;; esac
    kvm_path "$_kr_d" || { kvm_quote "$1"; return; }
    _kr_q=$kq; kq=""; _kr_l=""; _kr_nl=""
    set +f
    for _kr_m in "$kp"/$_kr_g; do
        [ -L "$_kr_m" ] || [ -e "$_kr_m" ] || continue  # -e follows no link here: it is not one
        _kr_h=$_kr_d/${_kr_m##*/}$_kr_s
        if [ -n "$_kr_s" ]; then
            kvm_path "${_kr_h%/*}" && { [ -L "$kp/${_kr_h##*/}" ] || [ -e "$kp/${_kr_h##*/}" ]; } || continue
            case "$_kr_h" in *"
"*) kvm_quote "$_kr_h"; _kr_nl=$_kr_nl$kq; kq=""; continue ;; esac
            _kr_l="$_kr_l$_kr_h
"
        else
            kvm_quote "$_kr_h"
        fi
    done
    set -f
    if [ -n "$_kr_l" ]; then
        _kr_ifs=$IFS; IFS='
'
        for _kr_h in $(printf '%s' "$_kr_l" | sort); do kvm_quote "$_kr_h"; done
        IFS=$_kr_ifs
    fi
    kq=$kq$_kr_nl
    [ -n "$kq" ] || kvm_quote "$1"
    kq=$_kr_q$kq
}
# kvm_quote S: appends S to kq, quoted for eval.
kvm_quote() {
    _kq_s=$1; _kq_o=""
    while :; do
        case "$_kq_s" in
            *\'*) _kq_a=${_kq_s%%\'*}; _kq_o=$_kq_o$_kq_a\'\\\'\'; _kq_s=${_kq_s#*\'} ;;
            *) break ;;
        esac
    done
    kq="$kq '$_kq_o$_kq_s'"
}

# boot_path P: sets bp to the file a path from a bootloader configuration is on this system ('' when
# none): P itself, or under /boot (a separate /boot partition), or, for btrfs, without its leading
# subvolume (GRUB names /@/boot/x, the subvolume mounted as /, for /boot/x; /@boot/x for /boot/x).
boot_path() {
    if kvm_file "$1"; then bp=$1; elif kvm_file "/boot$1"; then bp=/boot$1; else bp=""; fi
    case "$bp$1" in
        /@*/*) _bp_q=/${1#/@*/}; if kvm_file "$_bp_q"; then bp=$_bp_q; elif kvm_file "/boot$_bp_q"; then bp=/boot$_bp_q; fi ;;
    esac
}
# kvm_file P: P is a file (kp: where it is read).
kvm_file() { kvm_path "$1" && [ -f "$kp" ]; }
