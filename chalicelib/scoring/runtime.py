"""The scoring runtime: loads a deployment's entry script, calls init() once and run() per request.

It is the pure core that both the local scoring host and the Lambda handler sit behind: bytes in,
a status and bytes out, per the answer table in docs/models-and-endpoints.md. It imports nothing
heavy (no boto3, pydantic or chalice) because its process's cold start includes it.

run() executes on one worker thread per runtime, one call at a time (like one Lambda sandbox), so the
caller can give up after `timeout_s`. A run() that overran cannot be stopped from inside Python: the
answer says so (`recycle`) and the caller replaces the process or the runtime.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import queue
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

MAX_BODY = 6 * 1024 * 1024  # the API's and Lambda's request limit: 6 MB
JSON = "application/json"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class ScoringInitError(Exception):
    """The entry script failed to import or its init() raised; `message` is what the deployment shows."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.message = message
        self.traceback = traceback_text


@dataclass
class ScoreAnswer:
    status: int
    body: bytes
    content_type: str = JSON
    recycle: bool = False  # run() overran its timeout and still runs: the sandbox must be replaced

    @property
    def is_error(self) -> bool:
        """Server-side failures count as the deployment's errors; client mistakes (4xx) do not."""
        return self.status >= 500


def error_answer(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> ScoreAnswer:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return ScoreAnswer(status, orjson.dumps(body), JSON, **extra)


def payload_too_large(length: int) -> ScoreAnswer:
    return error_answer(413, "PayloadTooLarge", f"the request body is {length:,} bytes; the limit is 6 MB "
                        f"({MAX_BODY:,} bytes)", field="body")


def encode_result(value: Any) -> bytes:
    """run()'s value as JSON. numpy arrays and scalars are native to orjson; NaN and ±inf become null
    (valid JSON, read back as missing values); integers beyond 64 bits go through the stdlib.
    Raises TypeError when the value is not JSON-serialisable."""
    try:
        return orjson.dumps(value, default=_to_plain, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as err:
        if "64-bit" not in str(err):
            raise TypeError(str(err)) from None
    try:  # only big integers reach here
        return json.dumps(_nulls_for_non_finite(value), separators=(",", ":"), allow_nan=False,
                          default=_to_plain).encode()
    except (TypeError, ValueError) as err:
        raise TypeError(str(err)) from None


def _to_plain(value: Any) -> Any:
    """What orjson cannot take as is: non-contiguous or object numpy arrays, pandas Series (tolist),
    numpy scalars of unusual types (item)."""
    for name in ("tolist", "item"):
        method = getattr(value, name, None)
        if callable(method):
            return method()
    raise TypeError(type(value).__name__)


def _nulls_for_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulls_for_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulls_for_non_finite(v) for v in value]
    return value


def describe(err: BaseException) -> str:
    """The traceback's last line: "<exception type>: <message>" (just the type when there is no message)."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class ScoringRuntime:
    def __init__(self, source_dir: str | os.PathLike, entry_script: str, model_dir: str | os.PathLike,
                 timeout_s: float = 60.0):
        self.source_dir = Path(source_dir).resolve()
        self.entry_script = entry_script
        self.model_dir = Path(model_dir).resolve()
        self.timeout_s = float(timeout_s)
        self.error: str | None = None  # set when load() failed
        self.module: Any = None
        self._run: Callable[[str], Any] | None = None
        self._serial = threading.Lock()  # one run() at a time, like one Lambda sandbox
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._sequence = 0  # the last run() handed to the worker
        self._finished = 0  # the last run() the worker finished
        self._worker: threading.Thread | None = None

    # --- init ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Import the entry script and call its init(); raises ScoringInitError (and remembers it)."""
        script = (self.source_dir / self.entry_script).resolve()
        stage = f"while loading {self.entry_script}"
        try:
            if not script.is_file():
                raise FileNotFoundError(f"entry script {self.entry_script} not found in the source folder")
            for folder in (str(script.parent), str(self.source_dir)):  # the source folder comes first
                if folder not in sys.path:
                    sys.path.insert(0, folder)
            os.environ["NIMBUS_MODEL_DIR"] = str(self.model_dir)
            stage = f"while importing {self.entry_script}"
            module = self._import(script)
            run = getattr(module, "run", None)
            if not callable(run):
                raise AttributeError(f"{self.entry_script} defines no run(raw_data) function")
            init = getattr(module, "init", None)
            if callable(init):
                stage = "in init()"
                init()
        except Exception as err:  # noqa: BLE001 - any failure of user code fails the deployment
            where = self._where(err)
            self.error = f"{describe(err)} ({stage}{', at ' + where if where else ''})"
            raise ScoringInitError(self.error, traceback.format_exc()) from err
        self.module, self._run = module, run
        self._worker = threading.Thread(target=self._work, name="nimbus-run", daemon=True)
        self._worker.start()

    def _import(self, script: Path):
        name = script.stem if script.stem.isidentifier() else "nimbus_entry_script"
        spec = importlib.util.spec_from_file_location(name, script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pickles and dataclasses look their module up by name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    def _where(self, err: BaseException) -> str:
        """The deepest frame inside the source folder ("score.py line 7"), or of any file."""
        if isinstance(err, SyntaxError) and err.filename:
            return f"{self._relative(err.filename)} line {err.lineno}"
        frames = traceback.extract_tb(err.__traceback__)
        ours = [f for f in frames if f.filename.startswith(str(self.source_dir))]
        frame = (ours or frames[-1:] or [None])[-1]
        if frame is None or frame.filename == __file__:
            return ""
        return f"{self._relative(frame.filename)} line {frame.lineno}"

    def _relative(self, filename: str) -> str:
        try:
            return str(Path(filename).resolve().relative_to(self.source_dir))
        except ValueError:
            return filename

    # --- requests ----------------------------------------------------------------------------------
    @property
    def overrun(self) -> bool:
        """A run() that exceeded its timeout is still executing: this runtime can no longer answer.
        (Between calls only: during a call the worker is legitimately behind.)"""
        return self._finished < self._sequence

    def score(self, body: bytes, content_type: str | None = JSON) -> ScoreAnswer:
        if self._run is None:
            return error_answer(503, "DeploymentFailed", self.error or "the deployment has not been initialised")
        if len(body) > MAX_BODY:
            return payload_too_large(len(body))
        try:
            raw_data = body.decode("utf-8")
        except UnicodeDecodeError:
            return error_answer(400, "Invalid", "the request body is not UTF-8 text", field="body")
        with self._serial:
            if self._finished < self._sequence:  # under the lock: an earlier call timed out
                return error_answer(504, "ScoringTimeout", "an earlier run() is still running past the "
                                    f"{self.timeout_s:g} s timeout; the sandbox is being replaced", recycle=True)
            self._sequence += 1
            self._jobs.put((self._sequence, raw_data))
            try:
                while True:
                    sequence, ok, value = self._results.get(timeout=self.timeout_s)
                    if sequence == self._sequence:
                        break
            except queue.Empty:
                return error_answer(504, "ScoringTimeout", f"run() did not return within {self.timeout_s:g} s",
                                    recycle=True)
        if not ok:
            return error_answer(500, "ScoringError", value)
        try:
            return ScoreAnswer(200, encode_result(value))
        except TypeError:
            return error_answer(500, "ScoringError",
                                f"run() returned {type(value).__name__}, which is not JSON-serialisable")

    def _work(self) -> None:
        run = self._run
        while True:
            sequence, raw_data = self._jobs.get()
            try:
                result = (sequence, True, run(raw_data))
            except Exception as err:  # noqa: BLE001 - run()'s failures are answers, not crashes
                traceback.print_exc(file=sys.stderr)  # the deployment's logs keep the whole traceback
                result = (sequence, False, describe(err))
            self._finished = sequence  # a late run() finishing makes the runtime usable again
            self._results.put(result)
