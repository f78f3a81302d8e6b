"""Run logs: named streams of text, appended in chunks and read from a character offset."""
from __future__ import annotations

import re

from chalicelib.errors import Conflict, Invalid, TooLarge
from chalicelib.domain import table_keys
from chalicelib.domain.context import Context
from chalicelib.services.runs import Runs
from chalicelib.store.table import Query, Update
from nimbus.runtime.run_states import TERMINAL

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_CHUNK = 256 * 1024  # characters per append; an item stops at 400 KB
MAX_READ = 1024 * 1024


def check_stream(name: str) -> str:
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise Invalid("stream must be 1-128 characters: letters, digits, '.', '_' and '-'", field="stream")
    return name


class Logs:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def append(self, workspace: str, run_id: str, stream: str, text: str) -> dict:
        check_stream(stream)
        if not isinstance(text, str) or not text:
            raise Invalid("text must be a non-empty string", field="text")
        if len(text) > MAX_CHUNK:
            raise TooLarge(f"one append carries at most {MAX_CHUNK} characters; split the text", field="text")
        run = Runs(self.ctx).get(workspace, run_id)
        if run["status"] in TERMINAL:
            raise Conflict(f"run {run_id} is {run['status']}: its logs are closed")
        # The stream's size is an atomic counter: each append reserves its own range of offsets.
        stream_key = table_keys.log_stream(run_id, stream)
        meta = self.ctx.table.update(Update(stream_key, set_if_absent={"entity": "log_stream", "name": stream,
                                                                       "created": self.ctx.now()},
                                            add={"size": len(text)}))
        end = meta["size"]
        start = end - len(text)
        self.ctx.table.put({"pk": stream_key.pk, "sk": table_keys.log_chunk_sk(stream, start), "entity": "log_chunk",
                            "text": text, "offset": start})
        return {"stream": stream, "offset": start, "next_offset": end}

    def streams(self, workspace: str, run_id: str) -> list[dict]:
        Runs(self.ctx).get(workspace, run_id)
        items = self.ctx.table.query_all(Query(table_keys.run_pk(run_id), sk_prefix="LOGSTREAM#"))
        return [{"stream": i["name"], "size": i["size"], "created": i["created"]} for i in items]

    def read(self, workspace: str, run_id: str, stream: str, offset: int = 0, max_chars: int = MAX_READ) -> dict:
        check_stream(stream)
        if offset < 0:
            raise Invalid("offset must be >= 0", field="offset")
        if not 1 <= max_chars <= MAX_READ:
            raise Invalid(f"max_chars must be between 1 and {MAX_READ}", field="max_chars")
        run = Runs(self.ctx).get(workspace, run_id)
        pk, prefix = table_keys.run_pk(run_id), table_keys.log_chunk_prefix(stream)
        # The chunk holding `offset` is the last one starting at or before it.
        first = self.ctx.table.query(Query(pk, sk_gte=prefix, sk_lte=table_keys.log_chunk_sk(stream, offset),
                                           forward=False, limit=1)).items
        start_sk = first[0]["sk"] if first else table_keys.log_chunk_sk(stream, offset)
        parts, count, position = [], 0, offset
        for item in self.ctx.table.query_all(Query(pk, sk_gte=start_sk, sk_lte=prefix + "~", limit=100)):
            chunk_start, text = item["offset"], item["text"]
            if chunk_start + len(text) <= position:
                continue
            if chunk_start > position and run["status"] not in TERMINAL:
                break  # an append reserved this range and is still writing it: stop, the next read has it
            position = max(position, chunk_start)  # once the run ended, a gap is an append that never landed
            piece = text[position - chunk_start :][: max_chars - count]
            parts.append(piece)
            count += len(piece)
            position += len(piece)
            if count >= max_chars:
                break
        return {"stream": stream, "offset": offset, "text": "".join(parts), "next_offset": position,
                "run_status": run["status"], "run_ended": run["status"] in TERMINAL}
