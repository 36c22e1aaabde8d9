"""Privacy scrub: typed placeholders (checked against independent Luhn/mod-97 values) and pseudonyms."""

import pytest

from notme_mlx.ingest.scrub import Scrubber, iban_ok, luhn_ok


def test_luhn_and_iban_validators_on_known_numbers():
    assert luhn_ok("4111111111111111") and luhn_ok("5500005555555559") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")
    # Published example IBANs (ECBS/SWIFT registry examples)
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize("text,want", [
    ("write to jo.smith+tag@mail.example.co.uk today", "write to <EMAIL> today"),
    ("call +44 20 7946 0958 or (555) 010-0199", "call <PHONE> or <PHONE>"),
    ("card 4111-1111-1111-1111 exp 12/27", "card <CARD> exp 12/27"),
    ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112"),
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN <IBAN> thanks"),
    ("see https://example.org/docs?page=2", "see https://example.org/docs?page=2"),
    ("reset: https://app.example.com/reset?token=abc123XYZ&u=7", "reset: <URL_SECRET>"),
    ("db https://admin:hunter2@db.example.com/x", "db <URL_SECRET>"),
    ("key sk-proj-abcdefghijklmnopqrstuvwx123 leaked", "key <SECRET> leaked"),
    ("meet 2024-03-15 at 10:30, 3 km, room 1204", "meet 2024-03-15 at 10:30, 3 km, room 1204"),
])
def test_placeholders(text, want):
    assert Scrubber().scrub(text) == want


def test_pseudonyms_consistent_and_keep_owner():
    a = Scrubber(keep=["Alex Rivera"])
    b = Scrubber(keep=["Alex Rivera"])
    pa = a.pseudonym("Jordan Lee")
    assert pa == b.pseudonym("jordan  lee") and pa != "Jordan Lee"  # same person -> same pseudonym across runs
    assert a.pseudonym("Sam Okafor") != pa
    out = a.scrub("Alex told Jordan Lee and Jordan that Sam Okafor is late; jordanian food later")
    first = pa.split()[0]
    assert out == f"Alex told {pa} and {first} that {a.pseudonym('Sam Okafor')} is late; jordanian food later"
    assert a.scrub(out) == out  # idempotent
