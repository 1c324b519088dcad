"""Evaluation inputs: rows of a CSV or Parquet file (or JSONL records) turned into requests by a template.

A row's `id` column is its id (else its line or row number). With a template, the prompt is the template
filled from the row's columns; without one, the row needs a `prompt` column. Every other column (an
expected answer, a category) travels with the request into its output line under `"row"`, for scoring.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from llmgather.errors import InputError
from llmgather.types import Request

_NOT_CARRIED = frozenset({"id", "prompt", "messages", "system"})
_JINJA_MISSING = "a --template-file needs Jinja2: pip install 'llmgather[templates]'"


@dataclass(frozen=True, slots=True)
class Template:
    """`--template "Answer briefly: {question}"` (Python format fields) or a Jinja2 file, and a system message.

    The text is checked when the template is made, so that a template that does not parse is one error
    naming the flag (or the file and line) before any row is read. `origin` is what errors name.
    """

    text: str
    jinja: bool = False
    system: str | None = None
    origin: str = "--template"
    _columns: frozenset[str] = field(init=False, repr=False, compare=False)
    _compiled: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.jinja:
            compiled, columns = _compile_jinja(self.text, self.origin)
        else:
            compiled, columns = None, frozenset(_format_columns(self.text, self.origin))
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_columns", columns)

    @classmethod
    def from_file(cls, path: Path, system: str | None = None) -> Template:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise InputError(f"cannot read the template file: {exc.strerror or exc}", source=str(path)) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"the template file is not UTF-8 text: {_undecoded(exc)}", source=str(path)) from None
        return cls(text, jinja=True, system=system, origin=str(path))

    def columns(self) -> frozenset[str]:
        """The columns the template reads."""
        return self._columns

    def render(self, row: Mapping[str, Any], source: str = "") -> str:
        """The prompt for one row; a row the template cannot be filled from is an InputError naming it."""
        try:
            if self._compiled is not None:
                return str(self._compiled.render(dict(row)))  # a dict, not **row: a column may be named "self"
            return self.text.format_map(row)
        except (LookupError, AttributeError, TypeError, ValueError, ArithmeticError) as exc:
            raise InputError(f"{self.origin} cannot be filled from this row: {exc}", source=source) from None
        except Exception as exc:  # Jinja2's own errors (UndefinedError, a {% raise %} in a filter, ...)
            if not _is_jinja_error(exc):
                raise
            raise InputError(f"{self.origin} cannot be filled from this row: {exc}", source=source) from None


def _format_columns(text: str, origin: str) -> set[str]:
    """The columns a Python format string reads, nested format specs included ("{x:>{width}}")."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise InputError(f"{exc} (write {{{{ or }}}} for a brace itself)", source=origin) from None
    columns: set[str] = set()
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        column = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not column or column.isdigit():
            raise InputError(f"{{{name}}} names no column: write {{column}} with a column's name", source=origin)
        if conversion not in (None, "r", "s", "a"):
            raise InputError(f"{{{name}!{conversion}}}: the conversion must be !r, !s or !a", source=origin)
        columns.add(column)
        if spec and "{" in spec:
            columns |= _format_columns(spec, origin)
    return columns


def _compile_jinja(text: str, origin: str) -> tuple[Any, frozenset[str]]:
    try:
        import jinja2
        from jinja2 import meta
    except ImportError:
        raise InputError(_JINJA_MISSING, source=origin) from None
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        compiled = environment.from_string(text)
        undeclared = meta.find_undeclared_variables(environment.parse(text))
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(exc.message or "does not parse", source=f"{origin}:{exc.lineno}") from None
    return compiled, frozenset(undeclared)


def _is_jinja_error(exc: Exception) -> bool:
    import jinja2

    return isinstance(exc, jinja2.TemplateError)


def request_from_row(row: Mapping[str, Any], default_id: int, source: str, template: Template | None) -> Request:
    """One row as a Request; a missing column is an InputError naming the column and the line."""
    request_id = row.get("id")
    if request_id is None or request_id == "":
        request_id = default_id
    elif isinstance(request_id, float) and request_id.is_integer():
        request_id = int(request_id)
    elif not isinstance(request_id, str | int) or isinstance(request_id, bool):
        plain = _plain(request_id)
        request_id = json.dumps(plain) if isinstance(plain, list | dict) else str(plain)
    if template is not None:
        missing = sorted(template.columns().difference(row))
        if missing:
            raise InputError(
                f"the template needs column {missing[0]!r}, which is not here (columns: {', '.join(row)})",
                source=source,
            )
        prompt = template.render(row, source)
    else:
        given = row.get("prompt")
        if not isinstance(given, str) or not given:
            raise InputError(
                f"no 'prompt' column; give a --template that uses the columns ({', '.join(row)})", source=source
            )
        prompt = given
    messages = [{"role": "user", "content": prompt}]
    system = template.system if template is not None else None
    if system:
        messages.insert(0, {"role": "system", "content": system})
    carried = {k: _plain(v) for k, v in row.items() if k not in _NOT_CARRIED}
    return Request(id=request_id, messages=messages, params={}, source=source, row=carried)


def _plain(value: Any) -> Any:
    """A value JSON carries as it is: Parquet's nested, binary, decimal and time values become JSON values,
    never Python reprs such as "[1, 2]" or "b'..'"."""
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN is how pandas writes a missing float; JSON has null
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")  # binary columns mostly hold text: keep it readable when it is UTF-8
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")  # anything else: standard base64 (RFC 4648)
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # pyarrow gives a map column as a list of (key, value) tuples (a list never holds tuples otherwise);
        # an empty map cannot be told from an empty list and stays [].
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {_key(k): _plain(v) for k, v in value}
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)  # exact, where a float would round
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def _key(key: Any) -> str:
    plain = _plain(key)
    return plain if isinstance(plain, str) else json.dumps(plain)


def csv_rows(file: IO[bytes], name: str) -> Iterator[tuple[dict[str, Any], str, int]]:
    """(row, source, number) for each data row; the source names the file's physical line."""
    lines = _utf8_lines(file, name)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if not header:
            raise InputError("the CSV file has no header row", source=name)
        _check_header(header, name)
        number = 0
        for cells in reader:
            if not cells:
                continue  # a blank line
            number += 1
            source = f"{name}:{reader.line_num}"
            if len(cells) != len(header):
                raise InputError(f"row has {_cells(len(cells))}, the header has {len(header)}", source=source)
            yield dict(zip(header, cells, strict=True)), source, number
    except csv.Error as exc:
        raise InputError(f"not valid CSV ({exc})", source=f"{name}:{reader.line_num}") from None


def _check_header(header: list[str], name: str) -> None:
    seen: set[str] = set()
    for column in header:
        if column in seen:
            named = f"column {column!r}" if column else "an unnamed column"
            raise InputError(f"{named} appears twice in the header row: give each column its own name", source=name)
        seen.add(column)


def _cells(count: int) -> str:
    return "1 cell" if count == 1 else f"{count} cells"


_UNDECODED = re.compile("[\udc80-\udcff]")


def _utf8_lines(file: IO[bytes], name: str) -> Iterator[str]:
    """The file's lines as text (line ends kept, as csv wants them); a byte that is not UTF-8 is an
    InputError naming the line. Undecodable bytes come through as lone surrogates, which UTF-8 text
    never holds, so finding one is finding such a byte."""
    text = io.TextIOWrapper(file, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        for number, line in enumerate(text, start=1):
            bad = _UNDECODED.search(line)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                raise InputError(
                    f"not UTF-8 text: byte 0x{byte:02x} at column {bad.start() + 1} (save the file as UTF-8)",
                    source=f"{name}:{number}",
                )
            yield line
    finally:
        if not file.closed:  # the caller owns the file: let go of it without closing it
            text.detach()


def _undecoded(exc: UnicodeDecodeError) -> str:
    return f"byte 0x{exc.object[exc.start]:02x} at position {exc.start + 1}"


def parquet_rows(file: IO[bytes], name: str) -> Iterator[tuple[dict[str, Any], str, int]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'llmgather[parquet]'", source=name) from None
    number = 0
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield row, f"{name}: row {number}", number
    except (pa.ArrowException, OSError) as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"not a readable Parquet file ({first_line})", source=name) from None
