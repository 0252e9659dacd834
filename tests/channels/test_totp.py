"""TOTP (RFC 6238) through pyotp: RFC vectors, provisioning URIs, safe verification."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import pytest

from gatekeeper.channels import totp

# RFC 6238 Appendix B, SHA-1: the seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("at", "eight_digits"), RFC_VECTORS)
def test_rfc6238_sha1_vectors(at: int, eight_digits: str) -> None:
    """With 6 digits the code is the RFC's 8-digit value's last six; it verifies at that time, not later."""
    code = eight_digits[-6:]
    assert totp.now(RFC_SECRET, at=at) == code
    assert totp.verify(RFC_SECRET, code, at=at, window=0)
    assert not totp.verify(RFC_SECRET, code, at=at + 300, window=1)


def test_window_allows_one_step_of_skew() -> None:
    """window=1 accepts the previous and next 30-second step, window=0 does not."""
    code = totp.now(RFC_SECRET, at=1234567890)
    assert totp.verify(RFC_SECRET, code, at=1234567890 + 30, window=1)
    assert not totp.verify(RFC_SECRET, code, at=1234567890 + 30, window=0)


def test_new_secret_and_provisioning_uri() -> None:
    """Secrets are fresh base32; the URI carries the issuer, the RFC defaults, and the secret."""
    a, b = totp.new_secret(), totp.new_secret()
    assert a != b and len(base64.b32decode(a)) == 20
    uri = totp.provisioning_uri(a, name="alex@example.com", issuer="Gatekeeper Demo")
    parsed = urlparse(uri)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    query = parse_qs(parsed.query)
    assert query["secret"] == [a] and query["issuer"] == ["Gatekeeper Demo"]
    assert query.get("digits", ["6"]) == ["6"] and query.get("period", ["30"]) == ["30"]


@pytest.mark.parametrize("code", ["", "abcdef", "12 34", None, "1234567"])
def test_bad_codes_never_raise(code: object) -> None:
    """Malformed codes are simply not valid."""
    assert totp.verify(RFC_SECRET, code, at=59) is False


def test_bad_secret_is_not_valid() -> None:
    """A secret that is not base32 verifies nothing instead of raising."""
    assert totp.verify("not base32!!", "123456") is False
