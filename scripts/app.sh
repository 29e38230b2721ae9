#!/usr/bin/env bash
# Set up (if needed) and serve the demo on http://127.0.0.1:7860 with the bundled default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app
exec .venv/bin/python app.py "$@"
