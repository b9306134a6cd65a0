"""Builds the grpc.aio server: Ferry's services (Publisher, Subscriber, Admin), health,
reflection, the token and error interceptors, and its port or socket (with TLS when
configured)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar._gen.ferry.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    publisher_pb2,
    publisher_pb2_grpc,
    subscriber_pb2,
    subscriber_pb2_grpc,
)
from sidecar.api.admin import AdminServicer
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
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
#: Health "service" that reports whether Kafka is reachable; publishing works either way.
KAFKA_HEALTH = "ferry.kafka"
#: Ferry's answers: a Deliveries message keeps to its own budget, one large record excepted.
MAX_SEND_BYTES = 16 * 1024 * 1024
#: Keepalive pings a client may send too early before its connection is closed (gRPC's default).
PING_STRIKES = 2


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


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments: message limits, and the limits a hostile client meets
    (streams per connection, keepalive ping enforcement, idle and aged connections)."""
    options = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_connection_streams),
        # Pings closer together than this earn a strike; past max_ping_strikes, GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", PING_STRIKES),
        # Clients may keep an idle connection alive with pings (at the interval above).
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if settings.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", _ms(settings.max_connection_idle_s)))
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", _ms(settings.max_connection_age_s)))
        grace = _ms(settings.max_connection_age_grace_s)
        options.append(("grpc.max_connection_age_grace_ms", grace))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def build_server(
    publisher: PublisherServicer,
    subscriber: SubscriberServicer,
    health_: Health,
    settings: Settings,
    tokens: TokenStore | None = None,
    admin: AdminServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Create the server and bind `settings.listen`; return it with the bound port.

    With `tokens`, every call but health needs one of them (sidecar/api/auth.py)."""
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if tokens is not None:
        interceptors.append(TokenAuthInterceptor(tokens))
    interceptors.append(ErrorMappingInterceptor())  # inside: refused calls are never decoded
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    publisher_pb2_grpc.add_PublisherServicer_to_server(publisher, server)
    subscriber_pb2_grpc.add_SubscriberServicer_to_server(subscriber, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_.servicer, server)
    names = [PUBLISHER, SUBSCRIBER, health.SERVICE_NAME, reflection.SERVICE_NAME]
    if admin is not None:
        admin_pb2_grpc.add_AdminServicer_to_server(admin, server)
        names.insert(2, ADMIN)
    if settings.reflection:
        reflection.enable_server_reflection(names, server)
    credentials = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        files = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        credentials = ReloadingCertificates(files).credentials()
    port = bind(server, settings.listen, credentials, settings.listen_socket, settings.socket_mode)
    return server, port
