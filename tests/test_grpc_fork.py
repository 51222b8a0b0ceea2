"""A process that imported genserve can fork() children that run Python before exec while its gRPC
threads are busy: what Ray does for every process it starts (`subprocess.Popen(preexec_fn=...)`), beside
the batch driver's channel or a test's in-process server.

With grpcio's fork handlers on (its default here), such a child ran gRPC's post-fork code and died before
exec with "epoll_wait error: Bad file descriptor" in 8 of 300 tries here: CI's "The current node timed out
during startup" (Ray's raylet never started) and a Ctrl-C test's child that never ran genserve.
`genserve/__init__.py` turns the handlers off unless the user set GRPC_ENABLE_FORK_SUPPORT."""

from __future__ import annotations

import os
import subprocess
import sys

# A fresh interpreter: GRPC_ENABLE_FORK_SUPPORT counts only if it is set before grpc is first imported.
CHILD = r"""
import sys
import genserve  # first, as `python -m genserve` and every genserve module import it
import subprocess, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(8))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
done = threading.Event()

def busy():
    while not done.is_set():
        stub.Check(health_pb2.HealthCheckRequest(), timeout=30)

callers = [threading.Thread(target=busy) for _ in range(4)]
for t in callers:
    t.start()
failed = 0
for _ in range(int(sys.argv[1])):
    child = subprocess.run(["/bin/echo", "ran"], capture_output=True, text=True, preexec_fn=lambda: None,
                           timeout=30)
    failed += child.stdout != "ran\n"
done.set()
for t in callers:
    t.join()
server.stop(0)
print(failed)
"""


def forks_that_never_ran(tries: int, **env) -> int:
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"} | env
    done = subprocess.run([sys.executable, "-c", CHILD, str(tries)], capture_output=True, text=True,
                          env=environ, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_children_forked_beside_busy_grpc_threads_all_reach_exec():
    assert forks_that_never_ran(300) == 0


def test_a_users_own_fork_support_setting_is_kept():
    code = "import os, genserve; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    for value in ("true", "0"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": value})
        assert done.stdout.strip() == value, done.stderr
