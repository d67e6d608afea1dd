"""The operator's own webhook certificates: minting, rotation, the merged caBundle, and the
options that choose among the certificate and registration modes."""

from __future__ import annotations

import argparse
import datetime as dt
import ssl

import pytest
from cryptography import x509

from tierwise.controller.certificates import (
    CertificateAuthority,
    SelfSignedCertificates,
    due_for_renewal,
    load_certificate,
    merge_ca_bundle,
)
from tierwise.controller.command import configure, options_from

DAY = dt.timedelta(days=1)


def test_a_self_signed_set_is_a_ca_and_a_serving_certificate_that_tls_accepts(tmp_path):
    store = SelfSignedCertificates(tmp_path, ["127.0.0.1", "webhook.ns.svc"], 30 * DAY)
    store.ensure()
    cert, ca = load_certificate(store.cert), load_certificate(store.ca)
    assert cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.ns.svc"]
    # The CA outlives the serving certificate, so rotating that never changes caBundle.
    assert ca.not_valid_after_utc - cert.not_valid_after_utc > 200 * DAY
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(store.cert, store.key)  # the pair matches


def test_a_service_name_longer_than_a_common_name_is_certified_in_full(tmp_path):
    host = "tierwise-webhook." + "n" * 60 + ".svc"  # a namespace may have 63 characters
    store = SelfSignedCertificates(tmp_path, [host, host + ".cluster.local"], 30 * DAY)
    store.ensure()
    sans = load_certificate(store.cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.DNSName) == [host, host + ".cluster.local"]


def test_rotation_reissues_the_serving_certificate_under_the_same_ca(tmp_path):
    store = SelfSignedCertificates(tmp_path, ["127.0.0.1"], 30 * DAY)
    store.ensure()
    before, ca_before = load_certificate(store.cert), store.ca.read_bytes()
    assert not store.renew_if_due()
    later = dt.datetime.now(dt.UTC) + 21 * DAY  # past two thirds of 30 days
    assert store.renew_if_due(later)
    after = load_certificate(store.cert)
    assert after.serial_number != before.serial_number
    assert store.ca.read_bytes() == ca_before
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(store.cert, store.key)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("gen-")]) == 1  # old removed


def test_a_ca_due_for_renewal_is_replaced_with_a_new_serving_certificate(tmp_path):
    store = SelfSignedCertificates(tmp_path, ["127.0.0.1"], 3 * DAY)
    store.ensure()
    ca_before = load_certificate(store.ca)
    assert store.renew_if_due(dt.datetime.now(dt.UTC) + 25 * DAY)
    ca_after = load_certificate(store.ca)
    assert ca_after.serial_number != ca_before.serial_number
    assert load_certificate(store.cert).issuer == ca_after.subject
    assert due_for_renewal(ca_before, dt.datetime.now(dt.UTC) + 21 * DAY)


def test_the_ca_bundle_keeps_other_replicas_cas_and_drops_expired_ones(tmp_path):
    ours = CertificateAuthority.create(tmp_path / "a", "a", 10 * DAY).cert_pem
    other = CertificateAuthority.create(tmp_path / "b", "b", 10 * DAY).cert_pem
    short = CertificateAuthority.create(tmp_path / "c", "c", dt.timedelta(minutes=1)).cert_pem
    merged = merge_ca_bundle(
        other + short, ours, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )
    names = [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(merged)]
    assert names == ["CN=a", "CN=b"]
    assert merge_ca_bundle(merged, ours) == merged  # idempotent: no growth per restart
    assert merge_ca_bundle(b"not a pem", ours) == ours
    many = b"".join(
        CertificateAuthority.create(tmp_path / f"m{i}", f"m{i}", DAY).cert_pem for i in range(6)
    )
    assert len(x509.load_pem_x509_certificates(merge_ca_bundle(many, ours))) == 4


def parse(argv, environ=None):
    parser = argparse.ArgumentParser()
    configure(parser, environ or {})
    return options_from(parser.parse_args(argv))


def test_flags_select_the_certificate_and_registration_modes():
    options = parse(
        [
            "--webhook-cert-san=tierwise-webhook.tierwise-system.svc",
            "--webhook-ca-bundle-configuration=tierwise",
            "--webhook-cert-validity-days=90",
            "--metrics-address=127.0.0.1",
            "--health-address=::1",
        ]
    )
    webhook = options.webhook
    assert webhook.self_signed and webhook.sans == ("tierwise-webhook.tierwise-system.svc",)
    assert webhook.ca_bundle_configuration == "tierwise" and not webhook.manage
    assert webhook.cert_validity == 90 * DAY
    assert (options.metrics_address, options.health_address) == ("127.0.0.1", "::1")
    given = parse(["--webhook-cert-dir=/etc/tierwise/webhook-tls"]).webhook
    assert not given.self_signed and given.cert_dir == "/etc/tierwise/webhook-tls"


def test_the_environment_sets_options_and_flags_win():
    environ = {
        "TIERWISE_WEBHOOK_CERT_DIR": "/certs",
        "TIERWISE_WEBHOOK_MANAGE": "true",
        "TIERWISE_NAMESPACES": "a, b",
        "TIERWISE_METRICS_PORT": "9100",
    }
    options = parse([], environ)
    assert options.webhook.cert_dir == "/certs" and options.webhook.manage
    assert options.namespaces == ("a", "b") and options.metrics_port == 9100
    assert parse(["--metrics-port=9200"], environ).metrics_port == 9200
    with pytest.raises(SystemExit, match="TIERWISE_METRICS_PORT"):
        parse([], {"TIERWISE_METRICS_PORT": "many"})
    with pytest.raises(SystemExit, match="true or false"):
        parse([], {"TIERWISE_STANDALONE": "maybe"})


def test_router_resources_come_from_json_and_bad_json_is_refused(capsys):
    options = parse(['--router-resources={"requests": {"cpu": "100m"}, "limits": {"memory": 1}}'])
    assert options.router_resources == {"requests": {"cpu": "100m"}, "limits": {"memory": "1"}}
    assert parse([]).router_resources is None
    for bad in ("{nope", '{"request": {}}', '{"limits": ["1Gi"]}'):
        with pytest.raises(SystemExit):
            parse([f"--router-resources={bad}"])
        assert "--router-resources" in capsys.readouterr().err


def test_contradictory_certificate_options_are_refused():
    with pytest.raises(SystemExit, match="--webhook-cert-san"):
        parse(["--webhook-cert-dir=/c", "--webhook-cert-san=x"])
    with pytest.raises(SystemExit, match="positive"):
        parse(["--webhook-cert-validity-days=0"])


def test_help_names_the_environment_variables():
    parser = argparse.ArgumentParser()
    configure(parser, {})
    assert "[TIERWISE_WEBHOOK_CERT_DIR]" in parser.format_help()
