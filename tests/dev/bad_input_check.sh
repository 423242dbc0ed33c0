# Sourced by the dev benchmarks' bad-input tests: `check EXPECTED-TEXT ARGS...` runs "$bin" ARGS and
# sets fail=1 unless it exits with 1 and prints exactly one line on stderr containing EXPECTED-TEXT.
fail=0
check() {
  local want=$1
  shift
  local err rc
  err=$("$bin" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne 1 ] || [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [[ "$err" != *"$want"* ]]; then
    echo "FAIL: $* gave rc $rc and: $err"
    fail=1
  fi
}
