#!/bin/sh
# Builds the IP2SMS answer parser's libFuzzer target (clang,
# -fsanitize=fuzzer,address,undefined) into OUTDIR and runs it briefly.
# Usage: test/fuzz/run-smoke.sh OUTDIR [RUNS]   (RUNS default 20000)
# Prints one summary line; exits non-zero when the build fails or the
# fuzzer finds a crash, a leak or undefined behaviour.
set -u
out=${1:?usage: run-smoke.sh OUTDIR [RUNS]}
runs=${2:-20000}
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../../src
mkdir -p "$out/corpus"
cp "$here"/corpus/* "$out/corpus/"

if ! clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$src" $(xml2-config --cflags) -o "$out/fuzz_answer" \
	"$here/fuzz_answer.c" "$src/ip2sms_xml.c" $(xml2-config --libs) \
	>"$out/build.log" 2>&1; then
	cat "$out/build.log"
	echo "fuzz smoke: build FAILED"
	exit 1
fi

"$out/fuzz_answer" -runs="$runs" -max_len=4096 -seed=1 \
	-artifact_prefix="$out/" "$out/corpus" >"$out/fuzz.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	tail -40 "$out/fuzz.log"
	echo "fuzz smoke: answer parser CRASHED (exit $rc), artifacts in $out"
	exit 1
fi
echo "fuzz smoke: answer parser ran $runs executions clean ($(grep -o 'cov: [0-9]*' "$out/fuzz.log" | tail -1))"
