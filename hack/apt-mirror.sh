#!/usr/bin/env bash
# The Debian mirror this machine's apt already uses, for debootstrap (hack/images.sh).
#   hack/apt-mirror.sh SUITE [APT_DIR]
# Prints the first `deb` URI (http, https or file) of APT_DIR (default /etc/apt) whose
# suites include SUITE exactly: sources.list, then sources.list.d/*.list and deb822
# sources.list.d/*.sources in name order, the way apt reads them. Comments, deb-src
# entries, `Enabled: no` stanzas and other files (*.disabled, *.save) are skipped.
# Exit status 1 and nothing printed when no source names SUITE.
# hack/images.sh calls it with bookworm (the archive) and bookworm-security.
set -euo pipefail
suite="${1:?usage: hack/apt-mirror.sh SUITE [APT_DIR]}"
apt_dir="${2:-/etc/apt}"

files=()
[[ -f "$apt_dir/sources.list" ]] && files+=("$apt_dir/sources.list")
shopt -s nullglob
parts=("$apt_dir"/sources.list.d/*.list "$apt_dir"/sources.list.d/*.sources)
# apt reads sources.list.d in name order whatever the extension.
if ((${#parts[@]})); then
  mapfile -t -O "${#files[@]}" files < <(printf '%s\n' "${parts[@]}" | LC_ALL=C sort)
fi
((${#files[@]})) || exit 1

awk -v want="$suite" '
  function usable(uri) { return uri ~ /^(https?|file):/ }
  function emit(uri) { sub(/\/+$/, "", uri); print uri; found = 1; exit }
  # One-line style: deb [opt=val ...] URI SUITE [COMPONENT...]
  function one_line(line,   n, f, i) {
    sub(/#.*/, "", line)
    n = split(line, f, /[ \t]+/)
    i = 1
    if (f[i] == "") i++
    if (f[i] != "deb") return
    i++
    if (substr(f[i], 1, 1) == "[") {
      while (i <= n && f[i] !~ /\]$/) i++
      i++
    }
    if (f[i + 1] == want && usable(f[i])) emit(f[i])
  }
  # deb822 style: stanzas of Field: value, separated by blank lines.
  function stanza_end(   n, t, s, u, i, j, deb, has) {
    if (tolower(fields["enabled"]) == "no") { delete fields; return }
    n = split(fields["types"], t, /[ \t]+/)
    for (i = 1; i <= n; i++) if (t[i] == "deb") deb = 1
    n = split(fields["suites"], s, /[ \t]+/)
    for (i = 1; i <= n; i++) if (s[i] == want) has = 1
    if (deb && has) {
      n = split(fields["uris"], u, /[ \t]+/)
      for (j = 1; j <= n; j++) if (usable(u[j])) emit(u[j])
    }
    delete fields
  }
  FNR == 1 { if (deb822) stanza_end(); deb822 = (FILENAME ~ /\.sources$/); last = "" }
  !deb822 { one_line($0); next }
  /^#/ { next }
  /^[ \t]*$/ { stanza_end(); next }
  /^[ \t]/ { if (last != "") fields[last] = fields[last] " " $0; next }
  {
    key = tolower(substr($0, 1, index($0, ":") - 1))
    value = substr($0, index($0, ":") + 1)
    gsub(/^[ \t]+|[ \t]+$/, "", value)
    fields[key] = value
    last = key
  }
  END { if (!found && deb822) stanza_end(); if (!found) exit 1 }
' "${files[@]}"
