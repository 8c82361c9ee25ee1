#!/usr/bin/env bash
# rustc wrapper (RUSTC_WRAPPER) for the CI step's fuzz builds (`cargo xtask test`, step fuzz):
# libFuzzer's coverage instrumentation only on the project's own crates.
#
# cargo-fuzz puts its instrumentation flags (`-Cpasses=sancov-module` and the
# `-Cllvm-args=-sanitizer-coverage-*` options) in RUSTFLAGS, so every dependency is compiled
# instrumented too. The CI step runs each target for seconds from its committed corpus, where
# the coverage of third-party code guides nothing, and instrumenting it cost about a seventh of
# the broker fuzz crate's build. Cargo marks third-party crates with `--cap-lints allow` (it
# never caps the lints of path crates); for those this wrapper drops the coverage flags and
# keeps everything else (`--cfg fuzzing`, debug assertions, overflow checks).
# The long run, `cargo xtask fuzz`, does not use this wrapper: it instruments everything.
#
# Usage (by cargo): fuzz-rustc.sh <rustc> <arguments...>
set -euo pipefail

rustc="$1"
shift
third_party=0
previous=""
for arg in "$@"; do
    if [[ "$previous" == "--cap-lints" && "$arg" == "allow" ]]; then
        third_party=1
    fi
    previous="$arg"
done
if [[ "$third_party" == 0 ]]; then
    exec "$rustc" "$@"
fi
kept=()
for arg in "$@"; do
    case "$arg" in
        -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
        *) kept+=("$arg") ;;
    esac
done
exec "$rustc" "${kept[@]}"
