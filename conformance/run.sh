#!/usr/bin/env bash
# One command for the MCP conformance suite on both stacks (see conformance/harness.py):
#   bash conformance/run.sh [--stack a|b|all] [--variant sdk|plain|all] [--scenario NAME]... [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 conformance/harness.py "$@"
