#!/usr/bin/env bash
# System packages the tests need: Debian's Chromium (/usr/bin/chromium, driven by Playwright), Pango (WeasyPrint's
# PDF renderer) and Caddy (the TLS proxy and round-robin tests). Installs what is missing when root with apt-get;
# otherwise warns (those tests then skip or fail).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
ldconfig -p 2>/dev/null | grep libpangoft2-1.0 >/dev/null || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
command -v caddy >/dev/null || missing+=(caddy)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} for the browser and PDF tests (log: /tmp/fer-apt.log)" >&2
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/tmp/fer-apt.log 2>&1; then
    tail -n 30 /tmp/fer-apt.log >&2
    exit 1
  fi
else
  echo "warning: missing ${missing[*]} and cannot install them here (need root and apt-get)" >&2
fi
