"""Lose nothing: corrupt k random records of a valid export; with skip_bad exactly those records are
missing, each listed with its line, and every other message is what the clean run gave.

"What the clean run gave" is exact: same ids, texts, speakers, roles, timestamps. The one field that
may differ is `parent_id` of the message right after a skipped one, which is re-linked to the nearest
kept ancestor (the thread stays connected); `_relinked` computes that from the clean run.

Corruptions (seeded; each record gets one):
- JSON lines: truncate the line, garble bytes, or drop a field the format needs. A garble that happens
  to leave valid JSON of the same shape is drawn again: no reader can tell it from a real message.
- JSON arrays (ChatGPT, Claude): truncate or garble inside one conversation; reading resumes at the
  next conversation that decodes. Neighbouring broken conversations are one unreadable stretch and
  one entry in the report (the messages lost are still exactly theirs).
- WhatsApp: a record is a header line plus continuation lines; the only thing in it a reader can
  check is the date/time, so the corruptions make that impossible (hour 24-99, minute 60-99, day 00).
  A header mangled past recognition reads as a continuation line of the previous message, in
  WhatsApp's own format as in any parser of it.
"""

import json
import random
import re
from pathlib import Path

import pytest

from notme_mlx.errors import InputError
from notme_mlx.ingest import IngestReport, parse_bytes, stable_id
from notme_mlx.samples import SAMPLES_DIR

TP = Path(__file__).parent / "ingest_fixtures" / "third_party"
SEEDS = range(25)


def _relinked(clean: list[dict], lost: set[str]) -> list[dict]:
    """The clean records minus `lost`, each parent moved past lost records to the nearest kept one."""
    parent = {r["message_id"]: r["parent_id"] for r in clean}
    out = []
    for r in clean:
        if r["message_id"] in lost:
            continue
        p = r["parent_id"]
        while p in lost:
            p = parent[p]
        out.append(dict(r, parent_id=p))
    return out


def _parse(fmt, data: bytes, name: str, me=(), **kw):
    rep = IngestReport()
    recs = parse_bytes(fmt, data, name=name, me=list(me), skip_bad=True, report=rep, **kw)
    return recs, rep.files[0]


def _garble_json_line(line: str, rng: random.Random, shape) -> str:
    for _ in range(100):
        i = rng.randrange(len(line))
        n = rng.randint(1, 4)
        junk = "".join(rng.choice('{}[]:,"\\#@') for _ in range(n))
        out = line[:i] + junk + line[i + n:]
        try:
            o = json.loads(out)
        except ValueError:
            return out
        if not shape(o):
            return out
    raise AssertionError("no garble found")  # pragma: no cover


def _jsonl_case(fmt, lines, required, me, rng, cands, relink=True, key=None):
    """Corrupt k of the candidate lines; compare with the clean run. `cands[i]` = ids line i produced."""
    data = "".join(ln + "\n" for ln in lines).encode()
    clean, info = _parse(fmt, data, "x.jsonl", me)
    assert info["skipped_records"] == 0 and clean
    idx = sorted(rng.sample(sorted(cands), rng.randint(1, min(3, len(cands)))))
    bad = list(lines)
    for i in idx:
        kind = rng.choice(["truncate", "garble", "drop"])
        if kind == "truncate":
            bad[i] = lines[i][: rng.randint(1, len(lines[i]) - 2)]
        elif kind == "garble":
            bad[i] = _garble_json_line(lines[i], rng, lambda o: isinstance(o, dict) and any(f in o for f in required))
        else:
            o = json.loads(lines[i])
            del o[rng.choice([f for f in required if f in o])]
            bad[i] = json.dumps(o, ensure_ascii=False)
    got, info = _parse(fmt, "".join(ln + "\n" for ln in bad).encode(), "x.jsonl", me)
    assert [b["where"] for b in info["bad"]] == [f"x.jsonl:{i + 1}" for i in idx], (idx, info["bad"])
    assert info["skipped_records"] == len(idx)
    lost = {m for i in idx for m in cands[i]}
    want = _relinked(clean, lost) if relink else [r for r in clean if r["message_id"] not in lost]
    assert got == want


def _ids_per_line(fmt, lines, me=()):
    """For one-conversation-per-line formats: message ids each line produces alone (by parsing it alone,
    with the same file name so conversation ids match)."""
    out = {}
    data = "".join(ln + "\n" for ln in lines).encode()
    clean, _ = _parse(fmt, data, "x.jsonl", me)
    by_cid: dict[str, list[str]] = {}
    for r in clean:
        by_cid.setdefault(r["conversation_id"], []).append(r["message_id"])
    for i, ln in enumerate(lines):
        o = json.loads(ln)
        cid = str(o.get("id") or stable_id(fmt, "x.jsonl", i + 1))
        if by_cid.get(cid):
            out[i] = set(by_cid[cid])
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_openai_jsonl_loses_only_corrupted_lines(seed):
    lines = (SAMPLES_DIR / "openai_chats.jsonl").read_text().splitlines()
    _jsonl_case("openai_jsonl", lines, ["messages"], (), random.Random(seed), _ids_per_line("openai_jsonl", lines))


@pytest.mark.parametrize("seed", SEEDS)
def test_sharegpt_jsonl_loses_only_corrupted_lines(seed):
    # the LLaMA-Factory glaive records, one per line (ShareGPT JSONL layout)
    recs = json.loads((TP / "llama_factory" / "glaive_toolcall_en_demo_first8.json").read_text())
    lines = [json.dumps(r, ensure_ascii=False) for r in recs]
    _jsonl_case("sharegpt", lines, ["conversations"], (), random.Random(seed), _ids_per_line("sharegpt", lines))


@pytest.mark.parametrize("seed", SEEDS)
def test_mlx_jsonl_loses_only_corrupted_lines(seed):
    lines = (SAMPLES_DIR / "mlx_completions.jsonl").read_text().splitlines()
    _jsonl_case("mlx_jsonl", lines, ["completion", "prompt", "text"], (), random.Random(seed), _ids_per_line("mlx_jsonl", lines))


@pytest.mark.parametrize("seed", SEEDS)
def test_notme_jsonl_loses_only_corrupted_lines(seed):
    # notme's own output as the export (the format's own tool wrote it): WhatsApp sample re-ingested
    wa = parse_bytes("whatsapp", (SAMPLES_DIR / "WhatsApp Chat with Sam Okafor.txt").read_bytes(),
                     name="WhatsApp Chat with Sam Okafor.txt", me=["Alex Rivera"])
    lines = [json.dumps(r, ensure_ascii=False) for r in wa]
    cands = {i: {r["message_id"]} for i, r in enumerate(wa)}
    # records carry their own parent_id, so nothing is re-linked
    _jsonl_case("notme_jsonl", lines, ["text"], (), random.Random(seed), cands, relink=False)


@pytest.mark.parametrize("path", ["claude_code_budget-cli.jsonl", "claude_code_garden-sensors.jsonl",
                                  "claude_code_rain-garden-calc.jsonl", "representative"])
@pytest.mark.parametrize("seed", SEEDS[:6])
def test_claude_code_loses_only_corrupted_lines(path, seed):
    f = TP / "claude_code_log" / "representative_messages.jsonl" if path == "representative" else SAMPLES_DIR / path
    lines = f.read_text().splitlines()
    clean, _ = _parse("claude_code", "".join(ln + "\n" for ln in lines).encode(), "x.jsonl")
    ids = {r["message_id"] for r in clean}
    keys = []
    for ln in lines:
        o = json.loads(ln)
        m = o.get("message") if isinstance(o.get("message"), dict) else {}
        keys.append(m.get("id") if o.get("type") == "assistant" and m.get("id") else o.get("uuid"))
    # a line is one record when its key (message.id / uuid) is on no other line and made a message
    cands = {i: {k} for i, k in enumerate(keys) if k in ids and keys.count(k) == 1}
    assert cands
    _jsonl_case("claude_code", lines, ["message", "type"], (), random.Random(seed), cands)


WA = [(SAMPLES_DIR / "WhatsApp Chat with Sam Okafor.txt", "Alex Rivera"),
      (TP / "chat_miner" / "test_mmddyyyy_12hrs.txt", "John Doe"),
      (TP / "langchain" / "whatsapp_chat.txt", "Jungle Jane")]


@pytest.mark.parametrize("which", range(len(WA)))
@pytest.mark.parametrize("seed", SEEDS)
def test_whatsapp_loses_only_corrupted_records(which, seed):
    path, me = WA[which]
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    clean, info = _parse("whatsapp", raw.encode(), path.name, [me])
    assert info["skipped_records"] == 0
    hdr = re.compile(r"^(\u200e?\[?\d{1,2}[./]\d{1,2}[./]\d{2,4},? )(\d{1,2})([:.])(\d{2})")
    heads = [i for i, ln in enumerate(lines) if hdr.match(ln)]
    assert len(heads) == len(clean)  # every header is one message in these samples
    rng = random.Random(seed)
    # keep at least one of the owner's messages (else the identity check, not recovery, decides)
    mine = [j for j, r in enumerate(clean) if r["role"] == "me"]
    pool = [j for j in range(len(heads)) if j != mine[seed % len(mine)]]
    pick = sorted(rng.sample(pool, rng.randint(1, 3)))
    bad = list(lines)
    for j in pick:
        i = heads[j]
        m = hdr.match(lines[i])
        kind = rng.choice(["hour", "minute", "day"])
        if kind == "hour":
            new = f"{m[1]}{rng.randint(24, 99)}{m[3]}{m[4]}"
        elif kind == "minute":
            new = f"{m[1]}{m[2]}{m[3]}{rng.randint(60, 99)}"
        else:
            new = re.sub(r"^(\u200e?\[?)\d{1,2}", r"\g<1>00", m[0])
        bad[i] = new + lines[i][m.end():]
    got, info = _parse("whatsapp", "\n".join(bad).encode(), path.name, [me])
    assert [b["where"] for b in info["bad"]] == [f"{path.name}:{heads[j] + 1}" for j in pick]
    assert got == _relinked(clean, {clean[j]["message_id"] for j in pick})


def _array_spans(text: str) -> list[tuple[int, int]]:
    dec, spans = json.JSONDecoder(), []
    i = text.index("[") + 1
    while True:
        while text[i] in " \n\r\t,":
            i += 1
        if text[i] == "]":
            return spans
        _, end = dec.raw_decode(text, i)
        spans.append((i, end))
        i = end


@pytest.mark.parametrize("fmt,path", [("chatgpt", "chatgpt_conversations.json"), ("claude", "claude_conversations.json")])
@pytest.mark.parametrize("seed", SEEDS)
def test_json_array_loses_only_corrupted_conversations(fmt, path, seed):
    text = (SAMPLES_DIR / path).read_text(encoding="utf-8")
    clean, _ = _parse(fmt, text.encode(), path)
    spans = _array_spans(text)
    convs = [c for c in json.loads(text)]
    cid_key = "id" if fmt == "chatgpt" else "uuid"
    rng = random.Random(seed)
    pick = sorted(rng.sample(range(len(spans)), rng.randint(1, 3)))
    out, last = [], 0
    for j in pick:
        a, b = spans[j]
        piece = text[a:b]
        if rng.random() < 0.5:  # truncate inside the conversation, then carry on with the next one
            new = piece[: rng.randint(1, len(piece) - 2)]
        else:
            new = _garble_json_line(piece, rng, lambda o: isinstance(o, dict))
        out += [text[last:a], new]
        last = b
    out.append(text[last:])
    got, info = _parse(fmt, "".join(out).encode(), path)
    # adjacent broken conversations are one unreadable stretch: one entry per run of neighbours
    runs = [j for j in pick if j - 1 not in pick]
    assert len(info["bad"]) == info["skipped_records"] == len(runs)
    assert info["bad"][0]["where"].endswith(f": record {runs[0]}")
    lost_c = {convs[j][cid_key] for j in pick}
    assert got == [r for r in clean if r["conversation_id"] not in lost_c]


@pytest.mark.parametrize("fmt,path", [("chatgpt", "chatgpt_conversations.json"), ("claude", "claude_conversations.json")])
def test_json_array_null_element_is_a_listed_bad_record(fmt, path):
    # A `null` in place of a conversation is a bad record like any other non-conversation: listed with
    # its index under --skip-bad (every conversation kept), an error naming it without.
    text = (SAMPLES_DIR / path).read_text(encoding="utf-8")
    clean, _ = _parse(fmt, text.encode(), path)
    spaced = text[: text.index("[") + 1] + "null, " + text[text.index("[") + 1:]
    got, info = _parse(fmt, spaced.encode(), path)
    assert got == clean and info["skipped_records"] == 1
    assert info["bad"][0]["where"] == f"{path}: record 0"
    with pytest.raises(InputError, match=rf"^{path}: record 0: not a "):
        parse_bytes(fmt, spaced.encode(), name=path)
