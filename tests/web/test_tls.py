"""TLS on the listener: TLS 1.3 only, certificate reloaded on SIGHUP, over real loopback TLS."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_node.config import TlsConfig
from edge_node.errors import ConfigError
from edge_node.web.tls import ReloadableTls
from tests.cli.test_cli import clean_environment
from tests.served import NotifyListener, ServedNode


def write_certificate(directory: Path, name: str) -> tuple[Path, Path, x509.Certificate]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, certificate


def client_context(trusted: list[Path], maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for path in trusted:
        context.load_verify_locations(path)
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = maximum
    return context


def served_certificate(connection: http.client.HTTPSConnection) -> x509.Certificate:
    assert connection.sock is not None
    der = connection.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return x509.load_der_x509_certificate(der)


def get_healthz(connection: http.client.HTTPSConnection) -> int:
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


class TestTlsListener:
    def test_tls13_is_served_and_a_sighup_rotates_the_certificate(
        self, tmp_path: Path, notify: NotifyListener
    ) -> None:
        """The node answers over TLS 1.3 and refuses a client capped at TLS 1.2; after the
        certificate files are replaced and SIGHUP sent, a new connection gets the new
        certificate while a connection opened before keeps working."""
        cert, key, first = write_certificate(tmp_path, "first")
        live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
        live_cert.write_bytes(cert.read_bytes())
        live_key.write_bytes(key.read_bytes())
        env = clean_environment(
            EDGE_NODE_TLS_CERT_FILE=str(live_cert), EDGE_NODE_TLS_KEY_FILE=str(live_key)
        )
        node = ServedNode(tmp_path / "data", notify=notify, env=env, log=tmp_path / "log")
        try:
            assert node.url.startswith("https://127.0.0.1:")
            port = int(node.url.rsplit(":", 1)[1])
            notify.wait_for("READY")
            second_cert, second_key, second = write_certificate(tmp_path, "second")
            trusted = [cert, second_cert]
            before = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(trusted))
            assert get_healthz(before) == 200
            assert before.sock is not None
            assert before.sock.version() == "TLSv1.3"  # type: ignore[attr-defined]
            assert served_certificate(before) == first

            old_client = client_context(trusted, maximum=ssl.TLSVersion.TLSv1_2)
            with pytest.raises(ssl.SSLError):
                get_healthz(http.client.HTTPSConnection("127.0.0.1", port, context=old_client))

            live_cert.write_bytes(second_cert.read_bytes())
            live_key.write_bytes(second_key.read_bytes())
            node.signal(signal.SIGHUP)
            notify.wait_for("RELOADING")
            notify.messages.clear()
            notify.wait_for("READY")
            after = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(trusted))
            assert get_healthz(after) == 200
            assert served_certificate(after) == second
            assert get_healthz(before) == 200  # the open connection kept its session
            before.close()
            after.close()
            assert node.stop() == 0
        finally:
            node.kill()


class TestReloadableTls:
    def test_a_bad_pair_on_reload_keeps_the_certificate_served(self, tmp_path: Path) -> None:
        """Reloading with a key that does not match its certificate fails and changes nothing."""
        cert, key, _ = write_certificate(tmp_path, "good")
        _, other_key, _ = write_certificate(tmp_path, "other")
        tls = ReloadableTls(TlsConfig(str(cert), str(key)))
        assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert tls.reload(TlsConfig(str(cert), str(other_key))) is False
        assert tls.config == TlsConfig(str(cert), str(key))

    def test_unusable_files_at_start_are_a_configuration_error(self, tmp_path: Path) -> None:
        """A missing key file, or a certificate without its key, is a ConfigError naming tls."""
        cert, _, _ = write_certificate(tmp_path, "lonely")
        with pytest.raises(ConfigError, match="tls"):
            ReloadableTls(TlsConfig(str(cert), str(tmp_path / "missing.key")))
        with pytest.raises(ConfigError, match=r"tls\.cert_file and tls\.key_file"):
            ReloadableTls(TlsConfig(str(cert), ""))
