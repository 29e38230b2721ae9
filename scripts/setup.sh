#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) and the system packages it needs.
# Usage: scripts/setup.sh [app|test]. Idempotent: a second run only checks, so it is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-app}
requirements=requirements.txt
system_packages=(ffmpeg)             # FFmpeg's shared libraries: torchcodec decodes audio with them
if [ "$purpose" = test ]; then
  requirements=requirements-dev.txt
  system_packages+=(chromium espeak-ng)  # the real-browser UI tests drive Debian's Chromium; live-mode tests speak with espeak-ng
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${system_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($python --version)"
  "$python" -m venv .venv
fi

# Reinstall only when the requirement files changed since the last successful install.
stamp=.venv/.installed-$purpose
wanted=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing Python packages from $requirements (the first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" > "$stamp"
fi

# The project itself, installed in place (editable, no dependencies: they are above), so that
# `.venv/bin/python -m ser_train` works from any folder, not only from this one. Checked by where
# the venv finds the package, without importing it, so a moved or copied folder is installed again.
project=$(pwd -P)
installed_at=$(cd / && "$project/.venv/bin/python" -c \
  'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("ser_train").origin).parents[1])' 2>/dev/null || true)
if [ "$installed_at" != "$project" ]; then
  echo "Installing this project into .venv (editable)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .
fi
