"""The wire floor both the thin clients and the server stand on: TF-Serving-compatible protobuf
messages (`genserve.wire.protos`, generated and committed) and the numpy <-> TensorProto codec
(`genserve.wire.codec`, with the public dtype table `NUMERIC_DTYPES`), and Predict's bytes written
straight from numpy arrays for the hot path (`genserve.wire.predict_bytes`). Imports no TensorFlow and
nothing else of genserve but `genserve.contract`.

    python -c "from genserve.wire.codec import to_tensor_proto; print(to_tensor_proto([1.5]))"
"""
