"""genserve: generative models from Deep Learning with Python, served over TF Serving's gRPC protocol.

Importing the package imports nothing heavy; TensorFlow is imported only by `training`, `export`
and `serving` modules, never by `genserve.clients` or `genserve.contract`.

It sets one environment default, before anything imports grpc: GRPC_ENABLE_FORK_SUPPORT=false (unless
already set). grpcio's fork handlers otherwise run in the child of every fork() while gRPC threads are
busy; a child that then runs Python before exec (subprocess's preexec_fn, which is how Ray starts each of
its processes) died before exec in 8 of 300 tries here with "epoll_wait error: Bad file descriptor"
(tests/test_grpc_fork.py). genserve never uses gRPC in a forked child without exec, the one case the
handlers are for (gRPC's doc/fork_support.md).
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
