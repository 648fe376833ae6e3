"""Which re-export of the bundled SmolLM2 answers best? (picks IRIS_LLM_BUNDLED_QUANT)

    .venv/bin/python bench/model_choice.py [--threads 2]

Asks twelve one-line factual questions at temperature 0 through the chat
template in each GGUF and counts the answers that contain the expected word;
also prints generation speed. Each file is loaded in turn in this process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from core.gguf import bundled_gguf_path, open_gguf, requantize

if TYPE_CHECKING:
    from llama_cpp.llama_types import CreateChatCompletionResponse

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Italy?", "rome"),
    ("How many days are in a week?", "seven|7"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What is the chemical symbol for water?", "h2o|h₂o"),
    ("What is the opposite of hot?", "cold"),
    ("How many legs does a spider have?", "eight|8"),
    ("What is the freezing point of water in Celsius?", "0|zero"),
    ("What gas do plants absorb from the air?", "carbon dioxide|co2"),
]


def score(path: Path, threads: int | None) -> tuple[int, float, list[str]]:
    llm = open_gguf(path, n_ctx=512, n_threads=threads)
    right, tokens, seconds, answers = 0, 0, 0.0, []
    for question, expected in QUESTIONS:
        began = time.perf_counter()
        out = cast(  # not streamed: one response
            "CreateChatCompletionResponse",
            llm.create_chat_completion(
                messages=[{"role": "user", "content": question}], temperature=0.0, max_tokens=48
            ),
        )
        seconds += time.perf_counter() - began
        tokens += out["usage"]["completion_tokens"]
        answer = out["choices"][0]["message"]["content"] or ""
        answers.append(answer.strip().replace("\n", " ")[:90])
        right += any(word in answer.lower() for word in expected.split("|"))
    llm.close()
    return right, tokens / seconds, answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()
    source = bundled_gguf_path()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"q4_1 (shipped)": source}
        for quant in ("q8_0", "f16"):
            files[quant] = requantize(source, Path(tmp) / f"{quant}.gguf", quant)
        for name, path in files.items():
            right, speed, answers = score(path, args.threads)
            print(f"{name:16} {right:2d}/{len(QUESTIONS)} right  {speed:6.1f} tok/s")
            if args.show:
                for (question, _), answer in zip(QUESTIONS, answers, strict=True):
                    print(f"    {question:50} {answer}")


if __name__ == "__main__":
    main()
