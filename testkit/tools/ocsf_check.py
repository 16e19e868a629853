#!/usr/bin/env python3
"""Checks OCSF events against the official schema of one OCSF version.

usage: ocsf_check.py SCHEMA_TARBALL EVENTS.jsonl

The schema is the ocsf-schema repository at a release tag (a tarball in testkit/ocsf/),
compiled with ocsf-lib (PyPI, the OCSF project's own compiler) and cached beside the tarball
in $TMPDIR. Every event is checked against its class (by class_uid):

- every attribute is one the class or object defines (unknown attributes refused), except
  inside `unmapped` and attributes of type `json_t`;
- required attributes are present (those a profile adds only when the event declares the
  profile in `metadata.profiles`; an attribute's profile is not required to be declared);
- values have their type (strings, integers, floats, booleans, arrays where `is_array`,
  objects recursively), ip_t and mac_t parse, enum attributes (`*_id`) hold a listed value;
- `metadata.version` is the schema's version, `type_uid` is class_uid * 100 + activity_id.

Prints the number of events checked; exits 1 with one line per problem (event number and
attribute path) if any.
"""

import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

INTEGER = {"integer_t", "long_t", "port_t", "timestamp_t"}
STRINGS = {
    "string_t", "bytestring_t", "datetime_t", "email_t", "file_hash_t", "file_name_t",
    "file_path_t", "hostname_t", "ip_t", "mac_t", "process_name_t", "resource_uid_t",
    "subnet_t", "url_t", "username_t", "uuid_t", "reg_key_path_t",
}
MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def compiled_schema(tarball):
    digest = hashlib.sha256(open(tarball, "rb").read()).hexdigest()[:16]
    cache = os.path.join(tempfile.gettempdir(), f"wardgate-ocsf-{digest}.json")
    if os.path.exists(cache):
        return json.load(open(cache))
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(tarball) as t:
            t.extractall(d, filter="data")
        (root,) = os.listdir(d)
        out = subprocess.run(
            [sys.executable, "-m", "ocsf.compile", os.path.join(d, root)],
            capture_output=True, text=True, check=True,
        ).stdout
    tmp = cache + ".tmp"
    with open(tmp, "w") as f:
        f.write(out)
    os.replace(tmp, cache)
    return json.loads(out)


class Checker:
    def __init__(self, schema, version):
        self.schema = schema
        self.version = version
        self.by_uid = {c["uid"]: c for c in schema["classes"].values()}
        self.problems = []

    def fail(self, n, path, msg):
        self.problems.append(f"event {n}: {path or '<event>'}: {msg}")

    def scalar(self, n, path, t, v, enum):
        if t in INTEGER:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif t == "float_t":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif t == "boolean_t":
            ok = isinstance(v, bool)
        elif t in STRINGS:
            ok = isinstance(v, str)
            if ok and t == "ip_t":
                try:
                    ipaddress.ip_address(v)
                except ValueError:
                    return self.fail(n, path, f"not an IP address: {v!r}")
            if ok and t == "mac_t" and not MAC.match(v):
                return self.fail(n, path, f"not a MAC address: {v!r}")
        elif t == "json_t":
            ok = True
        else:
            return self.fail(n, path, f"unknown type {t}")
        if not ok:
            return self.fail(n, path, f"{type(v).__name__} where the schema has {t}")
        if enum and str(v) not in enum:
            self.fail(n, path, f"{v!r} is not one of {sorted(enum, key=int)}")

    def value(self, n, path, attr, v):
        t = attr["type"]
        if attr.get("is_array"):
            if not isinstance(v, list):
                return self.fail(n, path, f"{type(v).__name__} where the schema has an array")
            for i, x in enumerate(v):
                self.one(n, f"{path}[{i}]", t, x, attr.get("enum"))
        else:
            self.one(n, path, t, v, attr.get("enum"))

    def one(self, n, path, t, v, enum):
        if t == "object":  # free-form (unmapped)
            if not isinstance(v, dict):
                self.fail(n, path, "not an object")
            return
        if t in self.schema["objects"]:
            if not isinstance(v, dict):
                return self.fail(n, path, f"{type(v).__name__} where the schema has object {t}")
            return self.attributes(n, path, self.schema["objects"][t]["attributes"], v)
        self.scalar(n, path, t, v, enum)

    def attributes(self, n, path, attrs, obj, profiles=()):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if k not in attrs:
                self.fail(n, p, "not an attribute of this class or object")
                continue
            if v is None:
                self.fail(n, p, "null")
                continue
            self.value(n, p, attrs[k], v)
        for k, a in attrs.items():
            # An attribute a profile adds is required only of events that declare the profile.
            if a.get("profile") and a["profile"] not in profiles:
                continue
            if a.get("requirement") == "required" and k not in obj:
                self.fail(n, f"{path}.{k}" if path else k, "required, missing")

    def event(self, n, e):
        cls = self.by_uid.get(e.get("class_uid"))
        if cls is None:
            return self.fail(n, "class_uid", f"no class {e.get('class_uid')!r}")
        profiles = e.get("metadata", {}).get("profiles", [])
        self.attributes(n, "", cls["attributes"], e, profiles)
        if e.get("metadata", {}).get("version") != self.version:
            self.fail(n, "metadata.version", f"{e.get('metadata', {}).get('version')!r}, the schema is {self.version}")
        if e.get("type_uid") != e.get("class_uid", 0) * 100 + e.get("activity_id", -1):
            self.fail(n, "type_uid", "is not class_uid * 100 + activity_id")


def main():
    tarball, events = sys.argv[1], sys.argv[2]
    version = re.search(r"ocsf-schema-([0-9.]+)\.tar\.gz$", tarball).group(1)
    checker = Checker(compiled_schema(tarball), version)
    n = 0
    for line in open(events):
        if not line.strip():
            continue
        n += 1
        checker.event(n, json.loads(line))
    if checker.problems:
        print("\n".join(checker.problems), file=sys.stderr)
        sys.exit(1)
    print(n)


if __name__ == "__main__":
    main()
