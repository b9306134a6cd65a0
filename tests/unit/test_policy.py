"""The authorisation policy: parsing (every malformed shape refused with its place named),
pattern matching, decisions per identity, and the settings that must come with a policy."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sidecar.api.access import ANYONE, OpenAccess, PolicyAccess, access_control, identify
from sidecar.api.policy import Identity, Patterns, PolicyError, load_policy, parse_policy
from sidecar.api.tokens import TokenStore
from sidecar.config import load_settings
from sidecar.errors import ConfigError, PermissionDenied

TOKEN = "orders-token-0123456789abcdef"
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()

POLICY = f"""
principals:
  - name: orders
    token_sha256: {DIGEST}
    publish: [orders, "orders.*"]
    subscriptions: ["orders-audit"]
    read: [orders]
  - name: billing
    cert_subject: "CN=billing,O=Ferry Test"
    cert_san: [spiffe://acme/billing]
    publish: [billing-dlq]
    subscriptions: ["billing-*"]
    read: ["orders", "payments"]
  - name: batch-jobs
    token_file: /etc/ferry/tokens/batch
    publish: ["*"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FERRY_"):
            monkeypatch.delenv(name)


ORDERS = Identity(token_sha256=DIGEST, token_source="FERRY_TOKENS")
BILLING_BY_SUBJECT = Identity(cert_subject="CN=billing,O=Ferry Test")
BILLING_BY_SAN = Identity(cert_sans=frozenset({"spiffe://acme/billing", "billing.local"}))
BATCH = Identity(token_sha256="0" * 64, token_source="/etc/ferry/tokens/batch")
NOBODY = Identity()
STRANGER = Identity(token_sha256="1" * 64, token_source="FERRY_TOKENS", cert_subject="CN=x")


# -- patterns ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        (["orders"], "orders", True),
        (["orders"], "orders.eu", False),
        (["orders"], "order", False),
        (["orders.*"], "orders.eu", True),
        (["orders.*"], "orders.", True),
        (["orders.*"], "orders", False),
        (["orders*"], "orders-x", True),
        (["*"], "anything", True),
        ([], "orders", False),
        (["a", "b.*"], "b.c", True),
    ],
)
def test_patterns(patterns: list[str], name: str, matches: bool) -> None:
    assert Patterns.parse(patterns).matches(name) is matches


# -- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "topic", "allowed"),
    [
        (ORDERS, "orders", True),
        (ORDERS, "orders.eu", True),
        (ORDERS, "payments", False),
        (BILLING_BY_SUBJECT, "billing-dlq", True),
        (BILLING_BY_SUBJECT, "orders", False),
        (BILLING_BY_SAN, "billing-dlq", True),
        (BATCH, "whatever", True),
        (NOBODY, "orders", False),
        (STRANGER, "orders", False),
    ],
)
def test_publish(who: Identity, topic: str, allowed: bool) -> None:
    policy = parse_policy(POLICY)
    assert policy.may_publish(who, topic) is allowed
    if allowed:
        policy.check_publish(who, [topic, topic])
    else:
        with pytest.raises(PermissionDenied, match=f"publish to topic '{topic}'"):
            policy.check_publish(who, ["orders.eu", topic] if who is ORDERS else [topic])


def test_a_batch_is_refused_if_any_topic_is() -> None:
    policy = parse_policy(POLICY)
    with pytest.raises(PermissionDenied, match="payments"):
        policy.check_publish(ORDERS, ["orders", "payments", "orders.eu"])


@pytest.mark.parametrize(
    ("who", "name", "topics", "dead_letter", "refusal"),
    [
        (ORDERS, "orders-audit", ["orders"], "", None),
        (ORDERS, "orders-audit", ["orders"], "orders.dlq", None),
        (ORDERS, "orders-audit", ["orders", "payments"], "", "read topic 'payments'"),
        (ORDERS, "orders-audit", ["orders"], "billing-dlq", "dead-letter topic 'billing-dlq'"),
        (ORDERS, "billing-main", ["orders"], "", "subscription 'billing-main'"),
        (BILLING_BY_SAN, "billing-main", ["orders", "payments"], "billing-dlq", None),
        (BILLING_BY_SUBJECT, "billing-main", ["refunds"], "", "read topic 'refunds'"),
        (BATCH, "anything", ["orders"], "", "subscription 'anything'"),
        (NOBODY, "orders-audit", ["orders"], "", "subscription 'orders-audit'"),
    ],
)
def test_subscriptions(
    who: Identity, name: str, topics: list[str], dead_letter: str, refusal: str | None
) -> None:
    policy = parse_policy(POLICY)
    if refusal is None:
        policy.check_subscription(who, name, topics, dead_letter)
    else:
        with pytest.raises(PermissionDenied, match=refusal):
            policy.check_subscription(who, name, topics, dead_letter)


@pytest.mark.parametrize(
    ("who", "name", "allowed"),
    [
        (ORDERS, "orders-audit", True),
        (ORDERS, "billing-x", False),
        (BILLING_BY_SAN, "billing-x", True),
        (NOBODY, "orders-audit", False),
    ],
)
def test_acks_only_on_subscriptions_the_caller_may_open(
    who: Identity, name: str, allowed: bool
) -> None:
    policy = parse_policy(POLICY)
    if allowed:
        policy.check_settle(who, name)
    else:
        with pytest.raises(PermissionDenied):
            policy.check_settle(who, name)


def test_grants_of_several_principals_add_up() -> None:
    both = Identity(token_sha256=DIGEST, cert_subject="CN=billing,O=Ferry Test")
    policy = parse_policy(POLICY)
    assert [p.name for p in policy.of(both)] == ["orders", "billing"]
    assert policy.may_publish(both, "orders")
    assert policy.may_publish(both, "billing-dlq")


def test_json_is_read_too() -> None:
    document = {"principals": [{"name": "a", "token_sha256": DIGEST.upper(), "publish": ["t"]}]}
    policy = parse_policy(json.dumps(document))
    assert policy.may_publish(ORDERS, "t")
    assert policy.needs_tokens()
    assert not policy.needs_certificates()


def test_an_empty_principal_list_denies_everything() -> None:
    policy = parse_policy("principals: []")
    assert not policy.may_publish(ORDERS, "orders")


# -- malformed policies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("principals: [", "not valid YAML or JSON at line"),
        ("[]", "expected a mapping with one key"),
        ("principals: []\nextra: 1", "expected a mapping with one key"),
        ("principals: {}", "principals: expected a list"),
        ("principals: [x]", r"principals\[0\]: expected a mapping"),
        ("principals: [{publish: [a]}]", r"principals\[0\].name"),
        ("principals: [{name: 'bad name'}]", r"principals\[0\].name"),
        ("principals: [{name: a, publish: [t]}]", r"\(a\): needs an identity"),
        (f"principals: [{{name: a, token_sha256: {DIGEST}, publsh: [t]}}]", "unknown keys"),
        ("principals: [{name: a, token_sha256: abc}]", "64 hex digits"),
        (f"principals: [{{name: a, token_sha256: {DIGEST}, publish: 3}}]", r"a\)\.publish"),
        (f"principals: [{{name: a, token_sha256: {DIGEST}, read: ['']}}]", r"a\)\.read"),
        ("principals: [{name: a, cert_san: [1]}]", r"a\)\.cert_san"),
        (
            f"principals: [{{name: a, token_sha256: {DIGEST}}}, {{name: a, cert_san: x}}]",
            "names must be unique",
        ),
    ],
)
def test_malformed_policy_is_refused(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(path)
    path.write_text("principals: 1")
    with pytest.raises(PolicyError, match=str(path)):
        load_policy(path)


# -- identities and settings -------------------------------------------------------------------


def test_identify_from_token_and_certificate(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(TOKEN + "\n")
    tokens = TokenStore([file])
    auth = {
        "transport_security_type": [b"ssl"],
        "x509_subject": [b"CN=billing,O=Ferry Test"],
        "x509_subject_alternative_name": [b"spiffe://acme/billing", b"billing.local"],
    }
    who = identify((("authorization", f"Bearer {TOKEN}"),), auth, tokens)
    assert who.token_sha256 == DIGEST
    assert who.token_source == str(file)
    assert who.cert_subject == "CN=billing,O=Ferry Test"
    assert who.cert_sans == {"spiffe://acme/billing", "billing.local"}
    anonymous = identify((), {"transport_security_type": [b"insecure"]}, None)
    assert anonymous == Identity()


def test_without_a_policy_everyone_may_do_everything() -> None:
    access = access_control(load_settings(), None)
    assert isinstance(access, OpenAccess)
    ANYONE.check_publish(["x"])
    ANYONE.check_subscription("s", ["t"], "d")
    ANYONE.check_settle("s")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_a_policy_needs_the_identities_it_names(tmp_path: Path) -> None:
    tokens_file = tmp_path / "batch"
    tokens_file.write_text(TOKEN + "\n")
    tokens = TokenStore([tokens_file])
    by_token = _write(tmp_path, f"principals: [{{name: a, token_sha256: {DIGEST}}}]")
    with pytest.raises(ConfigError, match="no --token-file or FERRY_TOKENS"):
        access_control(load_settings(policy_file=by_token), None)
    settings = load_settings(policy_file=by_token, token_file=str(tokens_file))
    assert isinstance(access_control(settings, tokens), PolicyAccess)

    by_cert = _write(tmp_path, "principals: [{name: a, cert_san: x}]")
    with pytest.raises(ConfigError, match="--tls-client-ca"):
        access_control(load_settings(policy_file=by_cert), None)

    by_file = _write(tmp_path, "principals: [{name: a, token_file: /elsewhere}]")
    settings = load_settings(policy_file=by_file, token_file=str(tokens_file))
    with pytest.raises(ConfigError, match="not one of --token-file"):
        access_control(settings, tokens)

    broken = _write(tmp_path, "principals: 1")
    with pytest.raises(ConfigError, match="policy_file"):
        access_control(load_settings(policy_file=broken), None)


def test_policy_file_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_POLICY_FILE", "/etc/ferry/policy.yaml")
    assert load_settings().policy_file == Path("/etc/ferry/policy.yaml")


def test_status_is_granted_by_status_true_only() -> None:
    policy = parse_policy(
        f"""
principals:
  - name: operator
    token_sha256: {DIGEST}
    status: true
  - name: app
    cert_subject: "CN=app"
    publish: ["*"]
"""
    )
    policy.check_status(Identity(token_sha256=DIGEST))
    with pytest.raises(PermissionDenied, match="status"):
        policy.check_status(Identity(cert_subject="CN=app"))
    with pytest.raises(PolicyError, match=r"status: expected true or false"):
        parse_policy("principals:\n  - name: x\n    cert_subject: CN=x\n    status: yes-please\n")
    ANYONE.check_status()  # without a policy: whoever Ferry lets in
