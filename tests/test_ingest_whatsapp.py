"""WhatsApp text exports: date/locale variants, multiline bodies, media/system lines, --me."""

import pytest

from notme_mlx.errors import InputError
from notme_mlx.ingest import parse_bytes

NNBSP, LRM = "\u202f", "\u200e"

# The same three messages in five header styles; expected UTC times are the same for all.
VARIANTS = {
    "ios_24h_dmy_4digit": (
        "[15/01/2024, 09:05:12] Alex Rivera: Morning!\n"
        "[15/01/2024, 18:30:00] Jordan Lee: Climbing tonight?\nBring the rope.\n"
        "[16/01/2024, 07:00:59] Alex Rivera: Yes"
    ),
    "ios_12h_mdy_nnbsp_lrm": (
        f"[1/15/24, 9:05:12{NNBSP}AM] Alex Rivera: Morning!\n"
        f"[1/15/24, 6:30:00{NNBSP}PM] Jordan Lee: Climbing tonight?\nBring the rope.\n"
        f"{LRM}[1/16/24, 7:00:59{NNBSP}AM] Alex Rivera: Yes"
    ),
    "android_24h_dmy_2digit": (
        "15/01/24, 09:05 - Alex Rivera: Morning!\n"
        "15/01/24, 18:30 - Jordan Lee: Climbing tonight?\nBring the rope.\n"
        "16/01/24, 07:00 - Alex Rivera: Yes"
    ),
    "android_12h_us_month_first": (
        "1/15/24, 9:05 AM - Alex Rivera: Morning!\n"
        "1/15/24, 6:30 PM - Jordan Lee: Climbing tonight?\nBring the rope.\n"
        "1/16/24, 7:00 AM - Alex Rivera: Yes"
    ),
    "german_dotted": (
        "15.01.24, 09:05 - Alex Rivera: Morning!\n"
        "15.01.24, 18:30 - Jordan Lee: Climbing tonight?\nBring the rope.\n"
        "16.01.24, 07:00 - Alex Rivera: Yes"
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_date_variants(variant):
    recs = parse_bytes("auto", VARIANTS[variant].encode(), name="chat.txt", me=["Alex Rivera"])
    assert [r["source"] for r in recs] == ["whatsapp"] * 3
    assert [(r["speaker"], r["role"]) for r in recs] == [
        ("Alex Rivera", "me"), ("Jordan Lee", "other"), ("Alex Rivera", "me")]
    assert recs[1]["text"] == "Climbing tonight?\nBring the rope."
    secs = variant.startswith("ios")
    assert [r["timestamp"] for r in recs] == [
        "2024-01-15T09:05:12Z" if secs else "2024-01-15T09:05:00Z",
        "2024-01-15T18:30:00Z",
        "2024-01-16T07:00:59Z" if secs else "2024-01-16T07:00:00Z",
    ]
    assert recs[1]["parent_id"] == recs[0]["message_id"] and recs[0]["parent_id"] is None


def test_day_month_order_resolved_from_whole_file():
    # First two dates are ambiguous (3/4); only the last line proves day-first (13/04).
    text = "03/04/2024, 10:00 - A: one\n04/04/2024, 10:00 - B: two\n13/04/2024, 10:00 - A: three\n"
    recs = parse_bytes("whatsapp", text.encode(), me=["A"])
    assert [r["timestamp"][:10] for r in recs] == ["2024-04-03", "2024-04-04", "2024-04-13"]
    text_us = "03/04/2024, 10:00 - A: one\n04/13/2024, 10:00 - B: two\n"
    assert [r["timestamp"][:10] for r in parse_bytes("whatsapp", text_us.encode(), me=["A"])] == [
        "2024-03-04", "2024-04-13"]


def test_media_system_and_deleted():
    text = (
        f"[15/01/2024, 09:00:00] Crew: {LRM}Messages and calls are end-to-end encrypted. No one outside.\n"
        f"[15/01/2024, 09:00:01] Crew: {LRM}Jordan Lee added Alex Rivera\n"
        f"{LRM}[15/01/2024, 09:01:00] Jordan Lee: {LRM}image omitted\n"
        f"[15/01/2024, 09:02:00] Alex Rivera: {LRM}<attached: 00000012-PHOTO-2024-01-15-09-02-00.jpg>\n"
        "[15/01/2024, 09:03:00] Jordan Lee: This message was deleted\n"
        "[15/01/2024, 09:04:00] Alex Rivera: Fixed it <This message was edited>\n"
    )
    recs = parse_bytes("whatsapp", text.encode(), me=["Alex Rivera"])
    assert [(r["role"], r["kind"], r["text"]) for r in recs] == [
        ("system", "system", "Messages and calls are end-to-end encrypted. No one outside."),
        ("system", "system", "Jordan Lee added Alex Rivera"),
        ("other", "media", "<media:image>"),
        ("me", "media", "<media:image>"),
        ("other", "system", "This message was deleted"),
        ("me", "text", "Fixed it"),
    ]


def test_android_media_omitted_and_system_without_name():
    text = ("15/01/2024, 09:00 - Messages and calls are end-to-end encrypted. Tap to learn more.\n"
            "15/01/2024, 09:01 - Sam: <Media omitted>\n15/01/2024, 09:02 - Alex: ok\n")
    recs = parse_bytes("whatsapp", text.encode(), me=["Alex"])
    assert [(r["speaker"], r["role"], r["kind"]) for r in recs] == [
        ("WhatsApp", "system", "system"), ("Sam", "other", "media"), ("Alex", "me", "text")]


def test_missing_me_lists_speakers():
    with pytest.raises(InputError) as e:
        parse_bytes("whatsapp", VARIANTS["android_24h_dmy_2digit"].encode(), name="chat.txt")
    msg = str(e.value)
    assert "chat.txt" in msg and "'Alex Rivera' (2)" in msg and "'Jordan Lee' (1)" in msg and "--me" in msg


def test_me_not_among_speakers_is_an_error():
    with pytest.raises(InputError, match="none of the speakers"):
        parse_bytes("whatsapp", VARIANTS["german_dotted"].encode(), me=["Someone Else"])


def test_tz_option_converts_local_times():
    recs = parse_bytes("whatsapp", VARIANTS["german_dotted"].encode(), me=["Alex Rivera"], tz="Europe/Berlin")
    assert recs[0]["timestamp"] == "2024-01-15T08:05:00Z"  # CET = UTC+1 in January


def test_garbage_first_line_names_the_line():
    with pytest.raises(InputError, match=r"chat.txt:1: expected a WhatsApp message header"):
        parse_bytes("whatsapp", b"hello\n15/01/2024, 09:00 - A: x\n15/01/2024, 09:01 - A: y\n", name="chat.txt", me=["A"])


def test_ids_are_stable_across_runs():
    a = parse_bytes("whatsapp", VARIANTS["german_dotted"].encode(), name="x.txt", me=["Alex Rivera"])
    b = parse_bytes("whatsapp", VARIANTS["german_dotted"].encode(), name="x.txt", me=["Alex Rivera"])
    assert [r["message_id"] for r in a] == [r["message_id"] for r in b]
    assert len({r["message_id"] for r in a}) == 3


def test_android_system_line_with_colon_in_subject():
    text = ('15/01/2024, 09:00 - Jordan Lee changed the subject from "Climbing" to "Trip: Lisbon"\n'
            "15/01/2024, 09:01 - Jordan Lee: booked\n15/01/2024, 09:02 - Alex Rivera: nice\n")
    recs = parse_bytes("whatsapp", text.encode(), me=["Alex Rivera"])
    assert [(r["speaker"], r["role"], r["kind"]) for r in recs] == [
        ("WhatsApp", "system", "system"), ("Jordan Lee", "other", "text"), ("Alex Rivera", "me", "text")]
    assert recs[0]["text"] == 'Jordan Lee changed the subject from "Climbing" to "Trip: Lisbon"'


def test_ambiguous_dates_resolved_by_chronology():
    dmy = "01/02/2024, 10:00 - A: x\n02/02/2024, 10:00 - B: y\n01/03/2024, 10:00 - A: z\n"  # 1 Feb, 2 Feb, 1 Mar
    assert [r["timestamp"][:10] for r in parse_bytes("whatsapp", dmy.encode(), me=["A"])] == [
        "2024-02-01", "2024-02-02", "2024-03-01"]
    mdy = "01/02/2024, 10:00 - A: x\n02/01/2024, 10:00 - B: y\n03/01/2024, 10:00 - A: z\n"  # Jan 2, Feb 1, Mar 1
    assert [r["timestamp"][:10] for r in parse_bytes("whatsapp", mdy.encode(), me=["A"])] == [
        "2024-01-02", "2024-02-01", "2024-03-01"]


@pytest.fixture(autouse=True)
def _no_user_identity(monkeypatch, tmp_path):
    """Hermetic: never read the developer's ~/.config/notme/identity.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
