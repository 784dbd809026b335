#!/usr/bin/env python3
"""Encode every golden vector's JSON meaning with fastavro and compare with the Go bytes.

Proves that a Python producer following docs/producing-events.md writes byte-identical
events. Usage: python3 scripts/check_golden.py (needs `pip install fastavro`).
"""
import io
import json
import pathlib
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = {
    "inference_event": "inference_event.avsc",
    "shadow_result": "shadow_result.avsc",
    "label": "label.avsc",
    "comparison": "comparison.avsc",
}


def named_types(schema, ns="", out=None):
    """Collect the record types of a raw schema by short and full name."""
    out = {} if out is None else out
    if isinstance(schema, list):
        for s in schema:
            named_types(s, ns, out)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            ns = schema.get("namespace", ns)
            out[schema["name"]] = out[f"{ns}.{schema['name']}"] = schema
            for f in schema["fields"]:
                named_types(f["type"], ns, out)
        elif schema.get("type") == "array":
            named_types(schema["items"], ns, out)
        elif schema.get("type") == "map":
            named_types(schema["values"], ns, out)
    return out


def from_avro_json(schema, datum, names):
    """Turn Avro's JSON encoding (unions as {"type": value}, bytes as strings) into fastavro's form."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):  # union
        if datum is None:
            return None
        (branch, value), = datum.items()
        for s in schema:
            name = s if isinstance(s, str) else s.get("name", s.get("type"))
            if branch in (name, names.get(name, {}).get("name") if isinstance(name, str) else None) or branch.endswith("." + str(name)):
                return from_avro_json(s, value, names)
        raise ValueError(f"no union branch {branch}")
    if isinstance(schema, dict):
        t = schema["type"]
        if t == "record":
            return {f["name"]: from_avro_json(f["type"], datum[f["name"]], names) for f in schema["fields"]}
        if t == "array":
            return [from_avro_json(schema["items"], d, names) for d in datum]
        if t == "map":
            return {k: from_avro_json(schema["values"], v, names) for k, v in datum.items()}
        return from_avro_json(t, datum, names)
    if schema == "bytes":
        return datum.encode("latin-1")
    return datum


def main():
    failures = passed = 0
    for path in sorted((ROOT / "schemas/testdata/golden").glob("*.json")):
        stem = next(k for k in SCHEMAS if path.stem.startswith(k))
        raw = json.load(open(ROOT / "schemas/avro" / SCHEMAS[stem]))
        schema = fastavro.parse_schema(raw)
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
        datum = from_avro_json(raw, json.load(open(path)), named_types(raw))
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + fp)
        fastavro.schemaless_writer(buf, schema, datum)
        want = path.with_suffix(".bin").read_bytes()
        ok = buf.getvalue() == want
        failures += not ok
        passed += ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.name}")
    print(f"{passed} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
