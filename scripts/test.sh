#!/usr/bin/env bash
# The project's one test command: formatting, lints and tests of the whole workspace.
#
# Usage:
#   scripts/test.sh            run every step, in order
#   scripts/test.sh STEP...    run only these steps (e.g. `scripts/test.sh clippy test`)
#   scripts/test.sh --list     list the steps
#
# Non-interactive (CI=true, no stdin is fine); stops at the first failing step.
#
# Adding a step: write a function `step_<name>` (and, if it needs a tool, an `ensure_<tool>`
# function it calls first), then add <name> to STEPS below.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The steps, in the order they run.
STEPS=(fmt clippy test)

# --- helpers ---------------------------------------------------------------------------------

die() {
    echo "test.sh: $*" >&2
    exit 1
}

header() {
    printf '\n==> %s\n' "$*"
}

# run CMD...: prints the command, then runs it.
run() {
    printf '+ %s\n' "$*"
    "$@"
}

# Names the failing step when the script ends with an error.
CURRENT_STEP=""
# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -n $CURRENT_STEP ]]; then
        echo "test.sh: step '$CURRENT_STEP' failed (exit $rc)" >&2
    fi
}
trap on_exit EXIT

# ensure_cmd NAME HINT: fails with HINT when NAME is not on PATH.
ensure_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found in PATH; $2"
}

ensure_cargo() {
    ensure_cmd cargo "install Rust with rustup (https://rustup.rs) or put ~/.cargo/bin on PATH"
}

ensure_rustfmt() {
    ensure_cargo
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing; install it with: rustup component add rustfmt"
}

ensure_clippy() {
    ensure_cargo
    cargo clippy --version >/dev/null 2>&1 || die "clippy is missing; install it with: rustup component add clippy"
}

# --- steps -----------------------------------------------------------------------------------

step_fmt() {
    ensure_rustfmt
    run cargo fmt --all -- --check
}

step_clippy() {
    ensure_clippy
    run cargo clippy --workspace --all-targets --locked -- -D warnings
}

step_test() {
    ensure_cargo
    run cargo test --workspace --locked
}

# --- main ------------------------------------------------------------------------------------

main() {
    if [[ ${1-} == --list ]]; then
        printf '%s\n' "${STEPS[@]}"
        return 0
    fi
    local steps=("$@")
    if ((${#steps[@]} == 0)); then
        steps=("${STEPS[@]}")
    fi
    local step
    for step in "${steps[@]}"; do
        declare -F "step_$step" >/dev/null || die "unknown step '$step' (steps: ${STEPS[*]})"
    done

    # Check every tool up front so a missing one is reported before a long build.
    ensure_cargo
    for step in "${steps[@]}"; do
        case $step in
            fmt) ensure_rustfmt ;;
            clippy) ensure_clippy ;;
            *) ;;
        esac
    done

    local started=$SECONDS t
    for step in "${steps[@]}"; do
        header "$step"
        CURRENT_STEP=$step
        t=$SECONDS
        "step_$step" </dev/null
        echo "--> $step ok ($((SECONDS - t))s)"
    done
    CURRENT_STEP=""
    printf '\ntest.sh: all steps passed (%s) in %ss\n' "${steps[*]}" "$((SECONDS - started))"
}

main "$@"
