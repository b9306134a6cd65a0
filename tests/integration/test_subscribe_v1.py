"""Subscribe API v1 against a real broker: refused stream requests keep the stream and its
leases, Deliveries messages stay under their budget, open validation and isolation (allow-list,
subscription cap, settings conflicts, namespaced groups), per-key order, the dead-letter nack,
and the per-subscription redelivery backoff."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._gen.ferry.v1 import record_pb2
from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from testkit.consumer_offsets import committed, wait_committed_to_end
from testkit.ferry_process import Ferries, FerryProcess
from testkit.grpc_errors import bad_request_fields, retry_delay_s
from testkit.kafka_produce import produce_direct
from testkit.kafka_read import read_topic
from testkit.publishing import publish_through_ferry
from testkit.stream_client import Received, StreamClient
from testkit.subscribe_calls import APPLIED, duration, group_of, open_request, unique_subscription
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")
MIB = 1024 * 1024
SUBSCRIBE = "/ferry.v1.Subscriber/Subscribe"
# Not a SubscribeRequest: field 1 (open) says 5 bytes follow, 2 do.
UNDECODABLE = b"\x0a\x05ab"


@pytest.fixture
def ferries(kafka: KafkaHandle, tmp_path: Path) -> Iterator[Ferries]:
    fleet = Ferries(tmp_path, kafka.bootstrap)
    yield fleet
    fleet.close()


def _serialize(item: bytes | pb.SubscribeRequest) -> bytes:
    return item if isinstance(item, bytes) else item.SerializeToString()


class V1Client(StreamClient):
    """A StreamClient that can also send raw bytes, and records `rejected` answers, the order
    of answers, and the encoded size of every Deliveries message."""

    def __init__(self, channel: grpc.Channel, open_message: pb.OpenSubscription) -> None:
        super().__init__(channel, open_message)
        self._subscribe = channel.stream_stream(
            SUBSCRIBE,
            request_serializer=_serialize,
            response_deserializer=pb.SubscribeResponse.FromString,
        )
        self.rejected: list[record_pb2.Failure] = []
        self.answers: list[str] = []  # "ack_results" or a rejected reason, in arrival order
        self.delivery_sizes: list[int] = []
        self.delivery_counts: list[int] = []

    def start(self, first: pb.SubscribeRequest | None = None) -> V1Client:
        self._requests.put(first or pb.SubscribeRequest(open=self.open_message))
        self._call = self._subscribe(self._raw_requests())
        self._thread = threading.Thread(target=self._read, name="subscribe-reader", daemon=True)
        self._thread.start()
        return self

    def send_bytes(self, data: bytes) -> None:
        self._requests.put(data)

    def _raw_requests(self) -> Iterator[bytes | pb.SubscribeRequest]:
        while True:
            item = self._requests.get()
            if not isinstance(item, bytes | pb.SubscribeRequest):
                return  # half-close
            yield item

    def _on_response(self, response: pb.SubscribeResponse) -> None:
        kind = response.WhichOneof("response")
        with self._cond:
            if kind == "deliveries":
                self.delivery_sizes.append(response.ByteSize())
                self.delivery_counts.append(len(response.deliveries.deliveries))
            elif kind == "ack_results":
                self.answers.append(kind)
            elif kind == "rejected":
                self.rejected.append(response.rejected)
                self.answers.append(response.rejected.reason)
                self._cond.notify_all()
                return
        super()._on_response(response)

    def wait_rejected(self, count: int, timeout: float = 15.0) -> list[record_pb2.Failure]:
        with self._cond:
            self._cond.wait_for(
                lambda: len(self.rejected) >= count or self.closed.is_set(), timeout
            )
            return list(self.rejected)


def v1_stream(ferry: FerryProcess, message: pb.OpenSubscription) -> V1Client:
    client = V1Client(ferry.channel(), message)
    client.open()
    return client


def _error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo in {error}")


def _open_error(ferry: FerryProcess, message: pb.OpenSubscription) -> grpc.RpcError:
    client = StreamClient(ferry.channel(), message).start()
    assert client.wait_closed(30), "the stream was not ended"
    assert client.opened is None
    assert client.error is not None
    return client.error


def _statuses(results: list[pb.AckIdResult]) -> list[int]:
    return [r.status for r in results]


def _take_all(client: StreamClient, count: int, timeout: float = 30.0) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(client.take(timeout=0.5))
    assert len(got) == count, f"{len(got)} of {count} deliveries"
    return got


# -- 1. refused requests keep the stream --------------------------------------------------------


def test_bad_requests_are_rejected_in_order_and_leases_stay_valid(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("v1-rejected", partitions=2)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 6, prefix="r")
    subscription = unique_subscription("rejected")
    client = v1_stream(ferry, open_request(subscription, [topic], lease_s=60))
    held = _take_all(client, 6)

    first = client.ack_async([held[0].ack_id])
    client.send_raw(pb.SubscribeRequest())  # no request set
    client.send_bytes(UNDECODABLE)
    client.send_raw(pb.SubscribeRequest(open=open_request(subscription, [topic])))
    client.send_raw(pb.SubscribeRequest(ack=pb.AckIds(ack_ids=[held[1].ack_id + "x"])))
    client.send_raw(pb.SubscribeRequest(ack=pb.AckIds()))
    client.send_raw(
        pb.SubscribeRequest(nack=pb.NackIds(ack_ids=[held[1].ack_id], dead_letter=True))
    )
    bad_delay = pb.NackIds(ack_ids=[held[1].ack_id], redelivery_delay=duration(7200))
    client.send_raw(pb.SubscribeRequest(nack=bad_delay))
    rest = client.ack_async(r.ack_id for r in held[1:])
    assert _statuses(first.result(15)) == [APPLIED]
    assert _statuses(rest.result(15)) == [APPLIED] * 5  # every lease outlived the mistakes

    rejected = client.wait_rejected(7)
    assert client.answers == [
        "ack_results",
        "FIELD_INVALID",
        "REQUEST_UNDECODABLE",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "NO_DEAD_LETTER_TOPIC",
        "FIELD_INVALID",
        "ack_results",
    ]
    assert [f.field for f in rejected] == [
        "request",
        "request",
        "open",
        "ack.ack_ids[0]",
        "ack.ack_ids",
        "",
        "nack.redelivery_delay",
    ]
    codes = [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 7
    codes[5] = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert [f.code for f in rejected] == codes
    assert not client.closed.is_set()
    assert not client.violations
    assert sorted(r.event_id for r in held) == sorted(published)
    time.sleep(1.0)
    assert client.take(timeout=0.5) == [], "nothing was redelivered"
    # Namespaced: the group is "ferry.<subscription>", and the bare name has no commits.
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    assert {o for o, _ in committed(kafka.bootstrap, subscription, topic).values()} == {-1001}
    client.cancel()


# -- 2. message budgets ---------------------------------------------------------------------------


def test_deliveries_messages_stay_under_the_budget(kafka: KafkaHandle, ferries: Ferries) -> None:
    topic = kafka.topic("v1-budget", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    produce_direct(
        kafka.bootstrap, topic, ((None, bytes([i]) * (900 * 1024), None) for i in range(10))
    )
    client = v1_stream(ferry, open_request(unique_subscription("budget"), [topic], lease_s=60))
    first = _take_all(client, 10)
    # Nacked together with one delay, all ten are leased again in one grant: one batch of 9 MB.
    nack = client.nack([r.ack_id for r in first], delay_s=1.0)
    assert _statuses(nack) == [APPLIED] * 10
    messages_before = len(client.delivery_sizes)
    again = _take_all(client, 10)
    assert {r.attempt for r in again} == {2}
    assert _statuses(client.ack(r.ack_id for r in again)) == [APPLIED] * 10
    redelivered = client.delivery_sizes[messages_before:]
    counts = client.delivery_counts[messages_before:]
    print(f"Deliveries sizes (bytes): first {client.delivery_sizes[:messages_before]}, "
          f"redelivered {redelivered} holding {counts} records")  # fmt: skip
    assert client.error is None
    assert max(client.delivery_sizes) < 3 * MIB
    assert len(redelivered) >= 4  # 10 x 900 KiB need at least 4 messages of < 3 MiB
    assert max(counts) == 3  # one grant of ten, split by the budget
    assert sum(redelivered) > 9 * 900 * 1024
    client.cancel()


# -- 3./4. open validation and isolation -----------------------------------------------------


def test_open_validation_allow_list_cap_and_conflicts(kafka: KafkaHandle, ferries: Ferries) -> None:
    allowed = kafka.topic("v1-allowed", partitions=1)
    dlq = kafka.topic("v1-allowed-dlq", partitions=1)
    outside = kafka.topic("v1-outside", partitions=1)
    ferry = ferries.start(
        *FERRY_ARGS, "--topic-allowlist", f"{allowed},{dlq}", "--max-subscriptions", "1"
    )
    cases = [
        (open_request("s1", [allowed, outside]), "TOPIC_NOT_ALLOWED", "open.topics[1]"),
        (
            open_request("s1", [allowed], max_attempts=2, dead_letter_topic=outside),
            "TOPIC_NOT_ALLOWED",
            "open.dead_letter_topic",
        ),
        (open_request("s1", [allowed, allowed]), "FIELD_INVALID", "open.topics[1]"),
        (open_request("s1", [allowed], max_bytes=2**30 + 1), "FIELD_INVALID",
         "open.max_outstanding_bytes"),
    ]  # fmt: skip
    for message, reason, field in cases:
        error = _open_error(ferry, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert _error_reason(error) == reason
        assert bad_request_fields(error) == [field]

    subscription = unique_subscription("capped")
    secret = pb.OpenSubscription(
        subscription=subscription,
        topics=[allowed],
        dead_letter_topic=dlq,
        delivery_order=pb.DELIVERY_ORDER_PER_KEY,
    )
    live = v1_stream(ferry, secret)
    v1_stream(ferry, secret).cancel()  # the same settings: a second stream is fine

    # The cap counts subscriptions (Kafka consumers), not streams.
    error = _open_error(ferry, open_request(unique_subscription("second"), [allowed]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_reason(error) == "TOO_MANY_SUBSCRIPTIONS"
    assert (retry_delay_s(error) or 0) > 0

    # Other settings for an open subscription: refused, without telling what they are.
    for other in [
        pb.OpenSubscription(subscription=subscription, topics=[allowed], dead_letter_topic=dlq),
        pb.OpenSubscription(subscription=subscription, topics=[allowed]),
    ]:
        error = _open_error(ferry, other)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _error_reason(error) == "SUBSCRIPTION_SETTINGS_CONFLICT"
        text = error.details() or ""
        assert dlq not in text, text
        assert "PER_KEY" not in text, text
        assert "per_key" not in text, text
    assert not live.closed.is_set()
    live.cancel()


# -- 5. per-key order -------------------------------------------------------------------------


def test_per_key_order_never_leases_a_newer_record_of_a_busy_key(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("v1-order", partitions=2)
    ferry = ferries.start(*FERRY_ARGS)
    keys: list[bytes | None] = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", None]
    produce_direct(
        kafka.bootstrap,
        topic,
        ((keys[i % len(keys)], b"%d" % i, None) for i in range(60)),
    )
    message = open_request(unique_subscription("order"), [topic], lease_s=60)
    message.delivery_order = pb.DELIVERY_ORDER_PER_KEY
    client = v1_stream(ferry, message)

    def key_of(r: Received) -> tuple[int, bytes | None]:
        event = r.delivery.event
        return (r.delivery.partition, event.key if event.HasField("key") else None)

    arrivals: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    acked: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    widest = 0
    done = 0
    deadline = time.monotonic() + 60
    while done < 60 and time.monotonic() < deadline:
        batch = client.take(timeout=0.5)
        widest = max(widest, len(batch))
        held: set[tuple[int, bytes | None]] = set()
        for r in batch:
            key = key_of(r)
            # The client acked or nacked everything it took before: one record per key at most.
            assert key not in held, f"two records of {key} outstanding at once"
            held.add(key)
            arrivals[key].append(r.delivery.offset)
        # Nack every third record on its first delivery (redelivered after 0.3 s); ack the rest.
        nacked = [r for r in batch if r.attempt == 1 and r.delivery.offset % 3 == 0]
        to_ack = [r for r in batch if r not in nacked]
        if nacked:
            assert _statuses(client.nack([r.ack_id for r in nacked], delay_s=0.3)) == [
                APPLIED
            ] * len(nacked)
        if to_ack:
            assert _statuses(client.ack([r.ack_id for r in to_ack])) == [APPLIED] * len(to_ack)
            for r in to_ack:
                acked[key_of(r)].append(r.delivery.offset)
            done += len(to_ack)
    assert done == 60
    assert widest > 1, "records of different keys were leased together"
    for key, offsets in arrivals.items():
        # A redelivery comes before any newer record of its key: arrivals never go back.
        assert offsets == sorted(offsets), (key, offsets)
        assert acked[key] == sorted(set(offsets)), (key, acked[key])
    assert sum(len(o) for o in arrivals.values()) > 60  # some were nacked and came again
    assert not client.violations
    client.cancel()


# -- 6. dead letter now -----------------------------------------------------------------------


def test_nack_with_dead_letter_writes_the_dead_letter_topic_and_moves_on(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("v1-dead", partitions=1)
    dead = kafka.topic("v1-dead-dlq", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 10, prefix="d")
    subscription = unique_subscription("dead")
    # A dead-letter topic without max_delivery_attempts: dead letters by nack only.
    client = v1_stream(
        ferry, open_request(subscription, [topic], lease_s=60, dead_letter_topic=dead)
    )
    held = {r.event_id: r for r in _take_all(client, 10)}
    poison, unary_poison = held[published[3]], held[published[6]]

    stream_nack = pb.NackIds(ack_ids=[poison.ack_id], dead_letter=True)
    sent = client._send("nack", [poison.ack_id], pb.SubscribeRequest(nack=stream_nack))
    assert _statuses(sent.result(10)) == [APPLIED]
    reply = ferry.subscriber().Nack(
        pb.NackRequest(subscription=subscription, ack_ids=[unary_poison.ack_id], dead_letter=True),
        timeout=10,
    )
    assert _statuses(list(reply.results)) == [APPLIED]
    rest = [r for r in held.values() if r not in (poison, unary_poison)]
    assert _statuses(client.ack(r.ack_id for r in rest)) == [APPLIED] * 8

    letters = read_topic(kafka.bootstrap, dead, expect=2, timeout=30, quiet=1.0)
    assert len(letters) == 2
    by_origin = {int(x.headers["ferry-dead-letter-original-offset"]): x for x in letters}
    for received in (poison, unary_poison):
        letter = by_origin[received.delivery.offset]
        headers = {k: v.decode() for k, v in letter.headers.items()}
        assert headers["ferry-dead-letter-original-topic"] == topic
        assert headers["ferry-dead-letter-original-partition"] == str(received.delivery.partition)
        assert headers["ferry-dead-letter-original-event-id"] == received.event_id
        assert headers["ferry-dead-letter-subscription"] == subscription
        assert headers["ferry-dead-letter-delivery-attempts"] == "1"
        assert headers["ferry-dead-letter-reason"] == "dead-lettered by subscriber"
        assert letter.value == f"payload-{received.event_id}".encode()
    # Counted as acked: the commit passes them, and they never come again.
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    time.sleep(1.5)
    assert client.take(timeout=0.5) == []
    assert not client.rejected
    assert not client.violations

    # Without a dead-letter topic: FAILED_PRECONDITION (unary); rejected on a stream.
    plain_topic = kafka.topic("v1-dead-plain", partitions=1)
    other = unique_subscription("no-dlq")
    plain = v1_stream(ferry, open_request(other, [plain_topic], lease_s=60))
    publish_through_ferry(ferry, plain_topic, 1, prefix="plain")
    [only] = _take_all(plain, 1)
    with pytest.raises(grpc.RpcError) as caught:
        ferry.subscriber().Nack(
            pb.NackRequest(subscription=other, ack_ids=[only.ack_id], dead_letter=True), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_reason(caught.value) == "NO_DEAD_LETTER_TOPIC"
    plain.send_raw(pb.SubscribeRequest(nack=pb.NackIds(ack_ids=[only.ack_id], dead_letter=True)))
    [failure] = plain.wait_rejected(1)
    assert failure.reason == "NO_DEAD_LETTER_TOPIC"
    assert _statuses(plain.ack([only.ack_id])) == [APPLIED]  # the lease outlived both
    assert len(read_topic(kafka.bootstrap, dead, timeout=10, quiet=1.0)) == 2
    plain.cancel()
    client.cancel()


# -- 7. redelivery backoff ----------------------------------------------------------------------


def test_a_nack_without_delay_waits_the_subscriptions_min_backoff(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("v1-backoff", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    [event_id] = publish_through_ferry(ferry, topic, 1, prefix=f"b{uuid.uuid4().hex[:4]}")
    message = open_request(unique_subscription("backoff"), [topic], lease_s=60)
    message.min_redelivery_backoff.CopyFrom(duration(2.0))
    message.max_redelivery_backoff.CopyFrom(duration(2.0))
    client = v1_stream(ferry, message)
    [first] = _take_all(client, 1)
    sent = time.monotonic()
    assert _statuses(client.nack([first.ack_id])) == [APPLIED]
    [again] = _take_all(client, 1, timeout=15)
    waited = again.at - sent
    print(f"nack without delay, backoff 2 s: redelivered after {waited:.3f} s")
    assert again.event_id == event_id
    assert again.attempt == 2
    assert 2.0 <= waited < 3.5, waited
    client.cancel()
