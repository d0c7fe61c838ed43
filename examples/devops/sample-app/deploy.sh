#!/bin/sh
# "Deploys" an artifact: copies it into .deployments/<env>/, makes it current, checks health.
# Usage: sh deploy.sh <staging|production> <artifact>
# Demo switch: `touch .fail-deploy` makes the health check fail (so the rollback runs).
set -eu
cd "$(dirname "$0")"
env=${1:-}
artifact=${2:-}
case $env in
    staging | production) ;;
    *) echo "usage: deploy.sh <staging|production> <artifact> (got env '$env')" >&2; exit 2 ;;
esac
case $artifact in
    dist/*.tar.gz) case $artifact in *..*) artifact= ;; esac ;;
    *) artifact= ;;
esac
[ -n "$artifact" ] || { echo "the artifact must be a dist/*.tar.gz built by build.sh (got '${2:-}')" >&2; exit 2; }
[ -f "$artifact" ] || { echo "no artifact '$artifact': build first" >&2; exit 2; }
dir=.deployments/$env
release=$(basename "$artifact" .tar.gz)-$(date -u +%Y%m%dT%H%M%SZ)-$$
mkdir -p "$dir/releases/$release"
tar -xzf "$artifact" -C "$dir/releases/$release"
echo "$release" >> "$dir/history"
echo "$release" > "$dir/current"
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $env $*" >> .deployments/deploy.log; }
log "deployed $release"
echo "deployed $release to $env"
why=""
sh "$dir/releases/$release/app.sh" | grep -q '^hello' || why="the app does not greet"
[ ! -e .fail-deploy ] || why="the demo switch .fail-deploy is set"
if [ -n "$why" ]; then
    log "health check FAILED for $release"
    echo "health check failed on $env for $release: $why" >&2
    exit 1
fi
log "healthy $release"
printf '{"env": "%s", "release": "%s"}\n' "$env" "$release"
