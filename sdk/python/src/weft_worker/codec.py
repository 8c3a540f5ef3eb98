"""Weft's Avro wire format: single-object encoding of the schemas in ``schemas/``.

Every record value on a Weft topic is::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the schema (wire order) | Avro binary datum

The fingerprint is that of the schema's Parsing Canonical Form, which leaves
out ``doc``, ``default`` and ``logicalType``, so logical types do not change the
bytes: this module reads and writes the datum with the logical types removed
(UUIDs stay ``str``, timestamps stay ``int`` epoch milliseconds).

Maps are written with their keys sorted, as Weft does, so the same record
always gives the same bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, Optional

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MARKER = b"\xc3\x01"
HEADER_LEN = 10

#: Record name -> schema file, for every record on Weft's topics.
SCHEMA_FILES: Dict[str, str] = {
    "WorkflowEvent": "workflow_event.avsc",
    "TaskDispatch": "task_dispatch.avsc",
    "WorkflowSnapshot": "workflow_snapshot.avsc",
    "WorkflowDefinition": "workflow_definition.avsc",
    "NodeRecord": "node_record.avsc",
    "TaskControl": "task_control.avsc",
    "TaskHeartbeat": "task_heartbeat.avsc",
}


class CodecError(ValueError):
    """A record value that is not a valid Weft record of the expected schema."""


@dataclass(frozen=True)
class Schema:
    name: str
    #: The schema as published (with docs and logical types).
    raw: Dict[str, Any]
    #: The parsed schema used for the datum (logical types removed).
    parsed: Any
    #: The 8 fingerprint bytes that follow ``C3 01`` on the wire.
    fingerprint: bytes


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _load(name: str) -> Schema:
    text = resources.files("weft_worker").joinpath("schemas", SCHEMA_FILES[name]).read_text("utf-8")
    raw = json.loads(text)
    parsed = parse_schema(_without_logical_types(raw))
    # fastavro prints the CRC-64-AVRO fingerprint as the hex of the wire bytes.
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    return Schema(name=name, raw=raw, parsed=parsed, fingerprint=fp)


_SCHEMAS: Dict[str, Schema] = {}


def schema(name: str) -> Schema:
    """The schema of record ``name`` (``WorkflowEvent``, ``TaskDispatch``, ...)."""
    if name not in _SCHEMAS:
        if name not in SCHEMA_FILES:
            raise KeyError(f"no Weft schema named {name!r} (known: {', '.join(SCHEMA_FILES)})")
        _SCHEMAS[name] = _load(name)
    return _SCHEMAS[name]


def schema_name_of(data: bytes) -> Optional[str]:
    """The Weft schema ``data`` was written with, if it is a single-object record of one."""
    if len(data) < HEADER_LEN or data[:2] != MARKER:
        return None
    for name in SCHEMA_FILES:
        if schema(name).fingerprint == data[2:HEADER_LEN]:
            return name
    return None


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_maps(v) for v in value]
    return value


def encode(name: str, record: Dict[str, Any]) -> bytes:
    """The single-object encoding of ``record`` with schema ``name``.

    Fields with a default may be left out. Raises :class:`CodecError` when the
    record does not fit the schema.
    """
    s = schema(name)
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(s.fingerprint)
    try:
        schemaless_writer(buf, s.parsed, _sorted_maps(record))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CodecError(f"cannot encode a {name} record: {e}") from e
    return buf.getvalue()


def decode(name: str, data: Optional[bytes]) -> Dict[str, Any]:
    """Decodes a single-object encoded record of schema ``name``.

    Raises :class:`CodecError` naming what is wrong: no value, no marker (with a
    guess: JSON? a schema-registry record?), another Weft schema, an unknown
    fingerprint, a truncated or over-long datum.
    """
    if data is None:
        raise CodecError(f"{name} record has no value")
    s = schema(name)
    if len(data) >= 2 and data[:2] != MARKER:
        hint = ""
        if data[:1] == b"{":
            hint = " (JSON?)"
        elif data[:1] == b"\x00":
            hint = " (a Confluent schema-registry record? Weft does not read those)"
        raise CodecError(
            f"{name} record does not start with the Avro single-object marker c3 01 "
            f"but with {data[:2].hex()}{hint}"
        )
    if len(data) < HEADER_LEN:
        raise CodecError(f"{name} record is {len(data)} bytes, shorter than the 10-byte header")
    fp = data[2:HEADER_LEN]
    if fp != s.fingerprint:
        other = schema_name_of(data)
        if other is not None:
            raise CodecError(f"expected a {name} record but this is a {other} record")
        raise CodecError(
            f"unknown schema fingerprint {fp.hex()} in a {name} record "
            f"(this library reads {name} with fingerprint {s.fingerprint.hex()})"
        )
    buf = io.BytesIO(data)
    buf.seek(HEADER_LEN)
    try:
        record = schemaless_reader(buf, s.parsed, None)
    except (EOFError, ValueError, IndexError, UnicodeDecodeError, StopIteration) as e:
        raise CodecError(f"corrupt {name} record: {e!r}") from e
    if buf.tell() != len(data):
        raise CodecError(f"{name} record has {len(data) - buf.tell()} unexpected bytes after the datum")
    return record


def _legacy_json(name: str, data: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as e:
        raise CodecError(f"invalid legacy JSON {name} record: {e}") from e
    if not isinstance(value, dict):
        raise CodecError(f"invalid legacy JSON {name} record: not an object")
    return value


def is_legacy_json(data: Optional[bytes]) -> bool:
    """Whether ``data`` is the JSON form control records and heartbeats had up to release 0.1."""
    return bool(data) and data.lstrip()[:1] == b"{"


def decode_control(data: Optional[bytes]) -> Dict[str, Any]:
    """A ``TaskControl``: Avro, or the JSON form of releases up to 0.1 (read for one release)."""
    if data is not None and is_legacy_json(data):
        c = _legacy_json("TaskControl", data)
        missing = [k for k in ("action", "execution_id") if k not in c]
        if missing:
            raise CodecError(f"invalid legacy JSON TaskControl record: missing {', '.join(missing)}")
        c.setdefault("grace_period_ms", 0)
        c.setdefault("reason", "")
        return c
    return decode("TaskControl", data)


def decode_heartbeat(data: Optional[bytes]) -> Dict[str, Any]:
    """A ``TaskHeartbeat``: Avro, or the JSON form of releases up to 0.1."""
    if data is not None and is_legacy_json(data):
        return _legacy_json("TaskHeartbeat", data)
    return decode("TaskHeartbeat", data)
