"""Certificates for a secured local Kafka (`testkit.kafka_cluster`), made at test time.

    certs = make_kafka_certs(tmp_path / "certs")
    # certs.ca: trust this; certs.broker_keystore: the broker's key and chain (PEM)

One test CA signs the broker's certificate (for the loopback address only, so that a client
checking host names accepts ``127.0.0.1`` and refuses ``localhost``) and a client
certificate whose key is encrypted with `client_key_password`. A second CA, `other_ca`, signs
nothing the broker shows: a client trusting only it must refuse the broker. Keys are EC P-256
(quick to make); Kafka reads PKCS#8 PEM keys, and librdkafka reads the encrypted one with
``ssl.key.password``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-pass-7Qm"  # noqa: S105 - a throwaway test key's password
VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class KafkaCerts:
    """PEM files under one directory."""

    ca: Path  # the CA that signed the broker's and the client's certificates
    other_ca: Path  # a CA that signed neither
    broker_keystore: Path  # the broker's unencrypted PKCS#8 key, then its certificate chain
    client_cert: Path
    client_key: Path  # encrypted PKCS#8, with `client_key_password`
    client_key_password: str = CLIENT_KEY_PASSWORD


@dataclass(frozen=True, slots=True)
class _Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_kafka_certs(directory: Path, broker_ip: str = "127.0.0.1") -> KafkaCerts:
    """Make the CAs, the broker's and the client's certificates under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("Ferry test CA")
    other = _ca("Ferry other test CA")
    broker_key = _key()
    broker_san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(broker_ip))])
    broker_cert = _leaf(ca, broker_key, "kafka-broker", broker_san, ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = _key()
    client_san = x509.SubjectAlternativeName([x509.DNSName("ferry-client")])
    client_cert = _leaf(ca, client_key, "ferry", client_san, ExtendedKeyUsageOID.CLIENT_AUTH)

    certs = KafkaCerts(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        broker_keystore=directory / "broker-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    certs.ca.write_bytes(_pem(ca.cert))
    certs.other_ca.write_bytes(_pem(other.cert))
    certs.broker_keystore.write_bytes(
        _private_pem(broker_key, None) + _pem(broker_cert) + _pem(ca.cert)
    )
    certs.client_cert.write_bytes(_pem(client_cert))
    certs.client_key.write_bytes(_private_pem(client_key, certs.client_key_password))
    return certs


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALID_FOR)
    )


def _ca(common_name: str) -> _Issuer:
    key = _key()
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(key, cert)


def _leaf(
    issuer: _Issuer,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    san: x509.SubjectAlternativeName,
    purpose: x509.ObjectIdentifier,
) -> x509.Certificate:
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return (
        _builder(common_name, issuer.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(authority, critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
