"""The edges: reading requests in, writing results out."""

from llmgather.io.output import OutputFile
from llmgather.io.reader import InputFile, open_input, request_from_record, requests_from
from llmgather.io.resume import ResumeState, read_results

__all__ = [
    "InputFile",
    "OutputFile",
    "ResumeState",
    "open_input",
    "read_results",
    "request_from_record",
    "requests_from",
]
