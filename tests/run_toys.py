"""Small deterministic runs for the run page's tests: a train run, a Pareto run and a joint run, all on MockLLM.

The workflow is two stages, both trainable: an LLM call whose system prompt (``instruction``) is a text
parameter, then ``finish``, Python code that turns the reply into the answer. The scripted student
answers in capitals only when the instruction says "upper"; an answer must also end with "!".
The scripted optimizer first fixes the instruction, then the code, then proposes a worse
instruction, which validation refuses. One test item gets worse ("owl" wants no capitals and no "!"),
and one test item's text is markup, so a page that does not
escape it would run a script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.joint import alternate
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OptoPrime
from feedprop.training import train

HOSTILE = "<script>alert('x')</script>"
TRAIN = [(w, w.upper() + "!") for w in ("ant", "bee", "cat", "dog", "eel", "fox")]
VAL = [(w, w.upper() + "!") for w in ("gnu", "hen", "ibis", "jay")]
TEST = [(w, w.upper() + "!") for w in ("kiwi", "lynx", "mole", HOSTILE)] + [("owl", "owl")]  # owl: lost
FIXED_CODE = "def finish(self, reply: str) -> str:\n    return reply.strip() + '!'\n"


def student() -> MockLLM:
    def answer(messages: list[dict[str, Any]], **params: Any) -> str:
        question = messages[-1]["content"]
        return question.upper() if "upper" in messages[0]["content"] else question

    return MockLLM(answer, model="student-mock")


class Shout(Module):
    """instruction -> llm_call -> finish (code)."""

    def __init__(self) -> None:
        self.instruction = Parameter("Repeat the word.", name="instruction", description="system prompt")
        self.llm = student()

    @bundle(trainable=True, description="turns the reply into the answer")
    def finish(self, reply: str) -> str:
        return reply.strip()

    def forward(self, word: str) -> Node[Any]:
        reply = ops.llm_call(self.instruction, word, llm=self.llm, temperature=0)
        out: Node[Any] = self.finish(reply)
        return out


def guide(output: Any, target: Any) -> Feedback:
    """Half a point for the letters, half for ending with "!" exactly when the target does."""
    text, target = str(output), str(target)
    score = 0.5 * (text.rstrip("!") == target.rstrip("!")) + 0.5 * (text.endswith("!") == target.endswith("!"))
    return Feedback("Correct." if score == 1 else f"Expected {target!r}, got {text!r}.", score=score)


def suggest(**values: Any) -> str:
    return json.dumps({"reasoning": f"scripted: change {sorted(values)}", "suggestion": values})


SCRIPT = [
    suggest(instruction="Answer in upper case."),
    suggest(finish=FIXED_CODE),
    suggest(instruction="Whisper the word."),
]


def optimizer_llm() -> MockLLM:
    replies = iter(SCRIPT)
    return MockLLM(lambda messages, **params: next(replies, suggest(instruction="Reply.")), model="optimizer-mock")


def train_run(directory: Path, **options: Any) -> Any:
    """A finished fp.train run in ``directory``: 3 steps, 2 kept, 1 refused, test set before and after."""
    model = Shout()
    opt = OptoPrime(model.parameters(), llm=optimizer_llm())
    options = {"batch_size": 2, "max_steps": 3, **options}
    return train(model, TRAIN, guide, opt, val_set=VAL, test_set=TEST, checkpoint=directory, progress=False, **options)


def joint_run(directory: Path) -> Any:
    """A finished fp.joint.alternate("p -> p") run in ``directory``."""
    model = Shout()
    llm = optimizer_llm()
    return alternate(
        model,
        TRAIN,
        guide,
        "p -> p",
        val_set=VAL,
        test_set=TEST,
        optimizer=lambda params: OptoPrime(params, llm=llm),
        prompt={"max_steps": 2, "batch_size": 2},
        checkpoint=directory,
        progress=False,
    )
