#!/usr/bin/env bash
# M1 smoke test against a RUNNING gateway: health, idempotency, retries and the dead letter,
# cancel, callback allowlist (and delivery, when the gateway allows loopback callbacks).
#
# Usage:
#   scripts/smoke.sh
#
# Environment:
#   RAUSKU_URL        gateway base URL (default http://127.0.0.1:8787)
#   RAUSKU_API_KEY    an operator or admin key (default: contents of $RAUSKU_DATA_DIR/admin.key)
#   RAUSKU_DATA_DIR   where admin.key (and callback.secret) are read from (default ./data)
#   RAUSKU_CALLBACK_SECRET  if set, the callback signature is verified with it (otherwise with
#                     $RAUSKU_DATA_DIR/callback.secret when that file is readable)
#   SMOKE_TIMEOUT     seconds to wait for each asynchronous outcome (default 30)
#
# To also exercise callback delivery, start the gateway with
#   RAUSKU_CALLBACK_ALLOWLIST=127.0.0.1 RAUSKU_CALLBACK_ALLOW_PRIVATE=true
# (RAUSKU_RETRY_BASE_MS=50 makes the retry checks faster; the default 500 ms works too).
#
# Prints `ok - ...`, `FAIL - ...: why` or `skip - ...` per check and a last summary line.
# Exit status: 0 when every check passed, 1 otherwise. Needs bash, curl and python3.
set -euo pipefail

URL=${RAUSKU_URL:-http://127.0.0.1:8787}
URL=${URL%/}
DATA_DIR=${RAUSKU_DATA_DIR:-./data}
TIMEOUT=${SMOKE_TIMEOUT:-30}

passed=0
failed=0
skipped=0
RECEIVER_PID=""
STATUS=""

for tool in curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "smoke: $tool is required but was not found in PATH" >&2
        exit 1
    fi
done
if ! [[ $TIMEOUT =~ ^[0-9]+$ ]] || ((TIMEOUT == 0)); then
    echo "smoke: SMOKE_TIMEOUT must be a positive whole number of seconds, got '$TIMEOUT'" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rausku-smoke.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $RECEIVER_PID ]]; then
        kill "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- reporting -------------------------------------------------------------------------------

ok() {
    passed=$((passed + 1))
    echo "ok - $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL - $1: $2"
}

skip() {
    skipped=$((skipped + 1))
    echo "skip - $1"
}

summary() {
    local extra=""
    if ((skipped > 0)); then
        extra=" ($skipped skipped)"
    fi
    if ((failed > 0)); then
        echo "smoke: FAILED - $failed of $((passed + failed)) checks did not pass$extra"
        exit 1
    fi
    echo "smoke: $passed checks passed$extra"
    exit 0
}

# Ends the run early (e.g. gateway unreachable): the remaining checks could only time out.
bail() {
    fail "$1" "$2"
    echo "smoke: stopping early"
    summary
}

# --- HTTP and JSON helpers -------------------------------------------------------------------

# api METHOD PATH [JSON_BODY [HEADER...]]
# Sets STATUS (000 when the request itself failed); the body is in $TMP/body, the response
# headers in $TMP/headers. The key is passed through a file so it does not show up in `ps`.
api() {
    local method=$1 path=$2 body=${3-}
    shift 2
    if (($# > 0)); then shift; fi
    local args=(-sS -X "$method" -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' --max-time 15)
    if [[ -s $TMP/auth ]]; then
        args+=(-H "@$TMP/auth")
    fi
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    local h
    for h in "$@"; do
        args+=(-H "$h")
    done
    : >"$TMP/body"
    : >"$TMP/headers"
    STATUS=$(curl "${args[@]}" "$URL$path" 2>"$TMP/curl.err") || STATUS=000
}

# A short description of the last response, for FAIL lines.
why() {
    if [[ $STATUS == 000 ]]; then
        printf 'request failed: %s' "$(tr '\n' ' ' <"$TMP/curl.err")"
    else
        printf 'HTTP %s %s' "$STATUS" "$(head -c 300 "$TMP/body" | tr '\n' ' ')"
    fi
}

# jget DOTTED.PATH [FILE]: the value at PATH in the JSON of FILE (default: the last response
# body). Strings are printed raw, other values as JSON; missing values as an empty line.
jget() {
    python3 - "$1" "${2:-$TMP/body}" <<'PY'
import json, sys
path, file = sys.argv[1], sys.argv[2]
try:
    with open(file, encoding="utf-8") as f:
        v = json.load(f)
except Exception:
    v = None
for part in [p for p in path.split(".") if p]:
    if isinstance(v, dict):
        v = v.get(part)
    elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
        v = v[int(part)]
    else:
        v = None
print("" if v is None else v if isinstance(v, str) else json.dumps(v))
PY
}

# hget NAME: the value of response header NAME of the last response (case-insensitive).
hget() {
    local name
    name=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')
    tr -d '\r' <"$TMP/headers" | awk -v n="$name" '
        { i = index($0, ":"); if (i > 0 && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); print v; exit } }'
}

# wait_state ID "STATE..." : polls GET /v1/jobs/ID until its state is one of STATES or the
# deadline passes (returns 1). Leaves JOB_STATE and JOB_ATTEMPT, and the job in $TMP/body.
wait_state() {
    local id=$1 want=" $2 " deadline=$((SECONDS + TIMEOUT))
    JOB_STATE=""
    JOB_ATTEMPT=""
    while :; do
        api GET "/v1/jobs/$id"
        if [[ $STATUS == 200 ]]; then
            JOB_STATE=$(jget state)
            JOB_ATTEMPT=$(jget attempt)
            if [[ $want == *" $JOB_STATE "* ]]; then
                return 0
            fi
        fi
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

TERMINAL="succeeded failed cancelled"

# create_job WHAT JSON [HEADER...]: POST /v1/jobs expecting 201; sets JOB_ID (empty, after a
# FAIL line naming WHAT, when the job was not created).
create_job() {
    local what=$1 body=$2
    shift 2
    JOB_ID=""
    api POST /v1/jobs "$body" "$@"
    if [[ $STATUS == 201 ]]; then
        JOB_ID=$(jget id)
    else
        fail "$what" "POST /v1/jobs expected 201, got $(why)"
    fi
}

new_token() {
    python3 -c 'import uuid; print(uuid.uuid4().hex)'
}

# --- 1. health and auth ----------------------------------------------------------------------

echo "# smoke against $URL (timeout ${TIMEOUT}s per wait)"

api GET /health
if [[ $STATUS == 200 && $(jget status) == ok ]]; then
    ok "health: GET /health is ok (version $(jget version), store $(jget store))"
else
    bail "health: GET /health" "expected 200 with status ok, got $(why)"
fi

API_KEY=${RAUSKU_API_KEY:-}
if [[ -z $API_KEY ]]; then
    if [[ -r $DATA_DIR/admin.key ]]; then
        API_KEY=$(tr -d '[:space:]' <"$DATA_DIR/admin.key")
    else
        bail "auth: API key" "RAUSKU_API_KEY is not set and $DATA_DIR/admin.key is not readable (set RAUSKU_API_KEY or RAUSKU_DATA_DIR)"
    fi
fi
(
    umask 077
    printf 'Authorization: Bearer %s\n' "$API_KEY" >"$TMP/auth"
)

api GET /v1/runtime
if [[ $STATUS == 200 ]]; then
    cp "$TMP/body" "$TMP/runtime.json"
    ok "auth: GET /v1/runtime with the API key"
elif [[ $STATUS == 401 || $STATUS == 403 ]]; then
    bail "auth: GET /v1/runtime" "the API key was refused ($(why)); use an admin or operator key of this gateway"
else
    bail "auth: GET /v1/runtime" "$(why)"
fi

# Suffix that keeps this run's jobs apart from earlier runs.
RUN=$(new_token)

# --- 2. idempotency --------------------------------------------------------------------------

IDEM_KEY="smoke-$RUN"
body_a='{"type":"echo","input":{"smoke":"idempotency","run":"'"$RUN"'"}}'
body_b='{"type":"echo","input":{"smoke":"idempotency","run":"'"$RUN"'","other":true}}'

api POST /v1/jobs "$body_a" "Idempotency-Key: $IDEM_KEY"
idem_id=""
if [[ $STATUS == 201 ]]; then
    idem_id=$(jget id)
    ok "idempotency: first POST with Idempotency-Key $IDEM_KEY -> 201 (job $idem_id)"
else
    fail "idempotency: first POST with Idempotency-Key" "expected 201, got $(why)"
fi

if [[ -n $idem_id ]]; then
    api POST /v1/jobs "$body_a" "Idempotency-Key: $IDEM_KEY"
    replayed=$(hget Idempotent-Replayed)
    if [[ $STATUS == 200 && $replayed == true && $(jget id) == "$idem_id" ]]; then
        ok "idempotency: same key + same body -> 200, Idempotent-Replayed: true, same job"
    else
        fail "idempotency: same key + same body" "expected 200 with Idempotent-Replayed: true and id $idem_id; got header '$replayed', id '$(jget id)', $(why)"
    fi

    api POST /v1/jobs "$body_b" "Idempotency-Key: $IDEM_KEY"
    if [[ $STATUS == 409 && $(jget error.code) == idempotency_conflict ]]; then
        ok "idempotency: same key + another body -> 409 idempotency_conflict"
    else
        fail "idempotency: same key + another body" "expected 409 idempotency_conflict, got $(why)"
    fi

    if wait_state "$idem_id" "$TERMINAL" && [[ $JOB_STATE == succeeded ]]; then
        ok "lifecycle: echo job ran to succeeded"
    else
        fail "lifecycle: echo job" "expected succeeded within ${TIMEOUT}s, state is '$JOB_STATE'"
    fi
fi

# --- 3. retries and the dead letter ----------------------------------------------------------

create_job "retry: flaky {fail_times: 2}, max_attempts 3" \
    '{"type":"flaky","input":{"fail_times":2},"max_attempts":3}'
flaky_ok=$JOB_ID
create_job "retry: flaky {fail_times: 5}, max_attempts 2" \
    '{"type":"flaky","input":{"fail_times":5},"max_attempts":2}'
flaky_dead=$JOB_ID

if [[ -n $flaky_ok ]]; then
    if wait_state "$flaky_ok" "$TERMINAL" && [[ $JOB_STATE == succeeded && $JOB_ATTEMPT == 3 ]]; then
        ok "retry: flaky {fail_times: 2}, max_attempts 3 -> succeeded on attempt 3"
    else
        fail "retry: flaky {fail_times: 2}, max_attempts 3" "expected succeeded with attempt 3 within ${TIMEOUT}s, got state '$JOB_STATE' attempt '$JOB_ATTEMPT'"
    fi
fi

if [[ -n $flaky_dead ]]; then
    if wait_state "$flaky_dead" "$TERMINAL" && [[ $JOB_STATE == failed && $JOB_ATTEMPT == 2 ]]; then
        ok "retry: flaky {fail_times: 5}, max_attempts 2 -> failed after attempt 2 (dead letter)"

        api GET "/v1/jobs?state=failed&type=flaky&limit=500"
        if [[ $STATUS == 200 ]] && python3 - "$TMP/body" "$flaky_dead" <<'PY'; then
import json, sys
jobs = json.load(open(sys.argv[1], encoding="utf-8")).get("jobs", [])
sys.exit(0 if any(j.get("id") == sys.argv[2] for j in jobs) else 1)
PY
            ok "dead letter: the job is listed by GET /v1/jobs?state=failed"
        else
            fail "dead letter: GET /v1/jobs?state=failed" "job $flaky_dead is not listed; $(why)"
        fi

        api POST "/v1/jobs/$flaky_dead/retry"
        if [[ $STATUS == 200 && $(jget state) == queued ]]; then
            ok "dead letter: POST /v1/jobs/{id}/retry -> 200, queued again"
        else
            fail "dead letter: POST /v1/jobs/{id}/retry" "expected 200 with state queued, got $(why)"
        fi
    else
        fail "retry: flaky {fail_times: 5}, max_attempts 2" "expected failed with attempt 2 within ${TIMEOUT}s, got state '$JOB_STATE' attempt '$JOB_ATTEMPT'"
    fi
fi

# --- 4. cancel -------------------------------------------------------------------------------

create_job "cancel: sleep {ms: 30000}" '{"type":"sleep","input":{"ms":30000}}'
sleeper=$JOB_ID
if [[ -n $sleeper ]]; then
    if wait_state "$sleeper" "running $TERMINAL" && [[ $JOB_STATE == running ]]; then
        api POST "/v1/jobs/$sleeper/cancel"
        if [[ $STATUS == 200 && $(jget state) == cancelled ]]; then
            # The stopped attempt must not overwrite the cancellation.
            sleep 0.5
            if wait_state "$sleeper" "$TERMINAL" && [[ $JOB_STATE == cancelled ]]; then
                ok "cancel: running sleep job -> POST cancel -> cancelled"
            else
                fail "cancel: running sleep job" "cancel answered cancelled but the job is now '$JOB_STATE'"
            fi
            api POST "/v1/jobs/$sleeper/cancel"
            if [[ $STATUS == 409 && $(jget error.code) == invalid_state ]]; then
                ok "cancel: cancelling a finished job -> 409 invalid_state"
            else
                fail "cancel: cancelling a finished job" "expected 409 invalid_state, got $(why)"
            fi
        else
            fail "cancel: POST /v1/jobs/{id}/cancel" "expected 200 with state cancelled, got $(why)"
        fi
    else
        fail "cancel: sleep {ms: 30000}" "expected running within ${TIMEOUT}s, state is '$JOB_STATE'"
        api POST "/v1/jobs/$sleeper/cancel" # do not leave it sleeping
    fi
fi

# --- 5. callbacks ----------------------------------------------------------------------------

api POST /v1/jobs '{"type":"echo","input":{"smoke":"callback-refused"},"callback_url":"https://not-allowlisted.invalid/hook"}'
if [[ $STATUS == 400 && $(jget error.details.field) == callback_url ]]; then
    ok "callback allowlist: a host not on the allowlist -> 400 naming callback_url"
else
    fail "callback allowlist: a host not on the allowlist" "expected 400 with error.details.field callback_url, got $(why)"
fi

allowlist=$(jget config.callback_allowlist "$TMP/runtime.json")
allow_private=$(jget config.callback_allow_private "$TMP/runtime.json")
if [[ $allowlist != *'"127.0.0.1"'* || $allow_private != true ]]; then
    skip "callback delivery (gateway not configured for loopback callbacks)"
    summary
fi

# A one-shot receiver: writes the body and signature of the first POST, answers 204, exits
# (or exits after the timeout).
python3 - "$TMP" "$((TIMEOUT + 5))" <<'PY' &
import http.server, os, sys, time
out, timeout = sys.argv[1], float(sys.argv[2])

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(os.path.join(out, "cb.body"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, "cb.sig"), "w") as f:
            f.write(self.headers.get("X-Rausku-Signature", ""))
        self.send_response(204)
        self.end_headers()
        os.replace(os.path.join(out, "cb.sig"), os.path.join(out, "cb.sig.done"))
        self.server.done = True

    def log_message(self, *args):
        pass

srv = http.server.HTTPServer(("127.0.0.1", 0), Hook)
srv.done = False
srv.timeout = 0.25
with open(os.path.join(out, "cb.port.tmp"), "w") as f:
    f.write(str(srv.server_address[1]))
os.replace(os.path.join(out, "cb.port.tmp"), os.path.join(out, "cb.port"))
deadline = time.monotonic() + timeout
while not srv.done and time.monotonic() < deadline:
    srv.handle_request()
PY
RECEIVER_PID=$!

deadline=$((SECONDS + 10))
while [[ ! -s $TMP/cb.port ]] && ((SECONDS < deadline)); do
    sleep 0.1
done
if [[ ! -s $TMP/cb.port ]]; then
    fail "callback delivery: local receiver" "the python3 receiver did not start"
    summary
fi
port=$(<"$TMP/cb.port")
hook="http://127.0.0.1:$port/hook"

after=$(jget store.durable_global_seq "$TMP/runtime.json")
after=${after:-0}
create_job "callback delivery: echo job with callback_url $hook" \
    '{"type":"echo","input":{"smoke":"callback","run":"'"$RUN"'"},"callback_url":"'"$hook"'"}'
cb_job=$JOB_ID
if [[ -z $cb_job ]]; then
    summary
fi

deadline=$((SECONDS + TIMEOUT))
while [[ ! -e $TMP/cb.sig.done ]] && ((SECONDS < deadline)); do
    sleep 0.2
done
if [[ ! -e $TMP/cb.sig.done ]]; then
    wait_state "$cb_job" "$TERMINAL" || true
    fail "callback delivery: receiver" "nothing arrived at $hook within ${TIMEOUT}s (job state '$JOB_STATE')"
    summary
fi

cb_id=$(jget id "$TMP/cb.body")
cb_state=$(jget state "$TMP/cb.body")
if [[ $cb_id == "$cb_job" && $cb_state == succeeded ]]; then
    ok "callback delivery: the receiver got the finished job (succeeded) as JSON"
else
    fail "callback delivery: callback body" "expected job $cb_job in state succeeded, got id '$cb_id' state '$cb_state'"
fi

# Verify the signature when the secret is known here; otherwise check its shape.
secret_file=""
if [[ -z ${RAUSKU_CALLBACK_SECRET:-} && -r $DATA_DIR/callback.secret ]]; then
    secret_file=$DATA_DIR/callback.secret
fi
sig_result=$(RAUSKU_CALLBACK_SECRET=${RAUSKU_CALLBACK_SECRET:-} python3 - "$TMP/cb.body" "$TMP/cb.sig.done" "$secret_file" <<'PY'
import hashlib, hmac, os, re, sys
body = open(sys.argv[1], "rb").read()
sig = open(sys.argv[2]).read().strip()
secret = os.environ.get("RAUSKU_CALLBACK_SECRET", "")
source = "RAUSKU_CALLBACK_SECRET"
if not secret and sys.argv[3]:
    secret, source = open(sys.argv[3]).read().strip(), sys.argv[3]
if not re.fullmatch(r"sha256=[0-9a-f]{64}", sig):
    print(f"bad: X-Rausku-Signature is {sig!r}, expected sha256=<64 hex digits>")
elif not secret:
    print("shape: X-Rausku-Signature is sha256=<hex> (secret unknown here, not verified)")
elif hmac.compare_digest(sig, "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()):
    print(f"verified: X-Rausku-Signature verifies with the secret from {source}")
else:
    print(f"bad: X-Rausku-Signature does not verify with the secret from {source} (is it this gateway's secret?)")
PY
) || sig_result="bad: cannot check the signature (python3 failed)"
if [[ $sig_result == bad:* ]]; then
    fail "callback delivery: signature" "${sig_result#bad: }"
else
    ok "callback delivery: ${sig_result#*: }"
fi

# The delivery is recorded as a callback.delivered event of the job's stream.
deadline=$((SECONDS + TIMEOUT))
found=""
while :; do
    api GET "/v1/events?after=$after&limit=1000"
    if [[ $STATUS == 200 ]]; then
        result=$(python3 - "$TMP/body" "job:$cb_job" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
hit = any(e.get("stream") == sys.argv[2] and e.get("kind") == "callback.delivered" for e in d.get("events", []))
print("found" if hit else d.get("next_after", 0))
PY
) || result=""
        if [[ $result == found ]]; then
            found=yes
            break
        fi
        if [[ $result != "$after" ]]; then
            after=$result # more pages: read on without sleeping
            continue
        fi
    fi
    if ((SECONDS >= deadline)); then
        break
    fi
    sleep 0.2
done
if [[ -n $found ]]; then
    ok "callback delivery: GET /v1/events shows callback.delivered for the job"
else
    fail "callback delivery: events" "no callback.delivered event for job:$cb_job in GET /v1/events within ${TIMEOUT}s (last: $(why))"
fi

summary
