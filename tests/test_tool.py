"""Tool: the schema read from a signature, the trainable description, calling with a model's arguments."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from feedprop.errors import InvalidInputError
from feedprop.node import Parameter
from feedprop.tool import Tool, parameters_schema


def price(item: str, quantity: int = 1, currency: Literal["skell", "mark"] = "skell") -> float:
    """The price of ``quantity`` items.

    A second paragraph the model is not shown.
    """
    return {"map": 15.0}[item] * quantity


def test_the_schema_comes_from_the_signature() -> None:
    def shop(
        names: list[str], counts: dict[str, int], pair: tuple[int, ...], note: str | None = None, flag=False
    ) -> None: ...

    assert parameters_schema(shop) == {
        "type": "object",
        "properties": {
            "names": {"type": "array", "items": {"type": "string"}},
            "counts": {"type": "object"},
            "pair": {"type": "array", "items": {"type": "integer"}},
            "note": {"type": "string"},
            "flag": {},
        },
        "required": ["names", "counts", "pair"],
    }
    assert parameters_schema(price)["properties"]["currency"] == {"type": "string", "enum": ["skell", "mark"]}


@pytest.mark.parametrize(
    ("fn", "fragment"),
    [
        (lambda *items: None, "named JSON arguments only"),
        (lambda **options: None, "named JSON arguments only"),
        (abs, "named JSON arguments only"),  # positional-only builtin
    ],
)
def test_signatures_a_model_cannot_call_are_refused(fn: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        parameters_schema(fn)


def test_an_annotation_without_a_schema_asks_for_one() -> None:
    def when(day: complex) -> None: ...

    with pytest.raises(InvalidInputError, match=r"pass Tool\(\.\.\., parameters="):
        Tool(when, "A day.")
    tool = Tool(when, "A day.", parameters={"type": "object", "properties": {"day": {"type": "string"}}})
    assert tool.schema()["function"]["parameters"]["properties"] == {"day": {"type": "string"}}


def test_the_description_is_a_trainable_text_parameter() -> None:
    tool = Tool(price)
    assert tool.name == "price" and tool.description.data == "The price of ``quantity`` items."
    assert tool.description.name == "price_description" and tool.description.trainable
    assert tool.description.kind == "text" and "price" in tool.description.description
    tool.description = "What some items cost, in skell."
    assert tool.schema() == {
        "type": "function",
        "function": {
            "name": "price",
            "description": "What some items cost, in skell.",
            "parameters": parameters_schema(price),
        },
    }
    own = Parameter("Prices.", name="shared", trainable=False)
    tool.description = own
    assert tool.description is own and Tool(price, own, name="cost").description is own


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ((42,), {}, "takes a function"),
        ((lambda item: 1,), {}, "1 to 64 letters"),
        ((price,), {"name": "price list"}, "1 to 64 letters"),
        ((price, ""), {}, "non-empty str or a text Parameter"),
        ((price, Parameter(3)), {}, "must hold text"),
        ((price,), {"parameters": {"item": "string"}}, "JSON schema of the arguments"),
    ],
)
def test_bad_tools_are_typed_errors(args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        Tool(*args, **kwargs)


def test_a_function_without_a_docstring_needs_a_description() -> None:
    def bare(x: int) -> int:
        return x

    with pytest.raises(InvalidInputError, match="needs a description"):
        Tool(bare)
    with pytest.raises(InvalidInputError, match="holds a str; got int"):
        Tool(bare, "Echo.").description = 5  # type: ignore[assignment]


def test_invoke_takes_the_models_json_and_says_what_does_not_fit() -> None:
    tool = Tool(price)
    assert tool.invoke('{"item": "map", "quantity": 2}') == 30.0
    assert tool.invoke({"item": "map"}) == 15.0
    with pytest.raises(InvalidInputError, match=r"not valid JSON .*'\{item: map\}'"):
        tool.invoke("{item: map}")
    with pytest.raises(InvalidInputError, match=r"a JSON object of named values, got \['map'\]"):
        tool.invoke('["map"]')
    with pytest.raises(InvalidInputError, match=r"^missing argument 'item'; price takes \(item, quantity"):
        tool.invoke("")
    with pytest.raises(KeyError, match="lantern"):  # the function's own errors propagate
        tool.invoke({"item": "lantern"})
