"""Prometheus metrics with TF Serving's names, served on the REST port.

    genserve serve --models-dir models --rest-port 8501 \
        --monitoring-config-file genserve/deploy/monitoring.config
    curl -s localhost:8501/monitoring/prometheus/metrics | grep request_count

TF Serving's metrics (tensorflow_serving/servables/tensorflow/util.cc, saved_model_warmup_util.cc,
tensorflow/cc/saved_model/loader.cc) are TF monitoring metrics named like
`/tensorflow/serving/request_count`; its Prometheus exporter (util/prometheus_exporter.cc) turns every
character outside [a-zA-Z0-9_] into ':', so they appear as `:tensorflow:serving:request_count`.
genserve records the same ones, with the same labels and latency buckets (microseconds,
Buckets::Exponential(10, 1.8, 33), `le` written as TF Serving writes it):

    :tensorflow:serving:request_count{model_name, status}               counter
    :tensorflow:serving:request_latency{model_name, API, entrypoint}    histogram, µs (successes only)
    :tensorflow:serving:runtime_latency{model_name, API, runtime}       histogram, µs (Session.run part)
    :tensorflow:cc:saved_model:load_attempt_count{model_path, status}   counter (successful loads)
    :tensorflow:cc:saved_model:load_latency{model_path}                 counter, µs
    :tensorflow:serving:model_warmup_latency{model_path, status}        histogram, µs
    :tensorflow:serving:model_warmup_records_read{model_path, status}   counter

and one of its own (TF Serving has none like it), for watching a drain or a flood:

    :genserve:serving:requests_in_flight                                gauge (Predicts admitted, unanswered)

What is counted follows TF Serving: over gRPC only Predict (Classify, Regress) requests; over REST
every request under /v1/ (API = "predict", "classify", "regress", or "" for status and metadata).

The exposition is prometheus_client's (its own CollectorRegistry per server, so several servers in one
process never share counts). One difference it imposes: prometheus_client writes every counter with
a `_total` suffix (`:tensorflow:serving:request_count_total`), where TF Serving writes the bare name;
histogram names (`_bucket`, `_sum`, `_count`) match exactly. See docs/serving.md.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from genserve.textproto import parse_text_proto

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes (legacy names)

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS = ":tensorflow:serving:model_warmup_records_read"
IN_FLIGHT = ":genserve:serving:requests_in_flight"

# Buckets::Exponential(10, 1.8, 33): limits 10, 18, 32.4, ... µs (~20 minutes), then +Inf.
BUCKET_LIMITS = tuple(10 * 1.8**i for i in range(33))
_LE = tuple("%g" % b for b in BUCKET_LIMITS) + ("+Inf",)  # absl::StrCat(double) writes %g
MAX_LABEL_CHARS = 256
GRPC_COUNTED = frozenset({"Predict", "Classify", "Regress"})  # prediction_service_impl.cc


class _Histogram:
    """TF's monitoring::Sampler cell: a value lands in the first bucket whose limit exceeds it."""

    __slots__ = ("counts", "total")

    def __init__(self):
        self.counts = [0] * (len(BUCKET_LIMITS) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect_right(BUCKET_LIMITS, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, out = 0, []
        for le, count in zip(_LE, self.counts):
            cumulative += count
            out.append((le, cumulative))
        return out


class ServingMetrics:
    """The server's metrics: an observer for ModelServer (`observe`, `observe_runtime`, `on_load`)
    and the Prometheus page (`exposition()`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = {REQUEST_COUNT: {}, LOAD_ATTEMPT_COUNT: {},
                                                         LOAD_LATENCY: {}, WARMUP_RECORDS: {}}
        self._histograms: dict[str, dict[tuple, _Histogram]] = {REQUEST_LATENCY: {}, RUNTIME_LATENCY: {},
                                                                WARMUP_LATENCY: {}}
        self.gauges: dict[str, tuple] = {}  # name -> (help, read()), read at exposition time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- recording --------------------------------------------------------------------------------
    def _count(self, name: str, labels: tuple, amount: float = 1) -> None:
        cells = self._counters[name]
        cells[labels] = cells.get(labels, 0) + amount

    def _sample(self, name: str, labels: tuple, value: float) -> None:
        cells = self._histograms[name]
        cell = cells.get(labels)
        if cell is None:
            cell = cells[labels] = _Histogram()
        cell.add(value)

    def observe(self, entrypoint: str, method: str, model: str, code: str, seconds: float) -> None:
        """One finished request (ModelServer.observe): RecordModelRequestCount and, for a success,
        RecordRequestLatency(model, API=method, entrypoint)."""
        if entrypoint == "GRPC" and method not in GRPC_COUNTED:
            return
        model = model[:MAX_LABEL_CHARS]  # a client can send any name: keep label values bounded
        with self._lock:
            self._count(REQUEST_COUNT, (model, code))
            if code == "OK":
                self._sample(REQUEST_LATENCY, (model, method, entrypoint), seconds * 1e6)

    def observe_runtime(self, model: str, api: str, seconds: float) -> None:
        """RecordRuntimeLatency: one successful Session.run of `api` ("Predict")."""
        with self._lock:
            self._sample(RUNTIME_LATENCY, (model, api, "TF1"), seconds * 1e6)

    def on_load(self, loaded) -> None:
        """A version loaded (registry.LoadedVersion): load count and latency, warmup latency."""
        path = str(loaded.path)
        warmup = getattr(loaded, "warmup_seconds", None)  # set by registries that time warmup apart
        load_seconds = loaded.load_seconds - (warmup or 0.0)
        with self._lock:
            self._count(LOAD_ATTEMPT_COUNT, (path, "success"))
            self._count(LOAD_LATENCY, (path,), int(max(load_seconds, 0.0) * 1e6))
            if loaded.warmup_requests:
                self._count(WARMUP_RECORDS, (path, "OK"), loaded.warmup_requests)
                if warmup is not None:
                    self._sample(WARMUP_LATENCY, (path, "OK"), warmup * 1e6)

    # -- exposition -------------------------------------------------------------------------------
    def collect(self):
        """prometheus_client's Collector interface."""
        specs = {
            REQUEST_COUNT: ("The total number of requests.", ["model_name", "status"]),
            LOAD_ATTEMPT_COUNT: ("The number of times a SavedModel was successfully loaded.",
                                 ["model_path", "status"]),
            LOAD_LATENCY: ("Latency in microseconds for SavedModels that were successfully loaded.",
                           ["model_path"]),
            WARMUP_RECORDS: ("Total number of warmup records read during model warmup.",
                             ["model_path", "status"]),
            REQUEST_LATENCY: ("Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                              ["model_name", "API", "entrypoint"]),
            RUNTIME_LATENCY: ("Distribution of wall time (in microseconds) for Tensorflow runtime.",
                              ["model_name", "API", "runtime"]),
            WARMUP_LATENCY: ("Distribution of wall time (in microseconds) for warming up the model.",
                             ["model_path", "status"]),
        }
        with self._lock:
            counters = {name: dict(cells) for name, cells in self._counters.items()}
            histograms = {name: {k: (h.buckets(), h.total) for k, h in cells.items()}
                          for name, cells in self._histograms.items()}
        for name, cells in counters.items():
            if cells:
                family = CounterMetricFamily(name, specs[name][0], labels=specs[name][1])
                for labels, value in sorted(cells.items()):
                    family.add_metric(list(labels), value)
                yield family
        for name, (help_text, read) in sorted(self.gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=read())
        for name, cells in histograms.items():
            if cells:
                family = HistogramMetricFamily(name, specs[name][0], labels=specs[name][1])
                for labels, (buckets, total) in sorted(cells.items()):
                    family.add_metric(list(labels), buckets, sum_value=total)
                yield family

    def exposition(self) -> bytes:
        """The Prometheus text page (content type CONTENT_TYPE)."""
        return generate_latest(self.registry)


# -- MonitoringConfig ----------------------------------------------------------------------------------
def monitoring_config_class():
    """tensorflow.serving.MonitoringConfig (config/monitoring_config.proto) in a private descriptor
    pool: the tensorflow-serving-api wheel does not ship it."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="genserve_monitoring_config.proto",
                                           package="tensorflow.serving", syntax="proto3")
    prometheus = f.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    monitoring = f.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def parse_monitoring_config(text: str, source: str = "monitoring config") -> str | None:
    """The Prometheus path a MonitoringConfig (text format, --monitoring_config_file) enables.

    Returns:
        The path ("/monitoring/prometheus/metrics" when `path` is empty), or None when
        `prometheus_config.enable` is false.
    Raises:
        ValueError: the text does not parse as a MonitoringConfig, or the path does not start with "/"
            or lies under /v1/ (the REST API's own paths).
    """
    config = parse_text_proto(text, monitoring_config_class()(), source)
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or DEFAULT_PATH
    if not path.startswith("/") or path.lower().startswith("/v1/"):
        raise ValueError(f"{source}: prometheus_config.path must start with '/' and lie outside /v1/, "
                         f"got {path!r}")
    return path


def read_monitoring_config(path) -> str | None:
    """parse_monitoring_config of a file. Raises: OSError, ValueError."""
    path = Path(path)
    return parse_monitoring_config(path.read_text(encoding="utf-8"), source=str(path))
