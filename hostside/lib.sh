# kvm-drivers shared shell functions, prepended to gather.sh, rebuild.sh, write.sh and
# unblacklist.sh (POSIX sh), after the KVM_* assignments of hostside/__init__.py (SHELL_CONSTANTS).
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
# whether P is a module file. facts/config_files.py norm() is its Python twin, for inventory names
# (tests/test_host_scripts.py checks that they agree).
KVM_NORM='function norm(p, n) { n = p; sub(/.*\//, "", n); sub(/\.ko(\.[a-z0-9]+)?$/, "", n); gsub(/-/, "_", n); return n }
function ko(p) { return p ~ /\.ko(\.(gz|xz|zst|bz2|lz4))?$/ }'

# The module-configuration and command-line lines that may stop a module loading, for awk programs
# (awk "$KVM_NORM$KVM_CONF"'...'): facts/blacklist.py is the judge on the control side; this finds
# the lines on the host (and judges a new image in rebuild.sh, never more leniently). kvm_w[NAME]:
# the module names that matter. kvm_phys(FILE, N, TEXT) takes physical line N of FILE, in order;
# kvm_flush() ends the file. Each logical line (a line ending in an odd run of backslashes goes on
# with the next one, as kmod and module-init-tools read them) whose first word is blacklist, install
# or alias and whose name (a pattern for install and alias: fnmatch; one awk cannot safely turn into
# a regular expression matches every name) is one of kvm_w is printed as
# kvm_pre "FILE:FIRST-LINE:MODULE:TEXT", once for each module it names (TEXT: the physical lines
# joined, without the backslash-newlines). Lines of command-line files (etc/cmdline,
# etc/cmdline.d/*.conf: read line by line, no comments) give "cmdline FILE:WORD" for each word
# modprobe.blacklist=, module_blacklist=, rd.driver.blacklist=, rdblacklist= or blacklist= naming
# one of kvm_w. With kvm_judge=1, only what stops a module is printed (kvm_stop(): the rules of
# facts/blacklist.py, where in doubt a stop).
KVM_CONF='
function kvm_under(p,   o, i, c, n, j) {
    o = ""; n = length(p)
    for (i = 1; i <= n; i++) {
        c = substr(p, i, 1)
        if (c == "-") c = "_"
        else if (c == "]") return ""
        else if (c == "[") { j = index(substr(p, i), "]"); if (!j) return ""; c = substr(p, i, j); i += j - 1 }
        o = o c
    }
    return o
}
function kvm_re(p,   o, i, c, n, j, b, k) {
    o = "^"; n = length(p)
    for (i = 1; i <= n; i++) {
        c = substr(p, i, 1)
        if (c == "*") o = o ".*"
        else if (c == "?") o = o "."
        else if (c == "[") {
            j = index(substr(p, i), "]"); b = substr(p, i + 1, j - 2); i += j - 1
            if (substr(b, 1, 1) == "!") b = "^" substr(b, 2)
            if (substr(b, 1 + (substr(b, 1, 1) == "^")) !~ /^[A-Za-z0-9_.,+@-]+$/) return "\001"
            for (k = 2; k < length(b); k++)
                if (substr(b, k, 1) == "-" && substr(b, k - 1, 1) > substr(b, k + 1, 1)) return "\001"
            o = o "[" b "]"
        } else if (index("\\^$.|+(){}/", c)) o = o "\\" c
        else o = o c
    }
    return o "$"
}
function kvm_hits(name,   u, re, w, out) {
    gsub(/\\/, "", name); u = kvm_under(name)
    if (u == "") return ""
    if (!index(u, "*") && !index(u, "?") && !index(u, "[")) return (u in kvm_w) ? u : ""
    re = kvm_re(u); out = ""
    for (w in kvm_w) if (re == "\001" || w ~ re) out = out " " w
    return substr(out, 2)
}
function kvm_phys(f, n, t) {
    if (f != kvm_f) { kvm_flush(); kvm_f = f; kvm_cl = (f ~ /(^|\/)etc\/cmdline(\.d\/[^\/]*)?$/) }
    if (kvm_cl) { kvm_cmdline(f, t); return }
    if (!kvm_c) { kvm_s = n; kvm_b = "" }
    if (match(t, /\\+$/) && RLENGTH % 2) { kvm_b = kvm_b substr(t, 1, length(t) - 1); kvm_c = 1; return }
    kvm_b = kvm_b t; kvm_c = 0
    kvm_line(f, kvm_s, kvm_b)
}
function kvm_flush() { if (kvm_c) { kvm_c = 0; kvm_line(kvm_f, kvm_s, kvm_b) } }
function kvm_line(f, s, t,   a, n, c, h, d, i) {
    n = split(t, a, /[ \t]+/); i = (a[1] == "") ? 2 : 1
    c = a[i]; gsub(/\\/, "", c)
    if ((c != "blacklist" && c != "install" && c != "alias") || substr(t, 1, 1) == "#") return
    h = kvm_hits(a[i + 1]); if (h == "") return
    n = split(h, a, " ")
    for (i = 1; i <= n; i++) if (!kvm_judge || kvm_stop(t, a[i])) print kvm_pre f ":" s ":" a[i] ":" t
}
function kvm_cmdline(f, t,   a, n, i, v, k, m, x, y, j, hit) {
    n = split(t, a, /[ \t]+/)
    for (i = 1; i <= n; i++) {
        v = a[i]; gsub(/"/, "", v)
        j = index(v, "="); if (!j) continue
        k = substr(v, 1, j - 1); x = k; gsub(/-/, "_", x)
        if (k != "rd.driver.blacklist" && k != "rdblacklist" && k != "modprobe.blacklist" && k != "blacklist" &&
            x != "module_blacklist") continue
        m = split(substr(v, j + 1), y, ","); hit = 0
        for (j = 1; j <= m; j++) { gsub(/-/, "_", y[j]); if (y[j] in kvm_w) hit = 1 }
        if (hit) print "cmdline " f ":" a[i]
    }
}
function kvm_stop(t, d,   a, n, i, c, x) {
    gsub(/\\/, "", t); n = split(t, a, /[ \t]+/); i = (a[1] == "") ? 2 : 1; c = a[i]
    if (c == "blacklist") return kvm_under(a[i + 1]) == d
    if (c == "alias") { if (n < i + 2) return 0; return kvm_under(a[i + 2]) != d }
    if (!match(t, /^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]/)) return 0
    return !kvm_loads(substr(t, RLENGTH + 1), d)
}
function kvm_loads(cmd, d,   a, n, i, s, runs, has, last, ok, c) {
    if (cmd ~ /["\047`]/ || index(cmd, "$(") || index(cmd, ";;")) return 0
    n = length(cmd); c = 0
    for (i = 1; i <= n; i++) { s = substr(cmd, i, 1); if (s == "(") c++; else if (s == ")" && --c < 0) return 0 }
    if (c) return 0
    gsub(/[()]/, " ", cmd); gsub(/&&/, " \001 ", cmd); gsub(/\|\|/, " \002 ", cmd); gsub(/;/, " ; ", cmd)
    gsub(/\|/, " | ", cmd); gsub(/&/, " \003 ", cmd)
    n = split(cmd, a, /[ \t]+/); s = 1; runs = 1; has = 0; last = ""; ok = 0
    for (i = 1; i <= n; i++) if (substr(a[i], 1, 1) == "#") { n = i - 1; break }
    for (i = 1; i <= n; i++) {
        if (a[i] != ";" && a[i] != "|" && a[i] != "\001" && a[i] != "\002" && a[i] != "\003") { if (a[i] != "") has = 1; continue }
        if (!has) return 0
        if (runs && a[i] != "\003" && kvm_seg(a, s, i - 1, d)) ok = 1
        runs = (a[i] == ";" || a[i] == "|"); s = i + 1; has = 0; last = a[i]
    }
    if (!has && (last == "\001" || last == "\002" || last == "|")) return 0
    if (has && runs && kvm_seg(a, s, n, d)) ok = 1
    return ok
}
function kvm_seg(a, s, e, d,   p, j, w, ig, all, dd, hit, nm) {
    while (s <= e && (a[s] == "" || a[s] == "{" || a[s] == "}" || a[s] == "!" || a[s] == "exec" || a[s] == "command" ||
        a[s] ~ /^[A-Za-z_][A-Za-z0-9_]*=/)) s++
    if (s > e) return 0
    p = a[s]; sub(/.*\//, "", p)
    if (p == "kmod" && s < e) { s++; p = a[s]; sub(/.*\//, "", p) }
    if (p == "insmod") {
        for (j = s + 1; j <= e; j++) if (a[j] != "" && substr(a[j], 1, 1) != "-") return ko(a[j]) && norm(a[j]) == d
        return 0
    }
    if (p != "modprobe") return 0
    ig = 0; all = 0; dd = 0; hit = 0; nm = 0
    for (j = s + 1; j <= e; j++) {
        w = a[j]
        if (w == "") continue
        if (!dd && w == "--") { dd = 1; continue }
        if (!dd && substr(w, 1, 2) == "--") {
            if (w == "--ignore-install" || w == "--ignore-remove") ig = 1
            else if (w == "--all") all = 1
            else if (w !~ /^--(use-blacklist|force|force-modversion|force-vermagic|first-time|syslog|quiet|verbose)$/) return 0
            continue
        }
        if (!dd && substr(w, 1, 1) == "-" && length(w) > 1) {
            if (substr(w, 2) ~ /[^aibfsqv]/) return 0
            if (index(w, "i")) ig = 1
            if (index(w, "a")) all = 1
            continue
        }
        nm++
        if ((nm == 1 || all) && (w == "$MODPROBE_MODULE" || w == "${MODPROBE_MODULE}" || kvm_under(w) == d)) hit = 1
    }
    return ig && hit
}
'

# KVM_CONF_FILES (awk, on an initrd listing of any lister): the files inside the image that say
# what loads, each as "x PATH" (PATH as the listing shows it, without a leading "./" or "/"): the
# modprobe.d files in effect (a same-named file in an earlier directory of KVM_MODPROBE_DIRS wins,
# as kmod orders them; any name, as module-init-tools reads them, but its backups, config_filter.c),
# KVM_MODPROBE_CONFS (etc/modprobe.conf and etc/modprobe.conf.local: SUSE's mkinitrd copies both),
# etc/cmdline and etc/cmdline.d/*.conf (dracut). A name that is not plain ASCII: "odd PATH" (it
# cannot be read safely). (The two lists are put in the program as it is defined: plain names.)
KVM_CONF_FILES='
function kvm_out(n) { if (n ~ /[^A-Za-z0-9._@+,\/-]/) print "odd " n; else print "x " n }
BEGIN {
    k = split("'"$KVM_MODPROBE_DIRS"'", a, " "); for (i = 1; i <= k; i++) { sub(/^\/+/, "", a[i]); dir[a[i]] = i }
    k = split("'"$KVM_MODPROBE_CONFS"'", a, " "); for (i = 1; i <= k; i++) { sub(/^\/+/, "", a[i]); one[a[i]] = 1 }
}
{
    n = $NF; if (NF >= 3 && $(NF - 1) == "->") n = $(NF - 2)
    while (substr(n, 1, 2) == "./") n = substr(n, 3)
    sub(/^\/+/, "", n)
    b = n; sub(/.*\//, "", b); d = substr(n, 1, length(n) - length(b) - 1)
    if (b != "" && (d in dir)) {
        if (b ~ /^(\.|~|CVS)/ || b ~ /(\.rpmsave|\.rpmorig|\.rpmnew|\.dpkg-old|\.dpkg-dist|\.dpkg-new|\.dpkg-bak|\.bak|\.orig|\.rej|\.YaST2save|\.-|~|,v)$/) next
        r = dir[d]
        if (!(b in rank) || r < rank[b]) { rank[b] = r; path[b] = n }
    } else if ((n in one) || n ~ /^etc\/(cmdline|cmdline\.d\/[^\/]+\.conf)$/) other[n] = 1
}
END { for (b in path) kvm_out(path[b]); for (n in other) kvm_out(n) }'

# KVM_CONF_STREAM (awk, after KVM_CONF): judges an initrd's files. Its input: "m NAME" (the modules
# that matter), KVM_CONF_FILES' lines (what is to be read), then initrd_conf's. Prints KVM_CONF's
# lines, then "confread N" (N files read), or "conferror WHY" when any of them could not be read.
KVM_CONF_STREAM='
$1 == "m" { kvm_w[$2] = 1; next }
$1 == "x" { kvm_x[substr($0, 3)] = 1; next }
$1 == "odd" { kvm_odd = kvm_odd " " substr($0, 5); next }
$1 == "e" { kvm_err = substr($0, 3); next }
$1 == "f" { kvm_flush(); kvm_cur = substr($0, 3); kvm_got[kvm_cur] = 1; kvm_nf++; kvm_ln = 0; next }
$1 == "l" { kvm_phys(kvm_cur, ++kvm_ln, substr($0, 3)); next }
END {
    kvm_flush()
    for (f in kvm_x) if (!(f in kvm_got)) kvm_miss = kvm_miss " " f
    if (kvm_odd != "") print "conferror a file name that is not plain ASCII:" kvm_odd
    else if (kvm_err != "") print "conferror " kvm_err
    else if (kvm_miss != "") print "conferror could not read" kvm_miss
    else print "confread " kvm_nf + 0
}'

# initrd_conf IMAGE FILE...: the FILEs inside IMAGE (as KVM_CONF_FILES names them) for
# KVM_CONF_STREAM: "f FILE", then "l LINE" for each of its lines. Read by the Python lister (one
# pass over the image), else by lsinitrd (one pass per file); lsinitramfs cannot print a file. A
# file that cannot be read is left out (KVM_CONF_STREAM notices); "e WHY" when none can be.
initrd_conf() {
    _img=$1; shift
    [ $# -gt 0 ] || return 0
    _why="no way to read files inside an initrd here (lsinitramfs cannot; no python3, python or lsinitrd)"
    if [ -n "$PYLIST" ] && _py=$(command -v python3 || command -v python); then
        _iso=-I; "$_py" -I -c '' 2>/dev/null || _iso="-E -s"
        if _out=$(cd / && "$_py" $_iso -c "$PYLIST" --cat "$_img" "$@" 2>&1); then
            printf '%s\n' "$_out"
            return 0
        fi
        _why=$(printf '%s\n' "$_out" | tail -n 1)
    fi
    if command -v lsinitrd >/dev/null 2>&1; then
        for _f in "$@"; do
            _out=$(lsinitrd "$_img" "$_f" 2>/dev/null) || continue
            printf 'f %s\n' "$_f"
            [ -z "$_out" ] || printf '%s\n' "$_out" | awk '{ print "l " $0 }'
        done
        return 0
    fi
    echo "e $_why"
}

# initrd_modules IMAGE: module names (normalised) in the image, one per line.
initrd_modules() {
    list_initrd "$1" | awk "$KVM_NORM"' ko($NF) { print norm($NF) }' | sort -u
}
