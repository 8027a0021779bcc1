"""recommended(): each parameter kind to the optimizer that suits it, joined as one."""

from __future__ import annotations

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import MockLLM
from feedprop.node import Demos, Parameter
from feedprop.optim import BootstrapDemos, Compose, OptoPrime, Reflect, recommended


def test_each_kind_goes_to_its_optimizer() -> None:
    text, code = Parameter("Answer.", name="instruction"), Parameter("def f(x):\n    return x\n", name="f", kind="code")
    shots, number = Demos(name="shots"), Parameter(3, name="k")
    llm = MockLLM("unused")
    opt = recommended([text, shots, code, number], llm=llm, n_candidates=3, max_tokens=300)
    assert isinstance(opt, Compose)
    kinds = {type(part): sorted(dict(part.named_parameters())) for part in opt.parts}
    assert kinds == {BootstrapDemos: ["shots"], Reflect: ["f", "instruction"], OptoPrime: ["k"]}
    reflect = next(p for p in opt.parts if isinstance(p, Reflect))
    assert reflect.llm is llm and reflect.defaults["n_candidates"] == 3 and reflect.defaults["max_tokens"] == 300
    assert sorted(dict(opt.named_parameters())) == ["f", "instruction", "k", "shots"]


def test_only_the_kinds_present_get_a_part() -> None:
    opt = recommended([Demos(name="shots")])
    assert [type(p) for p in opt.parts] == [BootstrapDemos]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        recommended([])
    with pytest.raises(InvalidInputError, match="iterable"):
        recommended(Parameter("x"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Parameter objects"):
        recommended(["x"])  # type: ignore[list-item]
