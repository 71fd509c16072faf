# Sourced by the bench scripts (active_calls.sh, soak.sh): the release binary, free
# loopback ports, and a siphook started on a config and waited for until ready.

BIN=${SIPHOOK_BIN:-target/release/siphook}
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
[ -x "$BIN" ] || cargo build --release --locked

# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_siphook CONFIG ADMIN_PORT [STDERR_FILE]: runs siphook in the background
# (its pid in $pid) and waits, bounded, for /readyz.
start_siphook() {
  chmod 600 "$1" # it holds the endpoint secret
  "$BIN" run --config "$1" 2>"${3:-/dev/stderr}" &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "siphook did not become ready on :$2" >&2
  return 1
}
