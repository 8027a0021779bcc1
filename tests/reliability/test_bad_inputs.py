"""Bad inputs to the public API fail fast, with a typed error whose message says what to do.

One table: each row calls the API as a user might get it wrong, and names the error type expected
and a phrase of the message that tells the user how to fix it. Every row runs offline and fast
(an unreachable endpoint is a loopback port with nothing listening; a missing or corrupt model file
is a model spec whose parts are not installed).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import feedprop as fp
from feedprop.errors import (
    CheckpointError,
    ConfigurationError,
    EndpointUnreachableError,
    FeedpropError,
    InvalidInputError,
    ModelFileError,
    StateDictError,
    SuggestionError,
)
from feedprop.llm import RetryPolicy, model_file

FAST = RetryPolicy(max_retries=1, initial_delay=0.01, jitter=0.0)
ASK = [{"role": "user", "content": "hi"}]


class Greeter(fp.Module):
    def __init__(self) -> None:
        self.greeting = fp.Parameter("Hello", name="greeting")
        self.weight = fp.Parameter(0.5, name="weight", bounds=(0.0, 1.0))

    def forward(self, name: str) -> fp.Node[Any]:
        return self.greeting + ", " + name


def echo(output: Any, target: Any) -> float:
    return float(output == target)


def cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def cyclic_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"a": 1}
    mapping["self"] = mapping
    return mapping


def param_containing_itself() -> None:
    p = fp.Parameter([1, 2], name="p")
    p.set([p])


def param_mutated_to_hold_a_lone_surrogate_then_saved(tmp: Path) -> None:
    holder = Greeter()
    holder.names = fp.Parameter(["Ada"], name="names")
    holder.names.data.append("\ud800")  # in place, past the checks of param.data = ...
    holder.save(tmp / "holder.json")


def param_mutated_to_hold_itself_then_saved(tmp: Path) -> None:
    class Holder(fp.Module):
        def __init__(self) -> None:
            self.items = fp.Parameter([1], name="items")

    holder = Holder()
    holder.items.data.append(holder.items)  # the value is a live list: mutating it in place skips the checks
    holder.save(tmp / "holder.json")


def optimizer(**options: Any) -> Callable[..., Any]:
    return lambda _tmp=None: fp.optim.OptoPrime(Greeter().parameters(), llm=fp.MockLLM("{}"), **options)


def train(**kwargs: Any) -> Callable[..., Any]:
    def call(_tmp: Path | None = None) -> Any:
        model = kwargs.pop("model", None) or Greeter()
        owner = model if isinstance(model, fp.Module) else Greeter()
        opt = kwargs.pop("optimizer", None) or fp.optim.OptoPrime(owner.parameters(), llm=fp.MockLLM("{}"))
        args = {"train_set": [("Ada", "Hi, Ada")], "guide": echo, "progress": False, "plot": False, **kwargs}
        return fp.train(model, args.pop("train_set"), args.pop("guide"), opt, **args)

    return call


def unreachable_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# (id, call, error type, phrase of the message that says what to do). ``tmp`` is a fresh directory.
Case = tuple[str, Callable[[Path], Any], type[BaseException], str]
CASES: list[Case] = [
    # Parameter
    ("Parameter of a non-JSON value", lambda t: fp.Parameter(object()), InvalidInputError, "JSON-serialisable"),
    ("Parameter of a set", lambda t: fp.Parameter({1, 2}), InvalidInputError, "JSON-serialisable"),
    ("Parameter of NaN", lambda t: fp.Parameter(math.nan), InvalidInputError, "finite"),
    ("Parameter of an int too big for a float", lambda t: fp.Parameter(10**400), InvalidInputError, "finite"),
    ("Parameter of a list that contains itself", lambda t: fp.Parameter(cyclic_list()), InvalidInputError, "itself"),
    ("Parameter of a dict that contains itself", lambda t: fp.Parameter(cyclic_dict()), InvalidInputError, "itself"),
    ("Parameter whose value contains itself", lambda t: param_containing_itself(), InvalidInputError, "JSON"),
    ("Parameter of a dict with int keys", lambda t: fp.Parameter({1: "a"}), InvalidInputError, "string keys"),
    ("Parameter named ''", lambda t: fp.Parameter("x", name=""), InvalidInputError, "non-empty str"),
    ("Parameter of an unknown kind", lambda t: fp.Parameter("x", kind="prose"), InvalidInputError, "must be one of"),
    ("Parameter of a number given kind=text", lambda t: fp.Parameter(1, kind="text"), InvalidInputError, "holds a str"),
    ("Parameter bounds reversed", lambda t: fp.Parameter(1.0, bounds=(2, 1)), InvalidInputError, "lo <= hi"),
    ("Parameter bounds not a pair", lambda t: fp.Parameter(1.0, bounds=3), InvalidInputError, "(lo, hi)"),
    ("Parameter bounds of text", lambda t: fp.Parameter(1.0, bounds=("a", "b")), InvalidInputError, "numbers"),
    ("Parameter bounds on text", lambda t: fp.Parameter("x", bounds=(0, 1)), InvalidInputError, "only to number"),
    ("Parameter description not text", lambda t: fp.Parameter("x", description=5), InvalidInputError, "a str"),
    ("Parameter constraint not text", lambda t: fp.Parameter("x", constraint=5), InvalidInputError, "callable"),
    ("Parameter set to the wrong type", lambda t: Greeter().weight.set("high"), InvalidInputError, "finite int"),
    ("Parameter set out of bounds", lambda t: Greeter().weight.set(2.0), SuggestionError, "within [0.0, 1.0]"),
    (
        "Parameter starting out of bounds",
        lambda t: fp.Parameter(5, bounds=(0, 1)),
        InvalidInputError,
        "give an initial value within the bounds, or widen them",
    ),
    (
        "Parameter trainable='no'",
        lambda t: fp.Parameter("x", trainable="no"),
        InvalidInputError,
        "trainable must be True or False, got 'no'; pass trainable=False to freeze it",
    ),
    (
        "Parameter of text with a lone surrogate",
        lambda t: fp.Parameter("a\ud800b"),
        InvalidInputError,
        "'\\ud800' at position 1 of a text, a lone surrogate, which is not a character and cannot be saved; "
        "remove it, or clean the text with text.encode('utf-8', 'replace').decode('utf-8')",
    ),
    (
        "Parameter set to JSON with a lone surrogate",
        lambda t: fp.Parameter({"k": ["v"]}).set({"k": ["\udcff"]}),
        InvalidInputError,
        "a lone surrogate",
    ),
    # node()
    ("node trainable='yes'", lambda t: fp.node(1, trainable="yes"), InvalidInputError, "True or False"),
    (
        "node of a node with new settings",
        lambda t: fp.node(fp.Node(1, name="one"), name="two"),
        InvalidInputError,
        "returns unchanged; to make a new node with other settings, pass its value: node(x.data, ...)",
    ),
    (
        "node with a constraint but not trainable",
        lambda t: fp.node(1, constraint="positive"),
        InvalidInputError,
        "pass trainable=True (or fp.Parameter(..., trainable=False) for a parameter that stays fixed)",
    ),
    # Module
    (
        "load_state_dict with an unknown name",
        lambda t: Greeter().load_state_dict({"greeting": "Hi", "weight": 0.1, "greetng": "Hi"}),
        StateDictError,
        "strict=False",
    ),
    (
        "load_state_dict missing a name",
        lambda t: Greeter().load_state_dict({"greeting": "Hi"}),
        StateDictError,
        "missing",
    ),
    (
        "load_state_dict of a list",
        lambda t: Greeter().load_state_dict([("greeting", "Hi")]),
        InvalidInputError,
        "mapping",
    ),
    (
        "load_state_dict with a wrong value type",
        lambda t: Greeter().load_state_dict({"greeting": 5, "weight": 0.1}),
        InvalidInputError,
        "holds a str",
    ),
    ("load of a missing file", lambda t: Greeter().load(t / "nope.json"), CheckpointError, "module.save(path)"),
    (
        "load of a corrupt file",
        lambda t: _write(t / "bad.json", "{not json") and Greeter().load(t / "bad.json"),
        CheckpointError,
        "save it again",
    ),
    (
        "load of another kind of JSON file",
        lambda t: _write(t / "other.json", "[1, 2]") and Greeter().load(t / "other.json"),
        CheckpointError,
        "expected format",
    ),
    ("save to a directory", lambda t: Greeter().save(t), CheckpointError, "file path"),
    ("save to a non-path", lambda t: Greeter().save(123), InvalidInputError, "file path"),
    ("save a value mutated to hold itself", param_mutated_to_hold_itself_then_saved, InvalidInputError, "JSON"),
    (
        "save a value mutated to hold a lone surrogate",
        param_mutated_to_hold_a_lone_surrogate_then_saved,
        InvalidInputError,
        "parameter 'names' holds a lone surrogate",
    ),
    (
        "load_state_dict of a lone surrogate",
        lambda t: Greeter().load_state_dict({"greeting": json.loads('"Hi \\ud800"'), "weight": 0.1}),
        InvalidInputError,
        "a lone surrogate",
    ),
    ("save to a path with a NUL", lambda t: Greeter().save(t / "a\0b.json"), InvalidInputError, "NUL character"),
    # bundle and ops
    ("bundle of a non-function", lambda t: fp.bundle(3), InvalidInputError, "function"),
    ("trainable bundle of a builtin", lambda t: fp.bundle(trainable=True)(len), InvalidInputError, "source"),
    (
        "bundled function given wrong arguments",
        lambda t: fp.bundle()(lambda x: x)(1, 2),
        InvalidInputError,
        "arguments of that signature",
    ),
    ("llm_call without a user message", lambda t: fp.ops.llm_call("sys"), InvalidInputError, "llm_call(system, user"),
    (
        "llm_call of a non-text prompt",
        lambda t: fp.ops.llm_call(3, "u", llm=fp.MockLLM("x")),
        InvalidInputError,
        "ops.format",
    ),
    (
        "llm_call with a model name for llm",
        lambda t: fp.ops.llm_call("s", "u", llm="gpt"),
        InvalidInputError,
        "feedprop.llm.LLM",
    ),
    ("iterate over a plain value", lambda t: fp.ops.iterate([1, 2]), InvalidInputError, "iterate plain values"),
    # the LLM call
    ("complete of a string", lambda t: fp.MockLLM("x").complete("hi"), InvalidInputError, "wrap it as"),
    (
        "complete with an unknown role",
        lambda t: fp.MockLLM("x").complete([{"role": "bot", "content": "x"}]),
        InvalidInputError,
        "must be one of",
    ),
    ("complete with n=2", lambda t: fp.MockLLM("x").complete(ASK, n=2), ConfigurationError, "cache_salt"),
    (
        "complete with stream=True",
        lambda t: fp.MockLLM("x").complete(ASK, stream=True),
        ConfigurationError,
        "whole reply",
    ),
    (
        "complete at temperature NaN",
        lambda t: fp.MockLLM("x").complete(ASK, temperature=math.nan),
        InvalidInputError,
        "finite",
    ),
    (
        "complete with a parameter that contains itself",
        lambda t: fp.MockLLM("x").complete(ASK, stop=cyclic_list()),
        InvalidInputError,
        "contains itself",
    ),
    (
        "complete with cache='yes'",
        lambda t: fp.MockLLM("x").complete(ASK, cache="yes"),
        InvalidInputError,
        "True or False",
    ),
    ("MockLLM of a number", lambda t: fp.MockLLM(5), InvalidInputError, "handler"),
    ("MockLLM of no replies", lambda t: fp.MockLLM([]), ConfigurationError, "at least one"),
    ("RetryPolicy with negative retries", lambda t: RetryPolicy(max_retries=-1), ConfigurationError, "non-negative"),
    ("RetryPolicy with a text jitter", lambda t: RetryPolicy(jitter="a"), ConfigurationError, "between 0 and 1"),
    # endpoints
    (
        "OpenAICompatible with an ftp URL",
        lambda t: fp.OpenAICompatible("ftp://host/v1", model="m"),
        ConfigurationError,
        "http://127.0.0.1:8080/v1",
    ),
    (
        "OpenAICompatible with a port for a URL",
        lambda t: fp.OpenAICompatible(8080, model="m"),
        ConfigurationError,
        "http(s) URL",
    ),
    (
        "OpenAICompatible with a negative timeout",
        lambda t: fp.OpenAICompatible("http://127.0.0.1:1/v1", model="m", timeout=-1),
        ConfigurationError,
        "positive number of seconds",
    ),
    (
        "OpenAICompatible with an empty model",
        lambda t: fp.OpenAICompatible("http://127.0.0.1:1/v1", model=""),
        ConfigurationError,
        "non-empty string",
    ),
    (
        "OpenAICompatible with a numeric API key",
        lambda t: fp.OpenAICompatible("http://127.0.0.1:1/v1", model="m", api_key=1234),
        InvalidInputError,
        "FEEDPROP_API_KEY",
    ),
    (
        "OpenAICompatible with zero concurrency",
        lambda t: fp.OpenAICompatible("http://127.0.0.1:1/v1", model="m", max_concurrency=0),
        ConfigurationError,
        "max_concurrency",
    ),
    (
        "unreachable endpoint asked for its models",
        lambda t: fp.OpenAICompatible(f"http://127.0.0.1:{unreachable_port()}/v1", retry=FAST),
        EndpointUnreachableError,
        "Check that the server is running",
    ),
    (
        "unreachable endpoint asked to complete",
        lambda t: fp.OpenAICompatible(
            f"http://127.0.0.1:{unreachable_port()}/v1", model="m", cache=False, retry=FAST
        ).complete(ASK),
        EndpointUnreachableError,
        "Check that the server is running",
    ),
    # the embedded model's file
    (
        "LocalModel of a missing file",
        lambda t: fp.LocalModel(model_path=t / "missing.gguf"),
        ModelFileError,
        "pass the path of a GGUF file",
    ),
    (
        "LocalModel of a corrupt file",
        lambda t: fp.LocalModel(model_path=_write(t / "junk.gguf", "junk")),
        ModelFileError,
        "GGUF",
    ),
    ("LocalModel of an unknown model", lambda t: fp.LocalModel("gpt-17"), ConfigurationError, "choose one of"),
    (
        "ensure_model_file of an unknown model",
        lambda t: fp.llm.ensure_model_file("gpt-17"),
        ConfigurationError,
        "choose one of",
    ),
    (
        "ensure_model_file without its parts",
        lambda t: fp.llm.ensure_model_file("tiny-test"),
        ModelFileError,
        "pip install",
    ),
    (
        "ensure_model_file of a corrupt file without its parts",
        lambda t: _corrupt_tiny_model() and fp.llm.ensure_model_file("tiny-test"),
        ModelFileError,
        "pip install",
    ),
    # train and evaluate
    ("train a plain function", train(model=lambda x: x), InvalidInputError, "fp.evaluate()"),
    ("train with a non-optimizer", train(optimizer="adam"), InvalidInputError, "fp.optim.OptoPrime"),
    (
        "train with another model's optimizer",
        train(optimizer=fp.optim.OptoPrime(Greeter().parameters(), llm=fp.MockLLM("{}"))),
        ConfigurationError,
        "model.parameters()",
    ),
    ("train without a guide", train(guide=None), InvalidInputError, "callable"),
    ("train on an empty set", train(train_set=[]), ConfigurationError, "at least one"),
    ("train on a string", train(train_set="abc"), InvalidInputError, "sequence of examples"),
    ("train with batch_size=0", train(batch_size=0), ConfigurationError, ">= 1"),
    ("train with batch_size=1.5", train(batch_size=1.5), InvalidInputError, "must be an int"),
    ("train with a dict for a budget", train(budget={"calls": 3}), InvalidInputError, "fp.Budget("),
    ("train with a number for a checkpoint", train(checkpoint=5), InvalidInputError, "directory path"),
    (
        "train with a file for a checkpoint",
        lambda t: train(checkpoint=_write(t / "file.txt", "x"))(),
        CheckpointError,
        "give a directory",
    ),
    ("train resume without a checkpoint", train(resume=True), ConfigurationError, "checkpoint=<directory"),
    ("train with a text seed", train(seed="x"), InvalidInputError, "must be an int"),
    ("train with beam search and no val_set", train(beam_width=2), ConfigurationError, "pass a val_set"),
    ("train with a guide that returns text", train(guide=lambda out, target: "good"), InvalidInputError, "Feedback"),
    ("train with a guide that returns NaN", train(guide=lambda out, target: math.nan), InvalidInputError, "finite"),
    (
        "train over an existing run",
        lambda t: (train(checkpoint=t)(), train(checkpoint=t)()),
        CheckpointError,
        "resume=True",
    ),
    ("evaluate a non-callable", lambda t: fp.evaluate(None, [("a", "b")], echo), InvalidInputError, "callable"),
    ("evaluate without data", lambda t: fp.evaluate(str.upper, None, echo), ConfigurationError, "pass a list"),
    (
        "evaluate with a non-callable guide",
        lambda t: fp.evaluate(str.upper, [("a", "A")], 3),
        InvalidInputError,
        "callable",
    ),
    (
        "evaluate with max_workers=0",
        lambda t: fp.evaluate(str.upper, [("a", "A")], echo, max_workers=0),
        ConfigurationError,
        ">= 1",
    ),
    # optimizers
    (
        "optimizer over one Parameter",
        lambda t: fp.optim.OptoPrime(fp.Parameter("x")),
        InvalidInputError,
        "model.parameters()",
    ),
    ("optimizer over None", lambda t: fp.optim.OptoPrime(None), InvalidInputError, "model.parameters()"),
    ("optimizer over a number", lambda t: fp.optim.OptoPrime(5), InvalidInputError, "model.parameters()"),
    ("optimizer over nothing", lambda t: fp.optim.OptoPrime([]), ConfigurationError, "model.parameters()"),
    ("optimizer over plain values", lambda t: fp.optim.OptoPrime([1.0]), InvalidInputError, "fp.Parameter(value)"),
    (
        "optimizer with a model name for llm",
        lambda t: fp.optim.OptoPrime([fp.Parameter("x")], llm="gpt"),
        InvalidInputError,
        "MockLLM or OpenAICompatible",
    ),
    ("optimizer with an unknown option", optimizer(lr=0.1), ConfigurationError, "known options"),
    ("optimizer with an unknown reply format", optimizer(reply_format="yaml"), ConfigurationError, "must be one of"),
    ("optimizer with negative memory", optimizer(memory_size=-1), ConfigurationError, "memory_size"),
    ("optimizer at temperature 5", optimizer(temperature=5), ConfigurationError, "between 0 and 2"),
    (
        "TGD with negative momentum",
        lambda t: fp.optim.TextualGradientDescent([fp.Parameter("x")], momentum=-1),
        ConfigurationError,
        "momentum must be an int >= 0",
    ),
    (
        "TGD with one constraint as a string",
        lambda t: fp.optim.TextualGradientDescent([fp.Parameter("x")], constraints="short"),
        InvalidInputError,
        "list of sentences",
    ),
    (
        "TGD with a number for examples",
        lambda t: fp.optim.TextualGradientDescent([fp.Parameter("x")], examples=5),
        InvalidInputError,
        "list of",
    ),
    (
        "OPRO showing zero values",
        lambda t: fp.optim.OPRO([fp.Parameter("x")], top_k=0),
        ConfigurationError,
        "top_k must be an int >= 1",
    ),
    (
        "OPRO with a text history size",
        lambda t: fp.optim.OPRO([fp.Parameter("x")], history_size="5"),
        ConfigurationError,
        "history_size must be an int",
    ),
    (
        "OPRO with a number for a task",
        lambda t: fp.optim.OPRO([fp.Parameter("x")], task=5),
        InvalidInputError,
        "task must be a sentence",
    ),
    (
        "optimizer state of another kind",
        lambda t: optimizer()().load_state_dict({"a": 1}),
        InvalidInputError,
        "what state_dict() returned",
    ),
    (
        "apply to an unknown parameter",
        lambda t: optimizer()().apply({"colour": "red"}),
        SuggestionError,
        "this optimizer owns",
    ),
    # Budget
    ("Budget of negative calls", lambda t: fp.Budget(calls=-1), ConfigurationError, ">= 0"),
    ("Budget of calls as text", lambda t: fp.Budget(calls="5"), InvalidInputError, "an int or None"),
    ("Budget of fractional tokens", lambda t: fp.Budget(tokens=1.5), InvalidInputError, "an int or None"),
    ("Budget of infinite seconds", lambda t: fp.Budget(seconds=math.inf), ConfigurationError, "finite"),
    ("Budget of an unknown scope", lambda t: fp.Budget(scope="everything"), ConfigurationError, "must be one of"),
    # tasks and guides
    ("load_bbh of a misspelt task", lambda t: fp.tasks.load_bbh("object_countin"), ConfigurationError, "choose one of"),
    (
        "load_bbh with an unknown protocol",
        lambda t: fp.tasks.load_bbh("object_counting", protocol="dspy"),
        ConfigurationError,
        "choose one of",
    ),
    ("load_task of an unknown name", lambda t: fp.tasks.load_task("imagenet"), ConfigurationError, "choose one of"),
    ("load_mmlu of an unknown subject", lambda t: fp.tasks.load_mmlu("astrology"), ConfigurationError, "choose one of"),
    ("LLMJudge without a rubric", lambda t: fp.LLMJudge(None), InvalidInputError, "rubric"),
    (
        "LLMJudge with negative retries",
        lambda t: fp.LLMJudge("Is it right?", retries=-1),
        ConfigurationError,
        "retries must be an int >= 0",
    ),
    (
        "LLMJudge with a model name for llm",
        lambda t: fp.LLMJudge("Is it right?", llm="gpt"),
        InvalidInputError,
        "feedprop.llm.LLM",
    ),
    ("Numeric with a negative tolerance", lambda t: fp.Numeric(abs_tol=-1), ConfigurationError, ">= 0"),
    ("Numeric against a text target", lambda t: fp.Numeric()("5", "five"), InvalidInputError, "fix the dataset"),
    ("UnitTest with no time", lambda t: fp.UnitTest(timeout=0), ConfigurationError, "> 0"),
    # feedback
    ("backward with an object", lambda t: (fp.Parameter("x") + "y").backward(object()), InvalidInputError, "Feedback"),
    ("Feedback without text", lambda t: fp.Feedback(None), InvalidInputError, "must be a str"),
    ("Feedback with an infinite score", lambda t: fp.Feedback("ok", score=math.inf), InvalidInputError, "finite"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _corrupt_tiny_model() -> bool:
    path = model_file.model_path("tiny-test")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF, but only the first few bytes")
    return True


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private feedprop home, no default endpoint, and a tiny model spec whose parts are not installed."""
    monkeypatch.setenv("FEEDPROP_HOME", str(tmp_path / "home"))
    for name in ("FEEDPROP_BASE_URL", "FEEDPROP_MODEL", "FEEDPROP_API_KEY", "FEEDPROP_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    tiny = model_file.ModelSpec("tiny-test", "tiny-test.gguf", "feedprop_absent_part", 2, 10, "0" * 64)
    monkeypatch.setitem(model_file.MODELS, "tiny-test", tiny)
    yield


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("call", "error", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_with_a_typed_error_saying_what_to_do(
    call: Callable[[Path], Any], error: type[BaseException], hint: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(error) as info:
        call(work)
    assert isinstance(info.value, FeedpropError), f"{type(info.value).__name__} is not a feedprop error"
    assert hint.lower() in str(info.value).lower(), f"the message does not say {hint!r}: {info.value}"


def test_the_table_covers_the_public_api() -> None:
    text = " ".join(c[0] for c in CASES)
    for name in (
        "Parameter",
        "load_state_dict",
        "bundle",
        "llm_call",
        "complete",
        "OpenAICompatible",
        "LocalModel",
        "ensure_model_file",
        "train",
        "evaluate",
        "optimizer",
        "Budget",
        "load_bbh",
        "unreachable",
        "contains itself",
    ):
        assert re.search(re.escape(name), text), name


def test_a_failed_load_state_dict_changes_nothing() -> None:
    model = Greeter()
    with pytest.raises(SuggestionError):
        model.load_state_dict({"greeting": "Hi", "weight": 7.0})
    assert model.state_dict() == {"greeting": "Hello", "weight": 0.5}


def test_a_module_holding_a_cyclic_structure_still_lists_its_parameters(tmp_path: Path) -> None:
    model = Greeter()
    loop = cyclic_list()
    loop.append(fp.Parameter("x", name="extra"))
    model.stuff = loop
    model.table = cyclic_dict()
    assert [name for name, _ in model.named_parameters()] == ["greeting", "weight", "stuff.2"]
    model.save(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["state"]["stuff.2"] == "x"
