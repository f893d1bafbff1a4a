#!/usr/bin/env bash
# The SMTP server the tests send mail to: aiosmtpd (PyPI, pinned) in a virtualenv outside the
# clone, created once. Prints the virtualenv's python; the tests start
#   python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox MAILDIR
# themselves, one per test, and read what it delivered from MAILDIR.
set -euo pipefail
VENV="${ECOSIRE_SMTPD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ecosire-smtpd-venv}"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check aiosmtpd==1.4.6 >&2
fi
echo "$VENV/bin/python"
