"""genserve's wire-compatible protobuf messages (package `genserve.wire`), generated and committed.

`tensor_pb2` holds TensorProto / TensorShapeProto / DataType; `serving_pb2` holds ModelSpec,
Predict, GetModelMetadata and GetModelStatus messages; `model_server_config_pb2` holds
ModelServerConfig (models.config, complete). Same field numbers as TensorFlow's and TF
Serving's messages, so the bytes interchange; different names, so both load in one process.

    python -c "from genserve.wire.protos import serving_pb2; print(serving_pb2.PredictRequest())"

Regenerate with `genserve/wire/protos/regenerate.sh` (grpcio-tools==1.75.1).
"""
