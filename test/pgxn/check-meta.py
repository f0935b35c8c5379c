#!/usr/bin/env python3
"""Checks a META.json against the PGXN Meta Spec 1.0 (https://pgxn.org/meta/spec.txt).

Debian packages no PGXN validator, so this checker applies the spec's rules
itself: the required keys, the types of every key the spec defines, SemVer
versions and version ranges, terms, the license names the spec lists, the
prereq phases and relationships, no key outside the spec but x_ ones. It also
checks what the spec leaves to the distribution: each provided extension's
file exists and the versions match the control file's default_version.

Usage: check-meta.py [META.json] [--control smsdispatch.control]
Prints each violation and exits 1 if there is any; prints "META.json: valid"
otherwise.
"""

import json
import os
import re
import sys
import unicodedata

SEMVER = (r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
          r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
          r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
RANGE_PART = r"(?:(?:[=!]=|[<>]=?)\s*)?(?:" + SEMVER + r"|0)"
RANGE = re.compile(r"^" + RANGE_PART + r"(?:,\s*" + RANGE_PART + r")*$")
VERSION = re.compile(r"^" + SEMVER + r"$")
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONSHIPS = {"requires", "recommends", "suggests", "conflicts"}
SPEC_URLS = {"https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"}
URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

errors = []


def error(where, what):
    errors.append(f"{where}: {what}")


def is_custom(key):
    return re.match(r"^[xX]_.", key) is not None


def control_char(c):
    return unicodedata.category(c) == "Cc"


def check_term(where, value, spaces_allowed=False):
    """A term: at least two characters, no slash, backslash, space or control character."""
    if not isinstance(value, str) or len(value) < 2:
        error(where, f"{value!r} is not a term of at least two characters")
        return
    for c in value:
        if c in "/\\" or control_char(c) or (not spaces_allowed and c.isspace()):
            error(where, f"{value!r} has {c!r}, which a term may not have")
            return


def check_string(where, value, min_length=1):
    if not isinstance(value, str) or len(value) < min_length:
        error(where, f"{value!r} is not a string of at least {min_length} characters")
        return False
    return True


def check_version(where, value):
    if not isinstance(value, str) or not VERSION.match(value):
        error(where, f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH)")


def check_keys(where, obj, allowed, required=(), any_of=()):
    """An object whose keys are the allowed ones (or x_ keys) with the required ones present."""
    if not isinstance(obj, dict):
        error(where, f"{obj!r} is not an object")
        return False
    for key in obj:
        if key not in allowed and not is_custom(key):
            error(where, f"key {key!r} is not in the spec (custom keys start with x_)")
    for key in required:
        if key not in obj:
            error(where, f"required key {key!r} is missing")
    if any_of and not any(k in obj for k in any_of):
        error(where, f"needs at least one of {', '.join(sorted(any_of))}")
    return True


def check_path(where, value):
    if not check_string(where, value, 2):
        return
    if value.startswith("/") or "\\" in value:
        error(where, f"{value!r} is not a relative path in unix form")


def check_license(value):
    if isinstance(value, str):
        if value not in LICENSES:
            error("license", f"{value!r} is not a license name of the spec")
    elif isinstance(value, list):
        if not value:
            error("license", "an empty list")
        if len(set(map(str, value))) != len(value):
            error("license", "names a license twice")
        for item in value:
            if item not in LICENSES:
                error("license", f"{item!r} is not a license name of the spec")
    elif isinstance(value, dict):
        if not value:
            error("license", "an empty object")
        for name, uri in value.items():
            if not isinstance(uri, str) or not URI.match(uri):
                error(f"license.{name}", f"{uri!r} is not a URI")
    else:
        error("license", f"{value!r} is neither a name, a list of names nor an object")


def check_maintainer(value):
    if isinstance(value, list):
        if not value or len(set(map(str, value))) != len(value):
            error("maintainer", "must be a non-empty list of distinct strings")
        for item in value:
            check_string("maintainer", item)
    else:
        check_string("maintainer", value)


def check_provides(value, root, control_version):
    if not isinstance(value, dict) or not value:
        error("provides", "must be an object naming at least one extension")
        return
    for name, ext in value.items():
        where = f"provides.{name}"
        check_term(where, name)
        if not check_keys(where, ext, {"file", "version", "abstract", "docfile", "docpath"},
                          required=("file", "version")):
            continue
        if "file" in ext:
            check_path(f"{where}.file", ext["file"])
            if isinstance(ext["file"], str) and not os.path.exists(os.path.join(root, ext["file"])):
                error(f"{where}.file", f"{ext['file']!r} does not exist in the distribution")
        if "docfile" in ext:
            check_path(f"{where}.docfile", ext["docfile"])
            if isinstance(ext["docfile"], str) and not os.path.exists(os.path.join(root, ext["docfile"])):
                error(f"{where}.docfile", f"{ext['docfile']!r} does not exist in the distribution")
        if "version" in ext:
            check_version(f"{where}.version", ext["version"])
            if control_version and ext["version"] != control_version:
                error(f"{where}.version",
                      f"{ext['version']!r} differs from the control file's default_version ({control_version})")
        for key in ("abstract", "docpath"):
            if key in ext:
                check_string(f"{where}.{key}", ext[key])


def check_prereqs(value):
    if not check_keys("prereqs", value, PHASES, any_of=PHASES):
        return
    for phase, rels in value.items():
        if is_custom(phase):
            continue
        where = f"prereqs.{phase}"
        if not check_keys(where, rels, RELATIONSHIPS, any_of=RELATIONSHIPS):
            continue
        for rel, prereqs in rels.items():
            if is_custom(rel):
                continue
            w = f"{where}.{rel}"
            if not isinstance(prereqs, dict) or not prereqs:
                error(w, "must be an object naming at least one prerequisite")
                continue
            for name, version_range in prereqs.items():
                check_term(f"{w}", name)
                if version_range == 0:
                    continue
                if not isinstance(version_range, str) or not RANGE.match(version_range):
                    error(f"{w}.{name}", f"{version_range!r} is not a version range")


def check_resources(value):
    if not check_keys("resources", value, {"homepage", "bugtracker", "repository"},
                      any_of=("homepage", "bugtracker", "repository")):
        return
    if "homepage" in value and (not isinstance(value["homepage"], str)
                                or not URI.match(value["homepage"])):
        error("resources.homepage", "is not a URI")
    if "bugtracker" in value:
        bt = value["bugtracker"]
        if check_keys("resources.bugtracker", bt, {"web", "mailto"}, any_of=("web", "mailto")):
            if "web" in bt and (not isinstance(bt["web"], str) or not URI.match(bt["web"])):
                error("resources.bugtracker.web", "is not a URI")
            if "mailto" in bt and (not isinstance(bt["mailto"], str) or not EMAIL.match(bt["mailto"])):
                error("resources.bugtracker.mailto", "is not an e-mail address")
    if "repository" in value:
        repo = value["repository"]
        if check_keys("resources.repository", repo, {"url", "web", "type"}):
            if "web" not in repo and not ("url" in repo and "type" in repo):
                error("resources.repository", "needs web, or url and type")
            for key in ("url", "web"):
                if key in repo and (not isinstance(repo[key], str) or not URI.match(repo[key])):
                    error(f"resources.repository.{key}", "is not a URI")
            if "type" in repo and (not isinstance(repo["type"], str)
                                   or not re.match(r"^[a-z]+$", repo["type"])):
                error("resources.repository.type", "must be lower-case letters")


def check_tags(value):
    if not isinstance(value, list) or not value:
        error("tags", "must be a non-empty list")
        return
    if len(set(map(str, value))) != len(value):
        error("tags", "names a tag twice")
    for tag in value:
        if not isinstance(tag, str) or not 2 <= len(tag) <= 255:
            error("tags", f"{tag!r} is not a tag of 2 to 255 characters")
        else:
            check_term("tags", tag, spaces_allowed=True)


def check_no_index(value):
    if not check_keys("no_index", value, {"file", "directory"}, any_of=("file", "directory")):
        return
    for key in ("file", "directory"):
        if key not in value:
            continue
        items = value[key] if isinstance(value[key], list) else [value[key]]
        if isinstance(value[key], list) and (not items or len(set(map(str, items))) != len(items)):
            error(f"no_index.{key}", "must be a non-empty list of distinct paths")
        for item in items:
            check_path(f"no_index.{key}", item)


def check_meta_spec(value):
    if not check_keys("meta-spec", value, {"version", "url"}, required=("version",)):
        return
    if "version" in value and (not isinstance(value["version"], str)
                               or not re.match(r"^1\.0\.\d+$", value["version"])):
        error("meta-spec.version", f"{value['version']!r}: this checker knows spec 1.0.x only")
    if "url" in value and value["url"] not in SPEC_URLS:
        error("meta-spec.url", f"{value['url']!r} is not the spec's URL")


def control_default_version(path):
    """The control file's default_version as a semantic version (1.1 -> 1.1.0)."""
    with open(path, encoding="utf-8") as f:
        m = re.search(r"^default_version\s*=\s*'([^']*)'", f.read(), re.M)
    if not m:
        error(path, "has no default_version")
        return None
    parts = m.group(1).split(".")
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts)


def main(argv):
    meta_path = "META.json"
    control = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--control":
            control = args.pop(0)
        else:
            meta_path = arg
    root = os.path.dirname(os.path.abspath(meta_path))
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{meta_path}: not readable as JSON: {e}")
        return 1
    control_version = control_default_version(control) if control else None

    top = {"name", "version", "abstract", "maintainer", "license", "provides",
           "meta-spec", "description", "generated_by", "tags", "no_index",
           "prereqs", "release_status", "resources"}
    if check_keys("META.json", meta, top,
                  required=("name", "version", "abstract", "maintainer", "license",
                            "provides", "meta-spec")):
        if "meta-spec" in meta:
            check_meta_spec(meta["meta-spec"])
        if "name" in meta:
            check_term("name", meta["name"])
        if "version" in meta:
            check_version("version", meta["version"])
            if control_version and meta["version"] != control_version:
                error("version", f"{meta['version']!r} differs from the control file's "
                      f"default_version ({control_version})")
        for key in ("abstract", "description", "generated_by"):
            if key in meta:
                check_string(key, meta[key])
        if "maintainer" in meta:
            check_maintainer(meta["maintainer"])
        if "license" in meta:
            check_license(meta["license"])
        if "provides" in meta:
            check_provides(meta["provides"], root, control_version)
        if "release_status" in meta and meta["release_status"] not in ("stable", "testing", "unstable"):
            error("release_status", f"{meta['release_status']!r} is not stable, testing or unstable")
        if "prereqs" in meta:
            check_prereqs(meta["prereqs"])
        if "resources" in meta:
            check_resources(meta["resources"])
        if "tags" in meta:
            check_tags(meta["tags"])
        if "no_index" in meta:
            check_no_index(meta["no_index"])

    for e in errors:
        print(f"{meta_path}: {e}")
    if errors:
        return 1
    print(f"{meta_path}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
