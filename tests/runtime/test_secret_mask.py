"""Secret values masked in a run's output: across chunk boundaries, and registered by the script's SDK."""
from __future__ import annotations

import io
import os
import random
import threading

import pytest

from nimbus.runtime.runner_io import LogPump
from nimbus.runtime.secret_mask import MASK, MaskServer, SecretMask, register_with_runner

SECRET = "s3cr3t-Value-42"


def masked_in_chunks(mask: SecretMask, text: str, cuts: list[int]) -> str:
    stream, out, last = mask.stream(), [], 0
    for cut in sorted(cuts) + [len(text)]:
        out.append(stream.feed(text[last:cut]))
        last = cut
    return "".join(out) + stream.end()


def test_a_whole_value_is_masked():
    mask = SecretMask([SECRET])
    assert masked_in_chunks(mask, f"token={SECRET}\nagain {SECRET}!", []) == f"token={MASK}\nagain {MASK}!"


@pytest.mark.parametrize("cut", range(1, len(SECRET)))
def test_a_value_split_between_two_chunks_is_masked(cut):
    text = f"before {SECRET} after"
    masked = masked_in_chunks(SecretMask([SECRET]), text, [len("before ") + cut])
    assert masked == f"before {MASK} after"


def test_a_value_split_into_single_characters_is_masked():
    text = f"a{SECRET}b{SECRET}"
    assert masked_in_chunks(SecretMask([SECRET]), text, list(range(1, len(text)))) == f"a{MASK}b{MASK}"


def test_the_beginning_of_a_value_is_let_go_once_the_text_settles_it():
    stream = SecretMask([SECRET]).stream()
    assert stream.feed("x s3cr") == "x "  # might be the value: held back
    assert stream.feed("ew") == "s3crew"  # it was not
    assert stream.feed(" s3c") == " "
    assert stream.end() == "s3c"  # the stream is over: nothing more can complete it


def test_chunks_give_what_masking_the_whole_text_gives():
    rng = random.Random(7)
    values = ["abcab", "ab", "bca", "xyzzy", "zz", "aaaa"]
    mask = SecretMask(values)
    for _ in range(300):
        text = "".join(rng.choice("abcxyz \n") for _ in range(rng.randint(0, 60)))
        whole = mask.snapshot()[1].sub(MASK, text)
        cuts = [rng.randint(0, len(text)) for _ in range(rng.randint(0, 6))]
        assert masked_in_chunks(mask, text, cuts) == whole, (text, cuts)


def test_a_value_added_later_is_masked_from_then_on():
    mask = SecretMask()
    stream = mask.stream()
    assert stream.feed(f"{SECRET}\n") == f"{SECRET}\n"  # unknown yet: nothing to mask
    mask.add(SECRET)
    assert stream.feed(f"{SECRET}\n") + stream.end() == f"{MASK}\n"


class Collect:
    def __init__(self):
        self.sent: list[str] = []

    def __call__(self, text: str) -> None:
        self.sent.append(text)


def test_the_log_pump_masks_what_it_sends_echoes_and_keeps():
    # Given a pipe whose writes cut the value in two
    read_end, write_end = os.pipe()
    sent, echo = Collect(), io.StringIO()
    pump = LogPump(os.fdopen(read_end, "rb"), sent, echo=echo, flush_seconds=0.01,
                   mask=SecretMask([SECRET])).start()
    os.write(write_end, f"the key is {SECRET[:5]}".encode())
    threading.Event().wait(0.3)  # the pump reads the first half alone
    os.write(write_end, f"{SECRET[5:]} and {SECRET}\n".encode())
    os.close(write_end)
    pump.wait()
    # Then neither the run's log, nor the runner's own output, nor the tail shows it
    for text in ("".join(sent.sent), echo.getvalue(), pump.tail() + "\n"):  # tail() ends without one
        assert text == f"the key is {MASK} and {MASK}\n"


def test_the_sdk_hands_values_to_the_runner_before_it_uses_them():
    mask = SecretMask()
    server = MaskServer(mask).start()
    try:
        assert oct(os.stat(server.path).st_mode & 0o777) == "0o600"
        register_with_runner(SECRET, server.path)
        assert mask.stream().feed(f"{SECRET}\n") == f"{MASK}\n"
    finally:
        server.close()
    with pytest.raises(OSError):
        register_with_runner("another", server.path, timeout=1)


def _register_as(uid: int, path: str) -> int:
    """Exit status of a child that becomes `uid` and hands a value to the runner at `path` (0: masked)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            register_with_runner(SECRET, path, timeout=5)
            os._exit(0)
        except BaseException:  # noqa: BLE001 - the child only reports, by its status
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="a script under a uid of its own needs a root runner")
def test_a_script_under_a_uid_of_its_own_reaches_its_runner_and_no_other_uid_does():
    script_uid, other_uid = 1_900_999_990, 1_900_999_991
    mask = SecretMask()
    server = MaskServer(mask, owner=script_uid).start()
    try:
        assert _register_as(other_uid, server.path) != 0
        assert _register_as(script_uid, server.path) == 0
        assert mask.stream().feed(f"{SECRET}\n") == f"{MASK}\n"
    finally:
        server.close()


def test_each_line_of_a_value_of_several_lines_is_masked_too():
    key = "-----BEGIN KEY-----\r\nMIIEvQIBADANBgkq\r\nhkiG9w0BAQEFAASC\r\n-----END KEY-----\r\n"
    mask = SecretMask([key])
    printed = "".join(f"line: {line}\n" for line in key.split("\r\n"))  # a script printing it line by line
    assert "MIIE" not in masked_in_chunks(mask, printed, [30, 31, 60])
    assert masked_in_chunks(mask, f"<{key}>", []) == f"<{MASK}>"
    assert masked_in_chunks(SecretMask(["ab\ncd\nefghij"]), "cd ab efghij", []) == f"cd ab {MASK}"  # short lines stay
