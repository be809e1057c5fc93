# kvm-drivers shared shell functions, prepended to gather.sh and rebuild.sh (POSIX sh).
# Needs $PYLIST: the Python initrd lister (facts/initrd_ls.py), used when native tools fail.
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
            _out=$("$_py" -c "$PYLIST" "$1" 2>&1) || { _rc=$?; printf '%s\n' "$_out"; return $_rc; }
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

# initrd_modules IMAGE: module names (normalised) in the image, one per line.
initrd_modules() {
    list_initrd "$1" | awk '$NF ~ /\.ko(\.(gz|xz|zst|bz2|lz4))?$/ {
        n = $NF; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); print n }' | sort -u
}
