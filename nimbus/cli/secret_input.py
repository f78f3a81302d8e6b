"""Reading a secret value on the command line: from a file, standard input, or a prompt that does not echo."""
from __future__ import annotations

import sys
from pathlib import Path

import click


def read_secret(what: str, value_file: Path | None, value_option: str | None, file_hint: str,
                option_hint: str) -> str:
    """The value of `what`, from `value_file`, else `value_option` (with a warning: the process list and the
    shell's history see it), else standard input (on a terminal, a prompt without echo)."""
    if value_file is not None and value_option is not None:
        raise click.UsageError(f"give the value once: {file_hint} or {option_hint}")
    if value_option is not None:
        click.echo("warning: a value on the command line can be seen in the process list and your shell "
                   f"history; prefer {file_hint} or standard input", err=True)
        value = value_option
    elif value_file is not None:
        value = _drop_line_end(_text(value_file.read_bytes(), file_hint))
    elif sys.stdin.isatty():
        value = click.prompt(f"value of {what}", hide_input=True, err=True)
    else:
        value = _drop_line_end(_text(sys.stdin.buffer.read(), "standard input"))
    if not value:
        raise click.UsageError(f"the value of {what} is empty")
    return value


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("a secret's value must be UTF-8 text", param_hint=where) from None


def _drop_line_end(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
