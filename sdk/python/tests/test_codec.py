"""The Python codec against Weft's Rust codec: the package's schemas are the
repository's, the fingerprints are the ones documented, and every golden record
the Rust codec wrote decodes here and re-encodes to the same bytes."""

import json
import pathlib
import re

import pytest

from weft_worker import codec

REPO = pathlib.Path(__file__).resolve().parents[3]

GOLDEN = {
    "WorkflowEvent": ["workflow_event_full", "workflow_event_minimal"],
    "TaskDispatch": ["task_dispatch_full", "task_dispatch_minimal"],
    "WorkflowSnapshot": ["workflow_snapshot_full", "workflow_snapshot_minimal"],
    "WorkflowDefinition": ["workflow_definition_full", "workflow_definition_minimal"],
    "NodeRecord": ["node_record_full", "node_record_minimal"],
    "TaskControl": ["task_control_full", "task_control_minimal"],
    "TaskHeartbeat": ["task_heartbeat_full", "task_heartbeat_minimal"],
}


def test_the_package_ships_the_repository_schemas():
    for name, file in codec.SCHEMA_FILES.items():
        ours = codec.schema(name).raw
        theirs = json.loads((REPO / "schemas" / file).read_text())
        assert ours == theirs, f"sdk/python/src/weft_worker/schemas/{file} differs from schemas/{file}: copy it"
    shipped = {p.name for p in (REPO / "schemas").glob("*.avsc")}
    assert shipped == set(codec.SCHEMA_FILES.values())


def test_fingerprints_are_the_documented_ones():
    readme = (REPO / "schemas" / "README.md").read_text()
    for name in codec.SCHEMA_FILES:
        fp = codec.schema(name).fingerprint.hex()
        assert f"| `{name}` | `{fp}` |" in readme


@pytest.mark.parametrize("name,golden_name", [(n, g) for n, gs in GOLDEN.items() for g in gs])
def test_rust_golden_records_decode_and_reencode_byte_for_byte(golden, name, golden_name):
    data = golden(golden_name)
    assert codec.schema_name_of(data) == name
    record = codec.decode(name, data)
    assert codec.encode(name, record) == data


def test_control_and_heartbeat_fields(golden):
    c = codec.decode("TaskControl", golden("task_control_full"))
    assert c["action"] == "cancel"
    assert c["attempt"] == 2 and c["grace_period_ms"] == 1500
    assert re.fullmatch(r"[0-9a-f-]{36}", c["execution_id"])
    hb = codec.decode("TaskHeartbeat", golden("task_heartbeat_full"))
    assert hb["execution_id"] == c["execution_id"]
    assert hb["node_id"] == "worker-1"


def test_legacy_json_control_plane_records_still_read(golden):
    c = codec.decode("TaskControl", golden("task_control_full"))
    legacy = json.dumps(c).encode()
    assert codec.decode_control(legacy) == c
    assert codec.decode_control(golden("task_control_full")) == c
    hb = codec.decode("TaskHeartbeat", golden("task_heartbeat_full"))
    assert codec.decode_heartbeat(json.dumps(hb).encode()) == hb
    with pytest.raises(codec.CodecError, match="legacy JSON TaskControl"):
        codec.decode_control(b'{"action": "cancel"}')


def test_bad_records_say_what_is_wrong(golden):
    with pytest.raises(codec.CodecError, match="JSON"):
        codec.decode("TaskDispatch", b'{"task_name": "x"}')
    with pytest.raises(codec.CodecError, match="expected a TaskDispatch record but this is a TaskControl"):
        codec.decode("TaskDispatch", golden("task_control_full"))
    with pytest.raises(codec.CodecError, match="no value"):
        codec.decode("TaskDispatch", None)
    with pytest.raises(codec.CodecError, match="shorter"):
        codec.decode("TaskDispatch", b"\xc3\x01\x00")
    with pytest.raises(codec.CodecError, match="unexpected bytes"):
        codec.decode("TaskHeartbeat", golden("task_heartbeat_full") + b"\x00")
    unknown = b"\xc3\x01" + bytes(8) + golden("task_heartbeat_full")[10:]
    with pytest.raises(codec.CodecError, match="unknown schema fingerprint 0000000000000000"):
        codec.decode("TaskHeartbeat", unknown)
    with pytest.raises(codec.CodecError):
        codec.decode("TaskDispatch", golden("task_dispatch_full")[:-3])


def test_encode_rejects_records_that_do_not_fit():
    with pytest.raises(codec.CodecError):
        codec.encode("TaskHeartbeat", {"workflow_type": "t"})
