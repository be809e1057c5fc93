# kvm-drivers shared shell functions, prepended to gather.sh, rebuild.sh, write.sh and
# unblacklist.sh (POSIX sh).
# Needs $PYLIST: the Python initrd lister (hostside/initrd_ls.py), used when native tools fail.
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
            # -I (-E -s on Python 2): no module is picked up from the working directory or
            # the environment; and that directory is /.
            _iso=-I; "$_py" -I -c '' 2>/dev/null || _iso="-E -s"
            _out=$(cd / && "$_py" $_iso -c "$PYLIST" "$1" 2>&1) || { _rc=$?; printf '%s\n' "$_out"; return $_rc; }
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

# The one module-name normalisation, for awk programs (awk "$KVM_NORM"'...'): norm(P) is the name
# the kernel gives the module file P (basename, no .ko suffix, dashes as underscores); ko(P) says
# whether P is a module file. facts/parsers.py norm() is its Python twin, for inventory names
# (tests/test_host_scripts.py checks that they agree).
KVM_NORM='function norm(p, n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); return n }
function ko(p) { return p ~ /\.ko(\.(gz|xz|zst|bz2|lz4))?$/ }'

# initrd_modules IMAGE: module names (normalised) in the image, one per line.
initrd_modules() {
    list_initrd "$1" | awk "$KVM_NORM"' ko($NF) { print norm($NF) }' | sort -u
}
