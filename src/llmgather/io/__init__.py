"""The edges: reading requests in, writing results out."""

from llmgather.io.output import OutputFile, open_output
from llmgather.io.reader import JsonlInput, open_input, request_from_record, requests_from
from llmgather.io.resume import ResumeState, read_results
from llmgather.io.writer import ResultWriter

__all__ = [
    "JsonlInput",
    "OutputFile",
    "ResultWriter",
    "ResumeState",
    "open_input",
    "open_output",
    "read_results",
    "request_from_record",
    "requests_from",
]
