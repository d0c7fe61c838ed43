#!/bin/sh
# Collects what an on-call person looks at first: what runs where, recent deploys, the last
# test run, disk space. The last line is JSON: {"summary": "..."}
set -eu
cd "$(dirname "$0")"
echo "== deployments"
summary=""
for env in staging production; do
    current=$(cat ".deployments/$env/current" 2>/dev/null || echo none)
    echo "$env: $current"
    summary="$summary$env runs $current; "
done
echo "== recent deploy log"
tail -n 5 .deployments/deploy.log 2>/dev/null || echo "(no deploys yet)"
last=$(tail -n 1 .deployments/deploy.log 2>/dev/null | cut -d' ' -f2- || true)
summary="${summary}last deploy event: ${last:-none}; "
echo "== last test run"
cat .logs/test.log 2>/dev/null || echo "(no test run yet)"
tests=$(grep -E '^[0-9]+ passed' .logs/test.log 2>/dev/null || echo "no test run")
summary="${summary}tests: $tests; "
echo "== disk"
df -P . | tail -n 1
disk=$(df -P . | awk 'NR == 2 { print $5 }')
summary="${summary}disk ${disk} used"
printf '{"summary": "%s"}\n' "$(printf '%s' "$summary" | tr -d '"\\')"
