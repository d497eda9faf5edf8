"""A real OTLP/gRPC receiver for tests, built from opentelemetry-proto's service stubs."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attrs(kvs) -> dict:
    """OTLP KeyValue list -> dict (arrays become lists)."""
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind)
    return out


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer, trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver on 127.0.0.1 that keeps what it is sent."""

    def __init__(self, port: int = 0) -> None:
        self.metric_requests: list = []
        self.trace_requests: list = []
        self.got = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def Export(self, request, context):  # noqa: N802 - the generated service's name
        if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
            self.metric_requests.append(request)
            self.got.set()
            return metrics_service_pb2.ExportMetricsServiceResponse()
        self.trace_requests.append(request)
        self.got.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def __enter__(self) -> "Receiver":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)

    def metrics(self) -> dict:
        """name -> Metric, from the latest request that has it."""
        out = {}
        for req in self.metric_requests:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out[m.name] = m
        return out

    def spans(self) -> list:
        return [s for req in self.trace_requests for rs in req.resource_spans
                for ss in rs.scope_spans for s in ss.spans]
