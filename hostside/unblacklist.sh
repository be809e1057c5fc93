# kvm-drivers: disable module configuration lines of ONE file, all in one go. Prepended with lib.sh.
# Usage: sh -c "$(cat lib.sh unblacklist.sh)" kvm-unblacklist PATH RUN LINE TEXT [LINE TEXT]...
# LINE is where a logical line starts and TEXT that logical line as gather.sh sent it (its physical
# lines joined without the backslash-newlines, printable ASCII, anything else as '?'); each must
# still read TEXT (else nothing is changed). Every physical line of it is commented out (a comment
# ending in a backslash would swallow the next line anyway: kmod and module-init-tools join before
# they look for '#'). In /etc (modprobe.d, /etc/modprobe.conf, /etc/modprobe.conf.local) the file
# (or a link's target) is rewritten in place; a vendor file (/usr/lib, /lib, /run) is overridden by
# a same-named copy in /etc/modprobe.d with them commented out. Under the host lock.
# RUN (a run id, or ""): what the file held (or that it did not exist: an override) is kept in
# the root-only $KVM_STATE/rollback.RUN, as write.sh does, so that a failed rebuild of the same
# run undoes the edit (lock.sh kvm_keep, kvm_rollback: only while the file holds what RUN wrote).
trap '' PIPE
f=$1; run=$2; shift 2
case "$run" in *[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
case "$f" in */../*|*/./*) echo "kvm-drivers: refusing $f" >&2; exit 1 ;; esac
# one of KVM_MODPROBE_CONFS, or a file right in one of KVM_MODPROBE_DIRS (hostside/__init__.py)
known=0
for d in $KVM_MODPROBE_CONFS; do [ "$f" = "$d" ] && known=1; done
for d in $KVM_MODPROBE_DIRS; do case "$f" in "$d"/*/*) ;; "$d"/?*) known=1 ;; esac; done
[ $known = 1 ] || { echo "kvm-drivers: refusing $f: not a modprobe.d file" >&2; exit 1; }
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
kvm_stale "$run"
[ -f "$f" ] || { echo "kvm-drivers: $f is gone: run again" >&2; exit 1; }
script=$(mktemp "$KVM_STATE/sed.XXXXXX") || exit 1
trap 'rm -f "$script"' EXIT
trap 'rm -f "$script"; exit 1' HUP INT TERM
lines=""
while [ $# -ge 2 ]; do
    case "$1" in ''|*[!0-9]*) echo "kvm-drivers: bad line number '$1'" >&2; exit 1 ;; esac
    case "$lines " in *" $1 "*) shift 2; continue ;; esac  # a line naming several modules comes once per module
    # the logical line starting at $1, compared as gather.sh sent it: "LAST-LINE" then its text
    # (status 3: line $1 is the continuation of an earlier one)
    got=$(tr -c '\t\n -~' '?' < "$f" | awk -v n="$1" '
        NR < n { c = match($0, /\\+$/) && RLENGTH % 2; next }
        NR == n && c { bad = 1; exit }
        { if (match($0, /\\+$/) && RLENGTH % 2) { t = t substr($0, 1, length($0) - 1); next }
          t = t $0; print NR; print t; done = 1; exit }
        END { if (bad) exit 3; if (!done && NR >= n) { print NR; print t } }')
    if [ $? -ne 0 ] || [ "${got#*
}" != "$2" ] || [ "$got" = "${got#*
}" ]; then
        echo "kvm-drivers: $f line $1 changed since it was read: nothing changed, run again" >&2; exit 1
    fi
    i=$1
    while [ "$i" -le "${got%%
*}" ]; do
        printf '%ss/^/# disabled by kvm-drivers (needed to boot on KVM): /\n' "$i" >> "$script"
        i=$((i + 1))
    done
    lines="$lines $1"
    shift 2
done
case "$f" in
    /etc/*) t=$(readlink -f "$f") || exit 1 ;;
    *) t="/etc/modprobe.d/${f##*/}"
       [ -e "$t" ] && { echo "kvm-drivers: $t appeared since the state was gathered: run again" >&2; exit 1; } ;;
esac
tmp=$(mktemp "$t.kvm-drivers.XXXXXX") || exit 1
trap 'rm -f "$tmp" "$script"' EXIT
trap 'rm -f "$tmp" "$script"; exit 1' HUP INT TERM
sed -f "$script" "$f" > "$tmp" || exit 1
kvm_attrs "$tmp" "$t" || exit 1
kvm_keep "$run" "$t" "$tmp" || { echo "kvm-drivers: cannot keep rollback state in $KVM_STATE" >&2; exit 1; }
mv -f "$tmp" "$t" || exit 1
echo "kvm-drivers: disabled in $t: line(s)$lines of $f"
