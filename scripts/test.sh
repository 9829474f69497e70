#!/usr/bin/env bash
# The whole test suite on a fresh machine: prepares the Python venv with pymilvus 1.1.2 and the test tools
# (scripts/install-chromium.sh: headless Chromium; scripts/install-test-tools.sh: helm), then runs the
# Rust tests (SQLite always; MySQL too when MISHARDS_TEST_MYSQL_URL is set) and the Python end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.requirements"
wanted="pymilvus==1.1.2 $(sha256sum tests/e2e/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    echo "== preparing $venv (pymilvus 1.1.2 and test requirements)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps pymilvus==1.1.2
    echo "$wanted" > "$stamp"
fi
export MISHARDS_TEST_PYTHON="$PWD/$venv/bin/python"

# Headless Chromium + chromedriver for the console's browser tests (tests/console_browser.rs); without
# them those tests fail, saying so.
scripts/install-chromium.sh || echo "== chromium could not be installed: the console's browser tests will fail"
# Tools that are neither crates nor Python packages (helm, for the chart's tests), cached in .tools/.
tools_env="$(scripts/install-test-tools.sh)" || echo "== installing the test tools failed: the tests that need them will fail"
while IFS= read -r line; do
    if [[ -n "$line" ]]; then export "$line"; fi
done <<< "${tools_env:-}"

if [[ -n "${MISHARDS_TEST_MYSQL_URL:-}" ]]; then backends="SQLite and MySQL (${MISHARDS_TEST_MYSQL_URL})"; else backends="SQLite only (MISHARDS_TEST_MYSQL_URL is not set: the MySQL tests are skipped)"; fi
echo "== Rust tests of every crate; metadata backends tested: ${backends}"
# The chaos scenarios and the hedging tests compare latencies within a run: they run last, one at a time
# (.config/nextest.toml), with nothing else on the machine.
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast -E 'not (binary(chaos) | binary(hedging))' || status=$?
    echo "== Rust timing-sensitive tests: chaos scenarios and hedging, one at a time"
    cargo nextest run --workspace --no-fail-fast -E 'binary(chaos) | binary(hedging)' || status=$?
else
    cargo test --workspace --no-fail-fast -- --test-threads=1 || status=$?
fi

shopt -s nullglob
e2e=(tests/e2e/test_*.py)
if (( ${#e2e[@]} )); then
    echo "== Python end-to-end tests"
    cargo build --quiet
    MISHARDS_BIN="$PWD/target/debug/mishards" "$venv/bin/python" -m pytest -q -p no:cacheprovider "${e2e[@]}" || status=$?
fi
echo "== metadata backends tested: ${backends}"
exit "$status"
