#!/bin/sh
# runner-entrypoint.sh: run edgerelay beside a runner inside its container.
#
#   runner-entrypoint.sh <runner command> [args...]
#
# Starts `edgerelay run` in the background only when EDGERELAY_ENABLED is on,
# then runs the runner's own command, forwards SIGTERM and SIGINT to both,
# and exits with the runner's status (the agent is stopped, and its spool
# closed, when the runner ends). EDGERELAY_BIN names the binary (default:
# edgerelay on PATH).
set -u

if [ "$#" -eq 0 ]; then
	echo "usage: runner-entrypoint.sh <runner command> [args...]" >&2
	exit 2
fi

agent_pid=
runner_pid=

is_on() {
	case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
	1 | t | true | y | yes | on) return 0 ;;
	esac
	return 1
}

forward() {
	[ -n "$runner_pid" ] && kill "-$1" "$runner_pid" 2>/dev/null
	[ -n "$agent_pid" ] && kill "-$1" "$agent_pid" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward INT' INT

if is_on "${EDGERELAY_ENABLED:-}"; then
	"${EDGERELAY_BIN:-edgerelay}" run &
	agent_pid=$!
fi

"$@" &
runner_pid=$!

# A trapped signal interrupts wait; wait again until the runner is gone.
while :; do
	wait "$runner_pid"
	status=$?
	kill -0 "$runner_pid" 2>/dev/null || break
done

if [ -n "$agent_pid" ]; then
	kill -TERM "$agent_pid" 2>/dev/null
	wait "$agent_pid" 2>/dev/null
fi
exit "$status"
