"""The edges: reading requests in, writing results out."""

from llmgather.io.reader import JsonlInput, open_input, request_from_record, requests_from
from llmgather.io.writer import ResultWriter

__all__ = ["JsonlInput", "ResultWriter", "open_input", "request_from_record", "requests_from"]
