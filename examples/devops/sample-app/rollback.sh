#!/bin/sh
# Puts the release before the current one back on <env>.    Usage: sh rollback.sh <env>
set -eu
cd "$(dirname "$0")"
env=${1:-}
dir=.deployments/$env
case $env in
    staging | production) ;;
    *) echo "usage: rollback.sh <staging|production> (got '$env')" >&2; exit 2 ;;
esac
[ -s "$dir/history" ] || { echo "nothing was ever deployed to $env" >&2; exit 1; }
bad=$(tail -n 1 "$dir/history")
previous=""
if [ "$(wc -l < "$dir/history")" -ge 2 ]; then
    previous=$(tail -n 2 "$dir/history" | head -n 1)
fi
# Forget the bad release: the one before it is the last entry now.
sed '$d' "$dir/history" > "$dir/history.new"
mv "$dir/history.new" "$dir/history"
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $env $*" >> .deployments/deploy.log; }
if [ -z "$previous" ]; then
    rm -f "$dir/current"
    log "rolled back $bad; nothing earlier to restore"
    echo "rolled back $bad; no earlier release, so $env is empty now" >&2
    exit 1
fi
echo "$previous" > "$dir/current"
log "rolled back $bad to $previous"
echo "rolled back $env from $bad to $previous"
printf '{"env": "%s", "release": "%s", "rolled_back": "%s"}\n' "$env" "$previous" "$bad"
