"""Render `_content.py` into the bundled sample exports (run: python -m notme_mlx.samples._build).

Deterministic: fixed dates and ids, so re-running gives identical files (chat.db aside
from SQLite page layout, which is also stable for the same statements).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..ingest.formats.typedstream import encode_attributed_body
from ._content import AI_CHATS, CODE_SESSIONS, MD_CHATS, OWNER, P2P_CHATS

HERE = Path(__file__).parent
BASE = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
NS = uuid.UUID("6f1c2a52-0000-4000-8000-000000000000")


def _uid(*parts) -> str:
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


def _times(day: int, n: int, hour: int = 9, step_min: int = 3):
    t0 = BASE + timedelta(days=day, hours=hour - 9)
    return [t0 + timedelta(minutes=step_min * i, seconds=7 * i) for i in range(n)]


def chatgpt(chats, day0):
    out = []
    for k, (title, turns) in enumerate(chats):
        cid = _uid("chatgpt", k)
        times = _times(day0 + k, len(turns))
        mapping = {}
        root = _uid(cid, "root")
        mapping[root] = {"id": root, "message": None, "parent": None, "children": []}
        sysid = _uid(cid, "sys")
        mapping[sysid] = {"id": sysid, "parent": root, "children": [], "message": {
            "id": sysid, "author": {"role": "system", "name": None, "metadata": {}}, "create_time": None,
            "content": {"content_type": "text", "parts": [""]}, "status": "finished_successfully",
            "metadata": {"is_visually_hidden_from_conversation": True}, "recipient": "all"}}
        mapping[root]["children"].append(sysid)
        prev = sysid
        if k == 1:  # custom instructions node, must be skipped
            ctx = _uid(cid, "ctx")
            mapping[ctx] = {"id": ctx, "parent": prev, "children": [], "message": {
                "id": ctx, "author": {"role": "user", "name": None, "metadata": {}}, "create_time": None,
                "content": {"content_type": "user_editable_context", "user_profile": "I live in Port Calder.",
                            "user_instructions": "Be brief."},
                "metadata": {"is_visually_hidden_from_conversation": True}, "recipient": "all"}}
            mapping[prev]["children"].append(ctx)
            prev = ctx
        for i, ((who, text), t) in enumerate(zip(turns, times)):
            mid = _uid(cid, i)
            role = "user" if who == "me" else "assistant"
            if k == 0 and i == 1:  # an abandoned first answer: a sibling branch that is NOT current
                old = _uid(cid, i, "old")
                mapping[old] = {"id": old, "parent": prev, "children": [], "message": {
                    "id": old, "author": {"role": "assistant", "name": None, "metadata": {}},
                    "create_time": t.timestamp() - 30, "content": {"content_type": "text",
                    "parts": ["(regenerated) Throw it away and start again."]}, "metadata": {}, "recipient": "all"}}
                mapping[prev]["children"].append(old)
            if k == 3 and i == 3:  # a code-interpreter call and its output (tool traffic)
                tc, to = _uid(cid, i, "call"), _uid(cid, i, "out")
                mapping[tc] = {"id": tc, "parent": prev, "children": [to], "message": {
                    "id": tc, "author": {"role": "assistant", "name": None, "metadata": {}}, "create_time": t.timestamp() - 5,
                    "content": {"content_type": "code", "language": "python", "text": "print(25 * 1.3)"},
                    "metadata": {}, "recipient": "python"}}
                mapping[to] = {"id": to, "parent": tc, "children": [], "message": {
                    "id": to, "author": {"role": "tool", "name": "python", "metadata": {}}, "create_time": t.timestamp() - 3,
                    "content": {"content_type": "execution_output", "text": "32.5"}, "metadata": {}, "recipient": "all"}}
                mapping[prev]["children"].append(tc)
                prev = to
            mapping[mid] = {"id": mid, "parent": prev, "children": [], "message": {
                "id": mid, "author": {"role": role, "name": None, "metadata": {}}, "create_time": t.timestamp(),
                "content": {"content_type": "text", "parts": [text]}, "status": "finished_successfully",
                "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {}, "recipient": "all"}}
            mapping[prev]["children"].append(mid)
            prev = mid
        out.append({"title": title, "create_time": times[0].timestamp(), "update_time": times[-1].timestamp(),
                    "mapping": mapping, "current_node": prev, "conversation_id": cid, "id": cid,
                    "moderation_results": [], "is_archived": False})
    return out


def claude(chats, day0):
    out = []
    for k, (title, turns) in enumerate(chats):
        cid = _uid("claude", k)
        times = _times(day0 + k, len(turns), hour=14)
        msgs, prev = [], "00000000-0000-4000-8000-000000000000"
        for i, ((who, text), t) in enumerate(zip(turns, times)):
            mid = _uid(cid, i)
            iso = t.isoformat().replace("+00:00", ".000000Z")
            m = {"uuid": mid, "text": text, "sender": "human" if who == "me" else "assistant",
                 "created_at": iso, "updated_at": iso, "attachments": [], "files": [],
                 "content": [{"type": "text", "text": text, "start_timestamp": iso, "stop_timestamp": iso,
                              "citations": []}], "parent_message_uuid": prev}
            msgs.append(m)
            prev = mid
        out.append({"uuid": cid, "name": title, "created_at": msgs[0]["created_at"],
                    "updated_at": msgs[-1]["created_at"], "account": {"uuid": _uid("acct")}, "chat_messages": msgs})
    return out


def claude_code(sessions, day0):
    files = {}
    for k, (proj, turns) in enumerate(sessions):
        sid = _uid("cc", k)
        times = _times(day0 + k, len(turns) + 3, hour=20, step_min=1)
        lines, parent = [], None
        base = {"isSidechain": False, "userType": "external", "cwd": f"/Users/alex/code/{proj}",
                "sessionId": sid, "version": "1.0.51", "gitBranch": "main"}

        def add(obj, t):
            nonlocal parent
            obj = {**base, "parentUuid": parent, **obj, "timestamp": t.isoformat().replace("+00:00", ".000Z")}
            lines.append(obj)
            parent = obj.get("uuid", parent)

        lines.append({"type": "summary", "summary": f"{proj} session", "leafUuid": _uid(sid, "leaf")})
        add({"type": "user", "isMeta": True, "uuid": _uid(sid, "meta"), "message": {"role": "user", "content":
             "Caveat: The messages below were generated by the user while running local commands. DO NOT respond."}}, times[0])
        add({"type": "user", "uuid": _uid(sid, "cmd"), "message": {"role": "user", "content":
             "<command-name>/clear</command-name>\n<command-message>clear</command-message>\n<command-args></command-args>"}},
            times[1])
        j = 2
        for i, (who, text) in enumerate(turns):
            t = times[j]
            j += 1
            if who == "me":
                add({"type": "user", "uuid": _uid(sid, i), "message": {"role": "user", "content": text}}, t)
            elif who == "ai":
                msg_id = f"msg_{_uid(sid, i, 'm')[:20].replace('-', '')}"
                chunk1 = {"type": "assistant", "uuid": _uid(sid, i, "a"), "requestId": f"req_{i}",
                          "message": {"id": msg_id, "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                                      "content": [{"type": "text", "text": text}], "stop_reason": None}}
                add(chunk1, t)
                lines.append(dict(lines[-1]))  # the same line written twice (dedupe by uuid)
                add({"type": "assistant", "uuid": _uid(sid, i, "b"), "requestId": f"req_{i}",
                     "message": {"id": msg_id, "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                                 "content": [{"type": "thinking", "thinking": "internal"}]}}, t)
            else:  # tool traffic: a tool_use chunk and a tool_result user line
                tu = f"toolu_{i:02d}{k}"
                add({"type": "assistant", "uuid": _uid(sid, i, "tu"), "message": {
                    "id": f"msg_tool_{k}_{i}", "role": "assistant", "content": [
                        {"type": "tool_use", "id": tu, "name": text.split()[0], "input": {"file_path": text.split()[-1]}}]}}, t)
                add({"type": "user", "uuid": _uid(sid, i, "tr"), "message": {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tu, "content": "ok (42 lines)"}]}}, t)
        add({"type": "user", "uuid": _uid(sid, "side"), "isSidechain": True, "message": {"role": "user",
             "content": "Sub-agent: list the files in tests/"}}, times[-1])
        name = f"claude_code_{proj}.jsonl"  # real location: ~/.claude/projects/-Users-alex-code-<proj>/<sid>.jsonl
        files[name] = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    return files


def imessage(path: Path, chats):
    """A chat.db with the real tables (subset of columns) for P2P chats."""
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, service TEXT);
        CREATE TABLE chat (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL,
            chat_identifier TEXT, service_name TEXT, display_name TEXT);
        CREATE TABLE message (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, text TEXT,
            attributedBody BLOB, handle_id INTEGER DEFAULT 0, service TEXT, date INTEGER, is_from_me INTEGER DEFAULT 0,
            associated_message_guid TEXT, associated_message_type INTEGER DEFAULT 0,
            cache_has_attachments INTEGER DEFAULT 0, item_type INTEGER DEFAULT 0);
        CREATE TABLE chat_message_join (chat_id INTEGER, message_id INTEGER, message_date INTEGER DEFAULT 0,
            PRIMARY KEY (chat_id, message_id));
    """)
    apple = datetime(2001, 1, 1, tzinfo=timezone.utc)
    for c, (who, parts) in enumerate(chats):
        phone = f"+1555010{c + 1:04d}"
        hid = con.execute("INSERT INTO handle (id, service) VALUES (?, 'iMessage')", (phone,)).lastrowid
        cid = con.execute("INSERT INTO chat (guid, chat_identifier, service_name, display_name) VALUES (?,?,?,?)",
                          (f"iMessage;-;{phone}", phone, "iMessage", "")).lastrowid
        turns = [t for _, ts in parts for t in ts]
        times = [t for day, ts in parts for t in _times(day, len(ts), hour=19, step_min=2)]
        times += [times[-1] + timedelta(minutes=1), times[-1] + timedelta(minutes=2)]
        last_guid = None
        for i, ((w, text), t) in enumerate(zip(turns, times)):
            guid = _uid("imsg", c, i).upper()
            ns = int((t - apple).total_seconds()) * 10**9
            body, txt, att = None, text, 0
            if i == 1:  # modern macOS: text NULL, string only in attributedBody
                body, txt = encode_attributed_body(text), None
            mid = con.execute("INSERT INTO message (guid, text, attributedBody, handle_id, service, date, is_from_me, "
                              "cache_has_attachments) VALUES (?,?,?,?,?,?,?,?)",
                              (guid, txt, body, hid, "iMessage", ns, int(w == "me"), att)).lastrowid
            con.execute("INSERT INTO chat_message_join VALUES (?,?,?)", (cid, mid, ns))
            last_guid = guid
        # a tapback ("Loved") on the last message and a photo with no text
        for j, (text, assoc, att) in enumerate([(f"Loved “{turns[-1][1][:20]}”", 2000, 0), ("\ufffc", 0, 1)]):
            t = times[len(turns) + j]
            ns = int((t - apple).total_seconds()) * 10**9
            mid = con.execute("INSERT INTO message (guid, text, handle_id, service, date, is_from_me, "
                              "associated_message_guid, associated_message_type, cache_has_attachments) "
                              "VALUES (?,?,?,?,?,?,?,?,?)",
                              (_uid("imsg", c, "x", j).upper(), text, hid, "iMessage", ns, 0,
                               f"p:0/{last_guid}" if assoc else None, assoc, att)).lastrowid
            con.execute("INSERT INTO chat_message_join VALUES (?,?,?)", (cid, mid, ns))
    con.commit()
    con.execute("VACUUM")
    con.close()


def whatsapp_android(other, day, turns):
    """Android, day-first 24h: `15/03/2024, 09:05 - Name: text`."""
    lines = [f"{_times(day, 1)[0]:%d/%m/%Y, %H:%M} - Messages and calls are end-to-end encrypted. "
             "No one outside of this chat, not even WhatsApp, can read or listen to them. Tap to learn more."]
    for (w, text), t in zip(turns, _times(day, len(turns), hour=17, step_min=4)):
        name = OWNER if w == "me" else other
        lines.append(f"{t:%d/%m/%Y, %H:%M} - {name}: {text}")
    return lines


def whatsapp_ios(group, day, turns):
    """iOS, month-first 12h with U+202F before AM/PM, LRM before system/media lines."""
    t0 = _times(day, 1, hour=8)[0]
    fmt = lambda t: f"[{t.month}/{t.day}/{t:%y}, {t.hour % 12 or 12}:{t:%M:%S}\u202f{'AM' if t.hour < 12 else 'PM'}]"  # noqa: E731
    lines = [f"{fmt(t0)} {group}: \u200eMessages and calls are end-to-end encrypted. No one outside of this chat, "
             "not even WhatsApp, can read or listen to them.",
             f"{fmt(t0)} {group}: \u200eJordan Lee created group “{group}”"]
    for i, ((who, text), t) in enumerate(zip(turns, _times(day, len(turns), hour=20, step_min=5))):
        name = OWNER if who == "me" else who
        lines.append(f"{fmt(t)} {name}: {text}")
        if i == 3:
            lines.append(f"\u200e{fmt(t)} {name}: \u200eimage omitted")
    return lines


def telegram(chats, day0):
    out = {"about": "Here is the data you requested. (fictional sample)",
           "personal_information": {"user_id": 7000001, "first_name": "Alex", "last_name": "Rivera",
                                    "phone_number": "+1 555 010 0199", "username": "@alexr", "bio": ""},
           "chats": {"about": "", "list": []}}
    mid = 1
    for c, (other, uid, parts) in enumerate(chats):
        msgs = []
        for p, (day, turns) in enumerate(parts):
            for (w, text), t in zip(turns, _times(day, len(turns), hour=12, step_min=6)):
                me = w == "me"
                entities = text
                if "The Weir Keeper" in text:  # entity list: plain + bold + plain
                    a, b = text.split("The Weir Keeper", 1)
                    entities = [a, {"type": "bold", "text": "The Weir Keeper"}, b]
                    entities = [e for e in entities if e != ""]
                local = t + timedelta(hours=1)  # Telegram `date` is local time; date_unixtime is UTC
                msgs.append({"id": mid, "type": "message", "date": local.strftime("%Y-%m-%dT%H:%M:%S"),
                             "date_unixtime": str(int(t.timestamp())),
                             "from": "Alex Rivera" if me else other, "from_id": "user7000001" if me else f"user{uid}",
                             "text": entities, "text_entities": []})
                mid += 1
        msgs.insert(1, {"id": mid, "type": "service", "date": msgs[0]["date"], "date_unixtime": msgs[0]["date_unixtime"],
                        "actor": other, "actor_id": f"user{uid}", "action": "pin_message", "message_id": 1, "text": ""})
        mid += 1
        out["chats"]["list"].append({"name": other, "type": "personal_chat", "id": uid, "messages": msgs})
    return out


def markdown(chats):
    lines = ["# Alex Rivera: hand-written conversations (fictional sample)", ""]
    for k, (title, turns) in enumerate(chats):
        lines += [f"## {title}", f"date: 2024-05-{k + 1:02d} 18:00", ""]
        for who, text in turns:
            lines.append(f"**{who}:** {text}")
        lines.append("")
    return "\n".join(lines)


def build(out: Path = HERE) -> None:
    ai = AI_CHATS
    w = lambda p, s: (out / p).parent.mkdir(parents=True, exist_ok=True) or (out / p).write_text(s, encoding="utf-8")  # noqa: E731
    w("chatgpt_conversations.json", json.dumps(chatgpt(ai[0:10], 0), indent=1, ensure_ascii=False) + "\n")
    w("claude_conversations.json", json.dumps(claude(ai[10:17], 12), indent=1, ensure_ascii=False) + "\n")
    w("openai_chats.jsonl", "".join(json.dumps({"messages": [
        {"role": "system", "content": "You are a helpful assistant."}] + [
        {"role": "user" if who == "me" else "assistant", "content": t} for who, t in turns]}, ensure_ascii=False) + "\n"
        for _, turns in ai[17:22]))
    w("sharegpt.json", json.dumps([{"id": f"sg-{k}", "conversations": [
        {"from": "human" if who == "me" else "gpt", "value": t} for who, t in turns]}
        for k, (_, turns) in enumerate(ai[22:26])], indent=1, ensure_ascii=False) + "\n")
    mlx_lines = [{"prompt": turns[0][1], "completion": turns[1][1]} for _, turns in ai[26:30]]
    mlx_lines += [{"text": "Rain gardens are not ponds. They drain within a day, and that is the whole point."},
                  {"text": "Feedback rule: say what works, name the one thing to change, stop."},
                  {"text": "I'd rather ship the simple version on Friday than the perfect one in March."}]
    w("mlx_completions.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in mlx_lines))
    for name, text in claude_code(CODE_SESSIONS, 20).items():
        w(name, text)
    p = P2P_CHATS
    imessage(out / "imessage_chat.db", [
        ("Jordan Lee", [(30, p[0][1]), (36, p[5][1]), (47, p[12][1])]), ("Mom", [(32, p[3][1]), (38, p[13][1])]),
        ("Theo Rivera", [(34, p[4][1]), (41, p[10][1])])])
    w("WhatsApp Chat with Sam Okafor.txt",
      "\n".join(whatsapp_android("Sam Okafor", 40, p[1][1]) + whatsapp_android("Sam Okafor", 44, p[6][1])[1:]
                + whatsapp_android("Sam Okafor", 50, p[9][1])[1:] + whatsapp_android("Sam Okafor", 70, p[14][1])[1:])
      + "\n")
    zpath = out / "WhatsApp Chat - Climbing crew.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:  # fixed member time -> identical bytes
        z.writestr(zipfile.ZipInfo("_chat.txt", date_time=(2024, 4, 12, 20, 0, 0)),
                   "\n".join(whatsapp_ios("Climbing crew", 42, p[8][1])) + "\n")
    w("telegram_result.json", json.dumps(telegram([
        ("Priya Nair", 5550133, [(60, p[2][1]), (75, p[7][1]), (90, p[11][1]), (95, p[15][1])])], 60), indent=1, ensure_ascii=False) + "\n")
    w("handwritten.md", markdown(MD_CHATS))
    w("identity.yaml", "# Sample owner for `make quickstart` (fictional)\nnames: [\"Alex Rivera\", \"Alex\"]\n"
      "handles: [\"@alexr\"]\nphones: [\"+1 555 010 0199\"]\nemails: [\"alex.rivera@example.com\"]\n")


if __name__ == "__main__":
    build()
