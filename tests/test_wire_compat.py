"""genserve's own messages (genserve.wire) against TensorFlow / TF Serving's, byte for byte.

    .venv/bin/python -m pytest tests/test_wire_compat.py -q
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor

from genserve.wire.codec import from_tensor_proto, to_tensor_proto
from genserve.clients.messages import VersionStatus, predict_request, signatures_from_metadata
from genserve.wire.protos import model_server_config_pb2, serving_pb2, tensor_pb2

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2  # noqa: E402
from tensorflow.core.framework import tensor_shape_pb2 as tf_shape_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2  # noqa: E402
from tensorflow_serving.apis import model_pb2, predict_pb2, status_pb2  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2 as tf_config_pb2  # noqa: E402

PROTOS = Path(__file__).resolve().parents[1] / "genserve" / "wire" / "protos"

# Each genserve.wire message and the TF message it must match on the wire.
PAIRS = [
    (tensor_pb2.TensorShapeProto, tf_shape_pb2.TensorShapeProto),
    (tensor_pb2.TensorProto, tf_tensor_pb2.TensorProto),
    (serving_pb2.ModelSpec, model_pb2.ModelSpec),
    (serving_pb2.PredictRequest, predict_pb2.PredictRequest),
    (serving_pb2.PredictResponse, predict_pb2.PredictResponse),
    (serving_pb2.TensorInfo, meta_graph_pb2.TensorInfo),
    (serving_pb2.SignatureDef, meta_graph_pb2.SignatureDef),
    (serving_pb2.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
    (serving_pb2.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
    (serving_pb2.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
    (serving_pb2.StatusProto, status_pb2.StatusProto),
    (serving_pb2.ModelVersionStatus, get_model_status_pb2.ModelVersionStatus),
    (serving_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest),
    (serving_pb2.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
    (model_server_config_pb2.ModelServerConfig, tf_config_pb2.ModelServerConfig),
]


def _same_schema(ours: descriptor.Descriptor, theirs: descriptor.Descriptor, seen: set) -> None:
    """Every field of ours exists in theirs with the same number, type, cardinality and packing."""
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry, ours.full_name
    for f in ours.fields:
        t = theirs.fields_by_name.get(f.name)
        where = f"{ours.full_name}.{f.name}"
        assert t is not None, f"{where} has no counterpart in {theirs.full_name}"
        assert (f.number, f.type, f.is_repeated) == (t.number, t.type, t.is_repeated), where
        assert f.is_packed == t.is_packed, where
        assert (f.containing_oneof is None) == (t.containing_oneof is None), where
        if f.enum_type is not None:
            for value in f.enum_type.values:  # every value we name means the same number in TF
                assert t.enum_type.values_by_name[value.name].number == value.number, value.name
        if f.message_type is not None:
            if f.message_type.file.package == "google.protobuf":
                assert f.message_type.full_name == t.message_type.full_name, where
            else:
                _same_schema(f.message_type, t.message_type, seen)


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=lambda c: c.DESCRIPTOR.name)
def test_field_numbers_match_tf(ours, theirs):
    _same_schema(ours.DESCRIPTOR, theirs.DESCRIPTOR, set())
    assert ours.DESCRIPTOR.full_name.startswith("genserve.wire.")
    assert ours.DESCRIPTOR.file.name != theirs.DESCRIPTOR.file.name  # both load in one pool


def test_models_config_message_is_complete():
    """models.config's message is TF Serving's whole ModelServerConfig (every field, every enum value,
    recursively), so a file TF Serving reads parses here too."""
    seen = set()

    def same(theirs, ours):
        if theirs.full_name in seen:
            return
        seen.add(theirs.full_name)
        _same_schema(ours, theirs, set())
        assert set(theirs.fields_by_name) == set(ours.fields_by_name), theirs.full_name
        for f in theirs.fields:
            mine = ours.fields_by_name[f.name]
            if f.enum_type is not None:
                assert ({v.name: v.number for v in f.enum_type.values}
                        == {v.name: v.number for v in mine.enum_type.values}), f.full_name
            if f.message_type is not None and f.message_type.file.package != "google.protobuf":
                same(f.message_type, mine.message_type)

    same(tf_config_pb2.ModelServerConfig.DESCRIPTOR, model_server_config_pb2.ModelServerConfig.DESCRIPTOR)
    assert "tensorflow.serving.LoggingConfig" in seen


def test_no_service_is_declared():
    """A service in genserve.wire would be called as /genserve.wire.X/..., which TF Serving rejects."""
    assert not serving_pb2.DESCRIPTOR.services_by_name
    assert not tensor_pb2.DESCRIPTOR.services_by_name
    assert not model_server_config_pb2.DESCRIPTOR.services_by_name


def test_regenerated_code_is_byte_identical(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install 'genserve[dev]')")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(PROTOS / "regenerate.sh"), str(tmp_path)], check=True, env=env,
                   capture_output=True)
    for name in ("tensor_pb2.py", "serving_pb2.py", "model_server_config_pb2.py"):
        fresh = tmp_path / "genserve" / "wire" / "protos" / name
        assert fresh.read_bytes() == (PROTOS / name).read_bytes(), (
            f"{name} is stale: run genserve/wire/protos/regenerate.sh")


# --- PredictRequest -------------------------------------------------------------------------------
INPUTS = {
    "z": np.arange(6, dtype=np.float32).reshape(2, 3),
    "ids": np.array([[3, 1, 4]], dtype=np.int32),
    "scalar_batch": np.array([0.5], dtype=np.float64),
    "flags": np.array([True, False]),
    "text": np.array(["héllo", "x"]),
}


def test_our_predict_request_parses_as_tf():
    request = predict_request("vae", INPUTS, signature="decode", version=3,
                              output_filter=["images"])
    theirs = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert theirs.model_spec.name == "vae"
    assert theirs.model_spec.signature_name == "decode"
    assert theirs.model_spec.WhichOneof("version_choice") == "version"
    assert theirs.model_spec.version.value == 3
    assert list(theirs.output_filter) == ["images"]
    assert set(theirs.inputs) == set(INPUTS)
    for key, value in INPUTS.items():
        decoded = tf.make_ndarray(theirs.inputs[key])
        expected = np.char.encode(value, "utf-8") if value.dtype.kind == "U" else value
        np.testing.assert_array_equal(decoded, expected)
        assert decoded.shape == value.shape


def test_latest_version_leaves_version_unset():
    request = predict_request("text", {"ids": np.zeros((1,), np.int32)})
    theirs = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert theirs.model_spec.WhichOneof("version_choice") is None
    assert theirs.model_spec.signature_name == ""  # server falls back to serving_default
    zero = predict_pb2.PredictRequest.FromString(
        predict_request("text", {}, version=0).SerializeToString())
    assert zero.model_spec.HasField("version") and zero.model_spec.version.value == 0
    label = predict_pb2.PredictRequest.FromString(
        predict_request("text", {}, version_label="stable").SerializeToString())
    assert label.model_spec.WhichOneof("version_choice") == "version_label"
    with pytest.raises(ValueError, match="either version or version_label"):
        predict_request("text", {}, version=1, version_label="stable")


def test_tf_predict_request_parses_as_ours():
    theirs = predict_pb2.PredictRequest()
    theirs.model_spec.name = "style"
    theirs.model_spec.signature_name = "step"
    theirs.model_spec.version_label = "canary"
    theirs.output_filter.extend(["loss", "gradient"])
    for key, value in INPUTS.items():  # TF's encoder: *_val for small ones, tensor_content else
        theirs.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    ours = serving_pb2.PredictRequest.FromString(theirs.SerializeToString())
    assert ours.model_spec.name == "style" and ours.model_spec.version_label == "canary"
    assert ours.model_spec.signature_name == "step"
    assert list(ours.output_filter) == ["loss", "gradient"]
    for key, value in INPUTS.items():
        expected = np.char.encode(value, "utf-8") if value.dtype.kind == "U" else value
        np.testing.assert_array_equal(from_tensor_proto(ours.inputs[key]), expected)
    # Same content, same bytes: re-serializing ours gives exactly TF's encoding.
    assert (ours.SerializeToString(deterministic=True)
            == theirs.SerializeToString(deterministic=True))


def test_unknown_tf_fields_survive_a_round_trip():
    """Fields we do not declare (client_id, request_options) are kept and re-sent unchanged."""
    theirs = predict_pb2.PredictRequest(client_id=b"abc")
    theirs.model_spec.name = "text"
    theirs.request_options.max_cache_length = 7
    ours = serving_pb2.PredictRequest.FromString(theirs.SerializeToString())
    back = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert back == theirs


# --- PredictResponse (outputs = 1, model_spec = 2) ------------------------------------------------
def test_predict_response_both_ways():
    outputs = {"logits": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
               "h": np.float32([[0.25]]), "vocabulary": np.array([[b"a", b"b"]], dtype=object)}
    theirs = predict_pb2.PredictResponse()
    theirs.model_spec.name = "text"
    theirs.model_spec.version.value = 7
    theirs.model_spec.signature_name = "step"
    for key, value in outputs.items():
        theirs.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    ours = serving_pb2.PredictResponse.FromString(theirs.SerializeToString())
    assert ours.model_spec.version.value == 7 and ours.model_spec.signature_name == "step"
    for key, value in outputs.items():
        np.testing.assert_array_equal(from_tensor_proto(ours.outputs[key]), value)

    mine = serving_pb2.PredictResponse()
    mine.model_spec.name = "text"
    mine.model_spec.version.value = 7
    for key, value in outputs.items():
        mine.outputs[key].CopyFrom(to_tensor_proto(value))
    parsed = predict_pb2.PredictResponse.FromString(mine.SerializeToString())
    assert parsed.model_spec.name == "text" and parsed.model_spec.version.value == 7
    for key, value in outputs.items():
        np.testing.assert_array_equal(tf.make_ndarray(parsed.outputs[key]), value)
    assert mine.SerializeToString(deterministic=True) == predict_pb2.PredictResponse.FromString(
        mine.SerializeToString()).SerializeToString(deterministic=True)


# --- GetModelMetadata -----------------------------------------------------------------------------
def _tf_signature_map() -> get_model_metadata_pb2.SignatureDefMap:
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    decode = sig_map.signature_def["decode"]
    decode.method_name = "tensorflow/serving/predict"
    z = decode.inputs["z"]
    z.name, z.dtype = "serving_decode_z:0", tf.float32.as_datatype_enum
    z.tensor_shape.dim.add(size=-1)
    z.tensor_shape.dim.add(size=2)
    images = decode.outputs["images"]
    images.name, images.dtype = "StatefulPartitionedCall:0", tf.float32.as_datatype_enum
    for size in (-1, 28, 28, 1):
        images.tensor_shape.dim.add(size=size)
    info = sig_map.signature_def["info"]
    vocab = info.outputs["vocabulary"]
    vocab.name, vocab.dtype = "x:0", tf.string.as_datatype_enum
    vocab.tensor_shape.unknown_rank = True
    ids = info.inputs["ids"]
    ids.name, ids.dtype = "ids:0", tf.int32.as_datatype_enum
    ids.tensor_shape.dim.add(size=-1)
    sig_map.signature_def["serving_default"].CopyFrom(decode)
    return sig_map


def test_tf_metadata_response_parses_as_ours():
    theirs = get_model_metadata_pb2.GetModelMetadataResponse()
    theirs.model_spec.name = "vae"
    theirs.model_spec.version.value = 2
    theirs.metadata["signature_def"].Pack(_tf_signature_map())  # TF's type URL
    ours = serving_pb2.GetModelMetadataResponse.FromString(theirs.SerializeToString())
    signatures = signatures_from_metadata(ours, "vae")
    assert set(signatures) == {"decode", "info", "serving_default"}
    assert signatures["decode"].inputs == {"z": ("float32", (None, 2))}
    assert signatures["decode"].outputs == {"images": ("float32", (None, 28, 28, 1))}
    assert signatures["decode"].method_name == "tensorflow/serving/predict"
    assert signatures["info"].outputs == {"vocabulary": ("string", None)}
    assert signatures["info"].inputs == {"ids": ("int32", (None,))}
    assert signatures_from_metadata(theirs, "vae") == signatures  # duck-typed on TF's class too


def test_our_metadata_response_unpacks_in_tf():
    mine_map = serving_pb2.SignatureDefMap.FromString(_tf_signature_map().SerializeToString())
    mine = serving_pb2.GetModelMetadataResponse()
    mine.model_spec.name = "vae"
    packed = mine.metadata["signature_def"]
    packed.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    packed.value = mine_map.SerializeToString()
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(mine.SerializeToString())
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(unpacked)
    assert unpacked == _tf_signature_map()


def test_metadata_request_bytes_match():
    mine = serving_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    mine.model_spec.name = "vae"
    theirs = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    theirs.model_spec.name = "vae"
    assert mine.SerializeToString() == theirs.SerializeToString()


def test_metadata_without_signature_map_is_an_error():
    from genserve.clients import GenserveError

    with pytest.raises(GenserveError, match="INTERNAL: .*no signature_def"):
        signatures_from_metadata(serving_pb2.GetModelMetadataResponse(), "vae")
    wrong = serving_pb2.GetModelMetadataResponse()
    wrong.metadata["signature_def"].type_url = "type.googleapis.com/something.Else"
    with pytest.raises(GenserveError, match="something.Else"):
        signatures_from_metadata(wrong, "vae")


# --- GetModelStatus -------------------------------------------------------------------------------
def test_status_response_both_ways():
    theirs = get_model_status_pb2.GetModelStatusResponse()
    for version, state, code, message in ((2, 30, 0, ""), (1, 50, 5, "gone"), (3, 20, 0, "")):
        entry = theirs.model_version_status.add(version=version, state=state)
        entry.status.error_code = code
        entry.status.error_message = message
    ours = serving_pb2.GetModelStatusResponse.FromString(theirs.SerializeToString())
    states = serving_pb2.ModelVersionStatus.State
    assert [(s.version, states.Name(s.state), s.status.error_message)
            for s in ours.model_version_status] == [(2, "AVAILABLE", ""), (1, "END", "gone"),
                                                    (3, "LOADING", "")]
    assert ours.model_version_status[1].status.error_code == serving_pb2.NOT_FOUND
    assert ours.SerializeToString() == theirs.SerializeToString()
    back = get_model_status_pb2.GetModelStatusResponse.FromString(ours.SerializeToString())
    assert back == theirs
    assert VersionStatus(2, "AVAILABLE") == (2, "AVAILABLE")


def test_status_request_bytes_match():
    mine = serving_pb2.GetModelStatusRequest()
    mine.model_spec.name = "text"
    mine.model_spec.version.value = 4
    theirs = get_model_status_pb2.GetModelStatusRequest()
    theirs.model_spec.name = "text"
    theirs.model_spec.version.value = 4
    assert mine.SerializeToString() == theirs.SerializeToString()
