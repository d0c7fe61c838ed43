#!/bin/sh
# Runs the sample app's checks on the last build; the output is kept in .logs/test.log.
# Demo switch: `touch .fail-tests` makes a check fail (remove the file to pass again).
# The last line of output is JSON: {"passed": N, "failed": N}
set -eu
cd "$(dirname "$0")"
mkdir -p .logs
passed=0 failed=0
check() {
    name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}
{
    check "a build exists" test -f build/BUILD_INFO
    check "the app greets" sh -c 'sh build/app.sh | grep -q "^hello from sample-app"'
    check "the version is x.y.z" grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' VERSION
    check "the config sets a port" grep -q '^PORT=[0-9][0-9]*$' src/config.env
    check "no test is forced to fail (.fail-tests)" test ! -e .fail-tests
    echo "$passed passed, $failed failed"
    printf '{"passed": %d, "failed": %d}\n' "$passed" "$failed"
} > .logs/test.log
cat .logs/test.log
[ "$failed" -eq 0 ]
