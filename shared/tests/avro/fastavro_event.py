"""Writes tests/golden/fastavro_workflow_created.bin: a workflow.created event
encoded the way schemas/README.md tells producers in other languages to do it
(fastavro + the single-object header), with fixed values. The Rust test
`fastavro_event_decodes` in tests/golden.rs reads it back.

Run from the repository root after a schema change (needs `pip install fastavro`):
    python3 shared/tests/avro/fastavro_event.py
"""

import hashlib
import io
import json
import pathlib
import uuid

from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = pathlib.Path(__file__).resolve().parents[3]
raw = json.loads((ROOT / "schemas/workflow_event.avsc").read_text())
SCHEMA = parse_schema(raw)
# fastavro gives the CRC-64-AVRO fingerprint as hex of its little-endian bytes: the wire order.
HEADER = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))

WEFT_NAMESPACE = uuid.UUID("77656674-2d6e-616d-6573-706163650001")


def weft_instance_id(workflow_type: str, idempotency_key: str) -> uuid.UUID:
    """The instance id Weft derives for a start request (UUIDv5 of length-prefixed parts)."""
    parts = (b"instance", workflow_type.encode(), idempotency_key.encode())
    name = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return uuid.UUID(bytes=hashlib.sha1(WEFT_NAMESPACE.bytes + name).digest()[:16], version=5)


def encode(event: dict) -> bytes:
    buf = io.BytesIO()
    buf.write(HEADER)
    schemaless_writer(buf, SCHEMA, event)
    return buf.getvalue()


if __name__ == "__main__":
    event = {
        "event_id": "0191c3c8-6a3e-7f00-8000-00000000abcd",
        "event_type": "workflow.created",
        "workflow_type": "orders",
        "instance_id": str(weft_instance_id("orders", "order-42")),
        "sequence_number": 0,
        "timestamp_ms": 1735689600000,
        "data": {
            "customer": "c-17",
            "amount": 12.5,
            "quantity": 3,
            "express": True,
            "items": ["sku-1", "sku-2"],
            "address": {"city": "Oslo", "zip": 150, "lat": 59.9, "verified": False},
        },
        "metadata": {"weft.definition_version": "3"},
        "idempotency_key": "order-42",
        "source_node_id": "checkout-service",
    }
    out = ROOT / "shared/tests/golden/fastavro_workflow_created.bin"
    out.write_bytes(encode(event))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
