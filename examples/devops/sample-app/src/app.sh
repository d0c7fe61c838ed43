#!/bin/sh
# The sample app: prints a greeting with its version and the port it would listen on.
set -eu
here=$(dirname "$0")
. "$here/config.env"
echo "hello from sample-app $(cat "$here/VERSION" 2>/dev/null || echo dev) on port $PORT"
