"""Builds the grpc.aio server: Ferry's services, health, reflection, the token and error
interceptors, and its port or socket (with TLS when configured)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._gen.ferry.v1 import (
    publisher_pb2,
    publisher_pb2_grpc,
    subscriber_pb2,
    subscriber_pb2_grpc,
)
from sidecar.api.auth import TokenAuthInterceptor
from sidecar.api.listener import bind
from sidecar.api.publisher import PublisherServicer
from sidecar.api.status import ErrorMappingInterceptor
from sidecar.api.subscriber import SubscriberServicer
from sidecar.api.tls import ReloadingCertificates, TlsFiles
from sidecar.api.tokens import TokenStore
from sidecar.config import Settings

PUBLISHER = publisher_pb2.DESCRIPTOR.services_by_name["Publisher"].full_name
SUBSCRIBER = subscriber_pb2.DESCRIPTOR.services_by_name["Subscriber"].full_name
#: Health "service" that reports whether Kafka is reachable; publishing works either way.
KAFKA_HEALTH = "ferry.kafka"
#: Ferry's answers: a Deliveries message keeps to its own budget, one large record excepted.
MAX_SEND_BYTES = 16 * 1024 * 1024


class Health:
    """Wraps the standard health servicer with Ferry's service names."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()

    async def set(self, serving: bool, services: Iterable[str]) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in services:
            await self.servicer.set(service, status)


def build_server(
    publisher: PublisherServicer,
    subscriber: SubscriberServicer,
    health_: Health,
    settings: Settings,
    tokens: TokenStore | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Create the server and bind `settings.listen`; return it with the bound port.

    With `tokens`, every call but health needs one of them (sidecar/api/auth.py)."""
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if tokens is not None:
        interceptors.append(TokenAuthInterceptor(tokens))
    interceptors.append(ErrorMappingInterceptor())  # inside: refused calls are never decoded
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    publisher_pb2_grpc.add_PublisherServicer_to_server(publisher, server)
    subscriber_pb2_grpc.add_SubscriberServicer_to_server(subscriber, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_.servicer, server)
    if settings.reflection:
        names = [PUBLISHER, SUBSCRIBER, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
    credentials = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        files = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        credentials = ReloadingCertificates(files).credentials()
    port = bind(server, settings.listen, credentials, settings.listen_socket, settings.socket_mode)
    return server, port
