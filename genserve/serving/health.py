"""The standard gRPC health service (grpc.health.v1.Health, package grpcio-health-checking) with the
meaning a load balancer needs, stricter than TF Serving's and documented as such (docs/deploy.md).

    health = Health()
    health.add_to_server(grpc_server)                         # before grpc_server.start()
    health.update(configured=["toy", "vae"], available={"toy": [2], "vae": []})   # NOT_SERVING
    health.update(configured=["toy", "vae"], available={"toy": [2], "vae": [1]})  # SERVING
    health.start_drain()                                      # NOT_SERVING for good (SIGTERM)
    health.ready                                              # what GET /v1/health/ready answers

TF Serving (--enable_grpc_healthcheck_service, >= 2.15.1; model_servers/server.cc) registers "",
"ModelService" and "PredictionService", all SERVING as soon as its port opens and for as long as the
process lives. Here every one of SERVICES (those three names and the fully qualified
"tensorflow.serving.PredictionService" / "tensorflow.serving.ModelService", so probes written for
either spelling work) is SERVING only while (a) every configured model has at least one AVAILABLE
version and (b) no drain has started: a balancer stops sending to a replica still loading, and stops
sending to a stopping replica before it stops listening. Watch streams see each change at once, and
only changes (a registry poll that finds nothing new sends nothing, as the health protocol has it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# "" is the whole server (gRPC's health-checking protocol); the short names are TF Serving's.
SERVICES = ("", PREDICTION_SERVICE, MODEL_SERVICE, "PredictionService", "ModelService")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def models_ready(configured: Iterable[str], available: Mapping[str, Iterable[int]]) -> bool:
    """True when every configured model has at least one AVAILABLE version (and at least one model is
    configured: a server with nothing to serve is not ready)."""
    names = list(configured)
    return bool(names) and all(any(True for _ in available.get(name, ())) for name in names)


class Health:
    """SERVING / NOT_SERVING for SERVICES; starts NOT_SERVING."""

    def __init__(self):
        self._lock = threading.RLock()  # held while publishing, so two changes never land out of order
        self._ready = False
        self._draining = False
        self._published = None  # the status the servicer holds
        self.servicer = health.HealthServicer()  # answers Check and Watch; Watch does not hold a thread
        with self._lock:
            self._publish()

    def add_to_server(self, server) -> None:
        """Register grpc.health.v1.Health on a grpc.Server (before it starts)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    @property
    def ready(self) -> bool:
        """SERVING now: models available and not draining (the REST readiness answer: 200, else 503)."""
        with self._lock:
            return self._ready and not self._draining

    @property
    def draining(self) -> bool:
        with self._lock:
            return self._draining

    def set_ready(self, ready: bool) -> None:
        """Say whether the models are available; ignored once a drain started."""
        with self._lock:
            self._ready = bool(ready)
            self._publish()

    def update(self, configured: Iterable[str], available: Mapping[str, Iterable[int]]) -> bool:
        """set_ready(models_ready(...)), e.g. after each registry poll; returns the new `ready`."""
        self.set_ready(models_ready(configured, available))
        return self.ready

    def start_drain(self) -> None:
        """NOT_SERVING from now on, whatever set_ready says later (call it first thing on SIGTERM)."""
        with self._lock:
            self._draining = True
            self._publish()

    def _publish(self) -> None:  # with self._lock held
        status = SERVING if self._ready and not self._draining else NOT_SERVING
        if status == self._published:  # Watch streams hear of changes only (the servicer sends each set)
            return
        self._published = status
        for service in SERVICES:
            self.servicer.set(service, status)  # wakes every Watch of that service
