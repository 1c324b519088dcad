"""Evaluation inputs: rows of a CSV or Parquet file (or JSONL records) turned into requests by a template.

A row's `id` column is its id (else its line or row number). With a template, the prompt is the template
filled from the row's columns; without one, the row needs a `prompt` column. Every other column (an
expected answer, a category) travels with the request into its output line under `"row"`, for scoring.
"""

from __future__ import annotations

import csv
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmgather.errors import InputError
from llmgather.types import Request

_NOT_CARRIED = frozenset({"id", "prompt", "messages", "system"})


@dataclass(frozen=True, slots=True)
class Template:
    """`--template "Answer briefly: {question}"` (Python format fields) or a Jinja2 file, and a system message."""

    text: str
    jinja: bool = False
    system: str | None = None

    @classmethod
    def from_file(cls, path: Path, system: str | None = None) -> Template:
        try:
            return cls(path.read_text(encoding="utf-8"), jinja=True, system=system)
        except OSError as exc:
            raise InputError(f"cannot read the template file: {exc}", source=str(path)) from None

    def columns(self) -> set[str]:
        """The columns the template reads."""
        if self.jinja:
            import jinja2
            from jinja2 import meta

            return set(meta.find_undeclared_variables(jinja2.Environment().parse(self.text)))
        return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(self.text) if field}

    def render(self, row: Mapping[str, Any]) -> str:
        if self.jinja:
            return str(_jinja(self.text).render(**row))
        return self.text.format_map(row)


_compiled: dict[str, Any] = {}


def _jinja(text: str) -> Any:
    if text not in _compiled:
        import jinja2

        _compiled[text] = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(text)
    return _compiled[text]


def request_from_row(row: Mapping[str, Any], default_id: int, source: str, template: Template | None) -> Request:
    """One row as a Request; a missing column is an InputError naming the column and the line."""
    request_id = row.get("id")
    if request_id is None or request_id == "":
        request_id = default_id
    elif isinstance(request_id, float) and request_id.is_integer():
        request_id = int(request_id)
    elif not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = str(request_id)
    if template is not None:
        missing = sorted(template.columns() - set(row))
        if missing:
            raise InputError(
                f"the template needs column {missing[0]!r}, which is not here (columns: {', '.join(row)})",
                source=source,
            )
        prompt = template.render(row)
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
    """A value that JSON can carry (Parquet gives numpy and datetime values)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def csv_rows(path: Path, name: str) -> Iterator[tuple[dict[str, Any], str, int]]:
    """(row, source, number) for each data row; the source names the file's physical line."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames:
            raise InputError("the CSV file has no header row", source=name)
        for number, row in enumerate(reader, start=1):
            if None in row:
                raise InputError("more fields than the header has", source=f"{name}:{reader.line_num}")
            yield dict(row), f"{name}:{reader.line_num}", number


def parquet_rows(path: Path, name: str) -> Iterator[tuple[dict[str, Any], str, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'llmgather[parquet]'", source=name) from None
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield row, f"{name}: row {number}", number
