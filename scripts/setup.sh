#!/usr/bin/env bash
# Create .venv if missing and install whatever is lacking: gramx, its plugins, the system
# packages (libusb for open3d, chromium for the browser test). Re-running with nothing changed returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.gramx-setup

# System packages: libusb for open3d; Debian's chromium for the browser test of `gramx serve`
# (driven by playwright with executable_path; never `playwright install`).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || { echo "setup: creating $VENV"; "$PYTHON" -m venv "$VENV"; }

# Everything under plugins/ and examples/*/ with a pyproject.toml is installed editable.
packages=(. plugins/*/ examples/*/)
editable=()
for dir in "${packages[@]}"; do
    if [ -f "$dir/pyproject.toml" ]; then editable+=(-e "$dir"); fi
done
inputs=$(cat requirements.txt; for dir in "${packages[@]}"; do
    if [ -f "$dir/pyproject.toml" ]; then echo "$dir"; cat "$dir/pyproject.toml"; fi; done)
digest=$(printf '%s' "$inputs" | sha256sum | cut -d' ' -f1)

if [ "$(cat "$STAMP" 2>/dev/null)" = "$digest" ]; then
    exit 0
fi
echo "setup: installing gramx and its plugins into $VENV (first run takes a few minutes)"
log=$VENV/setup.log
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements.txt "${editable[@]}" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
fi
"$VENV/bin/python" -c "import gramx, torch, torchaudio" 
echo "$digest" > "$STAMP"
echo "setup: done"
