#!/bin/sh
# runner-entrypoint.sh: run edgerelay beside a runner inside its container.
#
#   runner-entrypoint.sh <runner command> [args...]
#
# Kept for images whose ENTRYPOINT names it; `edgerelay wrap` does the work
# (see docs/OPERATIONS.md, "Inside a runner container"). EDGERELAY_BIN names
# the binary (default: edgerelay on PATH).
exec "${EDGERELAY_BIN:-edgerelay}" wrap -- "$@"
