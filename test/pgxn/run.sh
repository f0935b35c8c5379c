#!/bin/sh
# META.json validates against the PGXN Meta Spec (test/pgxn/check-meta.py),
# and the checker rejects each kind of mistake, one mutated copy at a time.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
check="python3 $top/test/pgxn/check-meta.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

ok() {
	if [ "$1" = 0 ]; then passed=$((passed + 1)); echo "ok - $2"; else failed=$((failed + 1)); echo "not ok - $2"; fi
}

$check "$top/META.json" --control "$top/smsdispatch.control"
ok $? "META.json is valid and matches smsdispatch.control"

# mutant DESCRIPTION PYTHON-EXPRESSION: a copy of META.json changed by the
# expression (on the dict m) must be refused
mutant() {
	python3 - "$top/META.json" "$work/META.json" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(m, open(sys.argv[2], "w"))
PY
	cp "$top/smsdispatch.control" "$top/README.md" "$work/"
	out=$($check "$work/META.json" --control "$work/smsdispatch.control")
	rc=$?
	[ $rc != 0 ]
	ok $? "refused: $1 ($(echo "$out" | head -n 1))"
}

mutant "no name" "del m['name']"
mutant "a version that is not SemVer" "m['version'] = '1.1'"
mutant "a version other than the control file's" "m['version'] = m['provides']['smsdispatch']['version'] = '9.0.0'"
mutant "a licence the spec does not name" "m['license'] = ['postgresql', 'gplv2']"
mutant "an extension without its file" "del m['provides']['smsdispatch']['file']"
mutant "an extension file that is not there" "m['provides']['smsdispatch']['file'] = 'nowhere.control'"
mutant "a key outside the spec" "m['homepage'] = 'https://example.org'"
mutant "an unknown prereq phase" "m['prereqs']['install'] = m['prereqs'].pop('runtime')"
mutant "a prereq version that is no range" "m['prereqs']['runtime']['requires']['PostgreSQL'] = 'fifteen'"
mutant "an unknown release status" "m['release_status'] = 'beta'"
mutant "a meta-spec other than 1.0" "m['meta-spec']['version'] = '2.0.0'"
mutant "a tag with a slash" "m['tags'].append('a/b')"

echo "pgxn: $passed passed, $failed failed"
[ $failed = 0 ]
