"""genserve: generative models from Deep Learning with Python, served over TF Serving's gRPC protocol.

Importing the package imports nothing heavy; TensorFlow is imported only by `training`, `export`
and `serving` modules, never by `genserve.clients` or `genserve.contract`.
"""

__version__ = "0.1.0"
