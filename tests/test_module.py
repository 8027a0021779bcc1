"""Module: parameter discovery, state dicts, JSON save/load, train/eval, and export to plain Python."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from feedprop.bundle import bundle
from feedprop.errors import CheckpointError, InvalidInputError, StateDictError
from feedprop.llm import MockLLM, set_default
from feedprop.module import Module, export_source
from feedprop.node import Demos, Node, Parameter
from feedprop.ops import allm_call, llm_call

SCALE_NAME = "scale"


def double(x: float) -> float:
    return x * 2


class Inner(Module):
    def __init__(self) -> None:
        self.bias = Parameter(0.5, description="added at the end")

    def forward(self, x: Any) -> Any:
        return double(x) + self.bias


class Plain(Module):
    """A plain-Python model: numbers, a list, a dict, a nested module and trainable code."""

    def __init__(self) -> None:
        self.offset = Parameter(1.0, description="added to the result")
        self.weights = [Parameter(1), Parameter(2)]
        self.table = {"greeting": Parameter("hi")}
        self.inner = Inner()
        self.frozen = Parameter("fixed", trainable=False)

    @bundle(trainable=True)
    def scale(self, x: float) -> float:
        return x * 2

    def forward(self, x: Any) -> Any:
        y = self.scale(x) + self.offset + self.weights[1] + self.inner(x)
        return y


class Solver(Module):
    def __init__(self) -> None:  # no super().__init__(): must still work
        self.instruction = Parameter("Answer the question.", description="the system prompt")

    @bundle(trainable=True)
    def extract_answer(self, response: str) -> str:
        return response.strip().splitlines()[-1]

    def forward(self, question: Any) -> Any:
        response = llm_call(self.instruction, question)
        return self.extract_answer(response)


class FewShot(Module):
    def __init__(self) -> None:
        self.instruction = Parameter("Answer with a number.", description="the system prompt")
        self.shots = Demos(description="worked examples", max_demos=2)

    def forward(self, question: Any) -> Any:
        return llm_call(self.instruction, question, demos=self.shots)


def test_named_parameters_follow_attributes_containers_modules_and_methods() -> None:
    m = Plain()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["offset", "weights.0", "weights.1", "table.greeting", "inner.bias", "frozen", "scale"]
    assert [p.name for p in m.parameters()] == [
        "offset",
        "weights.0",
        "weights.1",
        "table.greeting",
        "bias",
        "frozen",
        "scale",
    ]
    assert [n for n, _ in m.named_modules()] == ["", "inner"]
    code = dict(m.named_parameters())["scale"]
    assert code.kind == "code" and code is m.scale.parameter


def test_shared_parameters_are_listed_once_and_user_names_are_kept() -> None:
    class Shared(Module):
        def __init__(self) -> None:
            self.p = Parameter("x", name="mine")
            self.again = [self.p]

    s = Shared()
    assert [(n, p.name) for n, p in s.named_parameters()] == [("p", "mine")]


def test_an_instance_attribute_hiding_a_trainable_method_is_listed_once() -> None:
    m = Plain()
    m.scale = Parameter("replaced")  # type: ignore[assignment,method-assign]
    names = [n for n, _ in m.named_parameters()]
    assert names.count("scale") == 1 and dict(m.named_parameters())["scale"].data == "replaced"


def test_state_dict_roundtrip_and_strict_loading() -> None:
    m = Plain()
    sd = m.state_dict()
    assert json.loads(json.dumps(sd)) == sd
    assert sd["weights.1"] == 2 and sd["scale"].startswith("def scale")
    sd["offset"] = 3.5
    sd["table.greeting"] = "hello"
    assert m.load_state_dict(sd) == ([], [])
    assert m.offset.data == 3.5 and m.table["greeting"].data == "hello"
    with pytest.raises(StateDictError) as info:
        m.load_state_dict({"offset": 1.0, "nope": 2})
    assert "nope" in info.value.unexpected and "weights.0" in info.value.missing
    assert m.offset.data == 3.5  # nothing changed
    missing, unexpected = m.load_state_dict({"offset": 9.0, "nope": 2}, strict=False)
    assert m.offset.data == 9.0 and unexpected == ["nope"] and "scale" in missing


def test_load_state_dict_is_all_or_nothing() -> None:
    m = Plain()
    sd = m.state_dict()
    sd["offset"] = 42.0
    sd["weights.1"] = "not a number"
    with pytest.raises(InvalidInputError):
        m.load_state_dict(sd)
    assert m.offset.data == 1.0
    with pytest.raises(InvalidInputError):
        m.load_state_dict([("offset", 1.0)])  # type: ignore[arg-type]


def test_save_and_load_json(tmp_path: Path) -> None:
    m = Plain()
    m.offset.data = 7.0
    path = m.save(tmp_path / "sub" / "model.json")
    saved = json.loads(path.read_text())
    assert saved["format"] == "feedprop.module/1" and saved["state"]["offset"] == 7.0
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    fresh = Plain()
    fresh.load(path)
    assert fresh.state_dict() == m.state_dict()
    with pytest.raises(CheckpointError, match="no saved module"):
        fresh.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"state": {}}')
    with pytest.raises(CheckpointError, match="not a saved feedprop module"):
        fresh.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CheckpointError):
        fresh.load(tmp_path / "broken.json")


def test_train_eval_and_zero_feedback() -> None:
    m = Plain()
    assert m.training and m.inner.training
    assert m.eval() is m and not m.training and not m.inner.training
    m.train()
    assert m.inner.training
    out = m(Node(1.0, name="x"))
    out.backward("too big")
    assert all(
        len(p.feedback) == 1 for n, p in m.named_parameters() if n not in ("frozen", "weights.0", "table.greeting")
    )
    m.zero_feedback()
    assert all(p.feedback == [] for p in m.parameters())


def test_forward_is_required() -> None:
    class Empty(Module):
        pass

    with pytest.raises(NotImplementedError, match="forward"):
        Empty()(1)


def test_the_design_example_works_without_super_init() -> None:
    set_default(MockLLM("thinking...\n42"))
    try:
        solver = Solver()
        out = solver(Node("What is 6*7?", name="question"))
        assert out.data == "42"
        out.backward("Correct")
        assert [n for n, p in solver.named_parameters() if p.feedback] == ["instruction", "extract_answer"]
    finally:
        set_default(None)


def _learned_plain() -> Plain:
    m = Plain()
    m.offset.data = 5.0
    m.weights[1].data = 7
    m.inner.bias.data = 0.25
    m.table["greeting"].data = "hello"
    code = m.scale.parameter
    assert code is not None
    code.data = "def scale(self, x):\n    # learned\n    return x * 3\n"
    return m


def test_export_writes_plain_python_that_runs_without_feedprop(tmp_path: Path) -> None:
    m = _learned_plain()
    expected = m(2.0).data
    assert expected == 2.0 * 3 + 5.0 + 7 + (2.0 * 2 + 0.25)
    path = m.export(tmp_path / "plain_model.py")
    source = path.read_text()
    assert "feedprop" not in source.split('"""', 2)[2]
    assert "Parameter" not in source and "bundle" not in source
    assert "self.offset = 5.0" in source and "return x * 3" in source
    assert "def double(x" in source and "pytest" not in source
    script = (
        "import importlib.util, sys\n"
        "try:\n    import feedprop\nexcept ImportError:\n    pass\nelse:\n    sys.exit('feedprop importable')\n"
        f"spec = importlib.util.spec_from_file_location('plain_model', {str(path)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "m = mod.Plain()\n"
        "print(repr(m(2.0)), m.weights, m.table, m.inner.bias, m.frozen)\n"
    )
    run = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr + run.stdout
    assert run.stdout.split() == [repr(expected), "[1,", "7]", "{'greeting':", "'hello'}", "0.25", "fixed"]


def test_export_of_a_model_using_llm_calls_keeps_the_import(tmp_path: Path) -> None:
    s = Solver()
    s.instruction.data = "Answer with a number."
    source = export_source(s)
    assert "from feedprop.ops import llm_call" in source
    assert "self.instruction = 'Answer with a number.'" in source
    assert "def extract_answer(self, response: str) -> str:" in source and "@bundle" not in source
    assert "response = llm_call(self.instruction, question).data" in source
    spec = importlib.util.spec_from_file_location("solver_export", s.export(tmp_path / "solver_export.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    set_default(MockLLM(lambda messages, **params: f"{messages[0]['content']}\n42"))
    try:
        assert mod.Solver()("What is 6*7?") == "42"  # plain strings flow through the learned code
    finally:
        set_default(None)


class AsyncSolver(Module):
    def __init__(self) -> None:
        self.instruction = Parameter("Answer.", name="instruction")

    async def forward(self, question: str) -> Any:
        reply = await allm_call(self.instruction, question)
        return reply


def test_export_of_an_async_workflow_awaits_before_reading_values(tmp_path: Path) -> None:
    s = AsyncSolver()
    s.instruction.data = "Answer with a number."
    source = export_source(s)
    assert "reply = (await allm_call(self.instruction, question)).data" in source
    spec = importlib.util.spec_from_file_location("async_export", s.export(tmp_path / "async_export.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    set_default(MockLLM(lambda messages, **params: f"{messages[0]['content']} 42"))
    try:
        assert asyncio.run(mod.AsyncSolver()("What is 6*7?")) == "Answer with a number. 42"
    finally:
        set_default(None)


def test_save_raises_only_typed_errors_and_leaves_no_file(tmp_path: Path) -> None:
    m = FewShot()
    m.shots.data.append({"input": "1+1?", "output": "\ud800"})  # in place: past the parameter's checks
    with pytest.raises(InvalidInputError, match="parameter 'shots' holds a lone surrogate"):
        m.save(tmp_path / "few.json")
    with pytest.raises(InvalidInputError, match="NUL character; remove it"):
        FewShot().save(tmp_path / "a\0b.json")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_what_it_cannot_write() -> None:
    class Local(Module):
        pass

    with pytest.raises(InvalidInputError, match="top level"):
        export_source(Local())


def test_demos_round_trip_through_state_dict_and_json(tmp_path: Path) -> None:
    m = FewShot()
    assert m.state_dict() == {"instruction": "Answer with a number.", "shots": []}
    demos = [{"input": "1+1?", "output": "2"}, {"input": "2+2?", "output": "4"}]
    m.shots.data = demos
    path = m.save(tmp_path / "few.json")
    assert json.loads(path.read_text())["state"]["shots"] == demos
    fresh = FewShot()
    assert fresh.load(path) == ([], [])
    assert isinstance(fresh.shots, Demos) and fresh.shots.data == demos and fresh.shots.name == "shots"
    bad = {"instruction": "changed", "shots": [{"input": "q"}]}
    with pytest.raises(InvalidInputError, match="exactly the keys"):
        fresh.load_state_dict(bad)
    assert fresh.state_dict() == {"instruction": "Answer with a number.", "shots": demos}  # all or nothing
    with pytest.raises(InvalidInputError, match="at most 2"):
        fresh.load_state_dict({"instruction": "x", "shots": [*demos, {"input": "3+3?", "output": "6"}]})


def test_export_inlines_learned_demos(tmp_path: Path) -> None:
    m = FewShot()
    m.shots.data = [{"input": "1+1?", "output": "2"}]
    source = export_source(m)
    assert "self.shots = [{'input': '1+1?', 'output': '2'}]" in source and "Demos" not in source
    spec = importlib.util.spec_from_file_location("few_export", m.export(tmp_path / "few_export.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    set_default(MockLLM(lambda messages, **params: " / ".join(msg["content"] for msg in messages)))
    try:
        assert mod.FewShot()("3+3?") == "Answer with a number. / 1+1? / 2 / 3+3?"
    finally:
        set_default(None)


def test_export_marks_learned_code_and_says_it_runs_unsandboxed(tmp_path: Path) -> None:
    m = _learned_plain()
    source = m.export(tmp_path / "marked_model.py").read_text()
    docstring = source.split('"""', 2)[1]
    assert "WARNING: LEARNED CODE, source that an optimizer (a language model) wrote, is in: Plain.scale." in docstring
    assert "runs unsandboxed" in docstring
    lines = source.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("def scale("))
    assert lines[at - 2].strip().startswith("# LEARNED CODE: written by an optimizer")
    assert "runs unsandboxed" in lines[at - 1]
    assert sum("# LEARNED CODE" in line for line in lines) == 1  # only the rewritten method is marked
    assert Module.export.__doc__ is not None and "runs unsandboxed" in Module.export.__doc__


def test_export_without_rewritten_code_has_no_warning() -> None:
    source = export_source(Solver())
    assert "LEARNED CODE" not in source and "WARNING" not in source


@bundle(trainable=True)
def polish(text: str) -> str:
    return text.strip()


class Polisher(Module):
    def forward(self, text: str) -> Any:
        return polish(text)


def test_export_marks_a_rewritten_module_level_function(tmp_path: Path) -> None:
    assert polish.parameter is not None
    original = polish.parameter.data
    try:
        assert "LEARNED CODE" not in export_source(Polisher())
        polish.parameter.data = "def polish(text: str) -> str:\n    return text.strip().upper()\n"
        path = Polisher().export(tmp_path / "polisher.py")
        source = path.read_text()
        assert "is in: polish." in source.split('"""', 2)[1]
        lines = source.splitlines()
        at = lines.index("def polish(text: str) -> str:")
        assert lines[at - 2].startswith("# LEARNED CODE") and "unsandboxed" in lines[at - 1]
        spec = importlib.util.spec_from_file_location("polisher_export", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert mod.Polisher()(" hi ") == "HI"
    finally:
        polish.parameter.data = original


class Router(Module):
    def __init__(self, route: str) -> None:
        self.route_prompt = Parameter("Reply SEARCH or DIRECT.", description="the router")
        self.llm = MockLLM(route)

    def forward(self, question: Any) -> Any:
        return llm_call(self.route_prompt, question, llm=self.llm)


class Routed(Module):
    """Branches with a plain ``if`` on what a nested module returned."""

    def __init__(self, route: str) -> None:
        self.router = Router(route)
        self.search_prompt = Parameter("Answer from the search results.", description="the searching answerer")
        self.direct_prompt = Parameter("Answer from memory.", description="the direct answerer")

    def forward(self, question: Any) -> Any:
        route = self.router(question)
        if route.data == "SEARCH":
            return llm_call(self.search_prompt, question, llm=MockLLM("found it"))
        return llm_call(self.direct_prompt, question, llm=MockLLM("I remember"))


@pytest.mark.parametrize("route", ["SEARCH", "DIRECT"])
def test_calling_a_module_traces_the_branch_so_the_router_receives_feedback(route: str) -> None:
    model = Routed(route)
    out = model("Who founded Hessing?")
    out.backward("Wrong: the founder is Ilse Brandvik.")
    reached = {name for name, p in model.named_parameters() if p.feedback}
    assert reached == {"router.route_prompt", "search_prompt" if route == "SEARCH" else "direct_prompt"}
    assert [n.data for n in out.control_parents] == [route]
