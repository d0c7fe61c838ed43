#!/bin/sh
# Builds the sample app into dist/app-<ref>.tar.gz.    Usage: sh build.sh [ref]
# The last line of output is JSON the playbooks read: {"artifact": ..., "ref": ..., "version": ...}
set -eu
cd "$(dirname "$0")"
ref=$(printf '%s' "${1:-main}" | tr -c 'A-Za-z0-9._-' '-')
version=$(cat VERSION)
echo "building sample-app $version at $ref"
rm -rf build
mkdir -p build dist
cp src/* VERSION build/
printf 'version=%s\nref=%s\n' "$version" "$ref" > build/BUILD_INFO
artifact=dist/app-$ref.tar.gz
tar -czf "$artifact" -C build .
echo "packed $(ls build | wc -l | tr -d ' ') files into $artifact"
printf '{"artifact": "%s", "ref": "%s", "version": "%s"}\n' "$artifact" "$ref" "$version"
