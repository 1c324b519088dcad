"""Ray Data: answer every prompt of a Parquet file on four workers that share one rate limit, and write the
answers to Parquet (the input's columns, plus content, error, usage, cost_usd, attempts and latency_s).

    python examples/ray_parquet.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from _provider import provider

import llmgather.ray


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        questions, answers = Path(folder) / "questions.parquet", Path(folder) / "answers"
        prompts = [f"What is {i} + {i}? Answer with the number only." for i in range(200)]
        pq.write_table(pa.table({"id": list(range(200)), "prompt": prompts}), questions)

        with provider("--rpm", "3000", "--latency", "0.05") as where:
            told = {"rpm": 3000} if where.fake else {}  # the fake's limit; OpenAI's is learned from its headers
            # One file is one block, and a block goes to one worker whole: split it so that all four get rows.
            dataset = ray.data.read_parquet(str(questions)).repartition(8)
            answered = llmgather.ray.complete(
                dataset,
                model=where.models[0],
                api_base=where.api_base,
                api_key=where.api_key,
                workers=4,
                rows_per_batch=50,
                concurrency=20,
                **told,
            )
            answered.write_parquet(str(answers))

        table = pq.read_table(answers)
        failed = len(table) - pc.sum(pc.is_null(table["error"])).as_py()
        print(f"{len(table)} rows answered into Parquet, {failed} failed; columns: {', '.join(table.column_names)}")


if __name__ == "__main__":
    main()
