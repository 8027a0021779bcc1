"""Values in a traced graph: :class:`Node`, :class:`Parameter` (and :class:`Demos`), :class:`MessageNode`,
:class:`ExceptionNode`.

A node holds a Python value (``data``), the nodes it was computed from (``parents``), the
:class:`Op` that computed it (``op``), and the feedback it has received (``feedback``). Children
hold their parents and never the reverse, so a graph is freed when its output is dropped.

Python operators on nodes (``a + b``, ``a[0]``, ``a < b``, ``f(x)`` when ``f`` is a node) are
traced: they run one of the :class:`Op` objects below and return a :class:`MessageNode`.
``feedprop.ops`` re-exports these operators and adds the rest of the built-in ops.

Branching on a value is traced too. Inside a forward call (``Module.__call__``), reading a node's
value from user code (``node.data``, ``bool(node)``, ``len(node)``, ``x in node``) makes that node
a control parent of every node made after the read in the same call, and of the call's result
(see :mod:`feedprop.tracing`). ``node.control_parents`` lists them; they are also in ``parents``,
so backward reaches the prompts that chose a branch.

Example:
    >>> from feedprop.node import Parameter
    >>> x = Parameter(3, name="x", description="a number to tune")
    >>> y = x * 2 + 1
    >>> y.data, y.op.name, y.parents[0].parents[0] is x
    (7, 'add', True)
    >>> y.backward("should be 9")
    >>> x.feedback[0].feedback.text
    'should be 9'
"""

from __future__ import annotations

import json
import math
import operator
import reprlib
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from feedprop import propagate
from feedprop.errors import ExecutionError, FeedbackWarning, GraphError, InvalidInputError, SuggestionError
from feedprop.tracing import (
    Control,
    Forward,
    TraceState,
    counter,
    forward_scope,
    next_index,
    note_created,
    note_input,
    note_read,
    scoped,
)
from feedprop.tracing import state as tracing_state

if TYPE_CHECKING:
    from feedprop.propagate import Propagator

__all__ = [
    "KINDS",
    "Demos",
    "ExceptionNode",
    "Feedback",
    "MessageNode",
    "Node",
    "Op",
    "Parameter",
    "as_feedback",
    "bound_text",
    "demos_problem",
    "infer_kind",
    "node",
    "outside_bounds",
    "run_forward",
]

T = TypeVar("T")

#: The kinds of value a :class:`Parameter` can hold.
KINDS = ("text", "code", "number", "json", "demos")

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


@dataclass(frozen=True)
class Feedback:
    """Feedback on an output: a sentence, an optional score, and anything else in ``extras``.

    Example:
        >>> Feedback("Wrong: expected 4", score=0.0).score
        0.0
    """

    text: str
    score: float | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidInputError(f"Feedback.text must be a str, got {type(self.text).__name__}")
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, int | float) or not math.isfinite(self.score):
                raise InvalidInputError(f"Feedback.score must be a finite number or None, got {self.score!r}")
            object.__setattr__(self, "score", float(self.score))
        if not isinstance(self.extras, Mapping):
            raise InvalidInputError(f"Feedback.extras must be a mapping, got {type(self.extras).__name__}")


def as_feedback(value: str | float | Feedback) -> Feedback:
    """Turn what ``backward`` accepts (a string, a number, or a :class:`Feedback`) into a Feedback.

    Example:
        >>> as_feedback(0.5)
        Feedback(text='score: 0.5', score=0.5, extras={})
    """
    if isinstance(value, Feedback):
        return value
    if isinstance(value, str):
        return Feedback(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Feedback(f"score: {value:g}", score=float(value))
    raise InvalidInputError(
        f"feedback must be a str, a number (a score) or a feedprop.Feedback, got {type(value).__name__}; "
        "for example node.backward('Wrong: expected 4') or node.backward(Feedback('Wrong', score=0.0))"
    )


class Op:
    """An operation that makes a :class:`MessageNode`: its identity is this object, never a string.

    Calling an op on nodes and plain values computes ``fn`` on their values and records the
    inputs (by argument name) as the output's parents.

    Example:
        >>> import operator
        >>> double = Op("double", lambda x: 2 * x, ("x",), "two times x")
        >>> out = double(Node(4, name="four"))
        >>> out.data, out.op is double, out.inputs
        (8, True, (('x', Node(name='four', data=4)),))
    """

    __slots__ = ("__weakref__", "_counter", "arg_names", "description", "fn", "name")

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any] | None = None,
        arg_names: tuple[str, ...] = (),
        description: str = "",
    ) -> None:
        self.name = name
        self.fn = fn
        self.arg_names = arg_names
        self.description = description
        self._counter = counter(name)  # numbers this op's outputs: "add:0", "add:1", ...

    def next_name(self, scope: str) -> str:
        """A fresh, process-wide unique name for an output of this op."""
        index = next(self._counter)
        return f"{scope}/{self.name}:{index}" if scope else f"{self.name}:{index}"

    def input_names(self, n_positional: int) -> tuple[str, ...]:
        """Names for ``n_positional`` positional arguments (extras are ``arg2``, ``arg3``, ...)."""
        names = self.arg_names[:n_positional]
        return names + tuple(f"arg{i}" for i in range(len(names), n_positional))

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        fn = self.fn
        if fn is None:
            raise GraphError(f"op {self.name!r} has no function to call; it only labels nodes made elsewhere")
        # The hot path of tracing: one context read, no property calls, no intermediate objects.
        current = tracing_state()
        reads = current.reads
        names = self.arg_names if len(args) == len(self.arg_names) else self.input_names(len(args))
        values = []
        for a in args:
            if isinstance(a, Node):
                if reads is not None:
                    reads.read(a)
                values.append(a._data)
            else:
                values.append(a)
        inputs = tuple(zip(names, args, strict=True))
        kw = {}
        if kwargs:
            inputs += tuple(kwargs.items())
            for k, v in kwargs.items():
                if isinstance(v, Node):
                    if reads is not None:
                        reads.read(v)
                    kw[k] = v._data
                else:
                    kw[k] = v
        try:
            result = fn(*values, **kw)
        except Exception as e:
            node = ExceptionNode(e, op=self, inputs=inputs, traceback=f"{type(e).__name__}: {e}")
            raise ExecutionError(node, f"{self.name} raised {type(e).__name__}: {e}") from e
        return _message(result, self, inputs, current)

    def __repr__(self) -> str:
        return f"Op({self.name!r})"


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for any float
        return False


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        reason = str(e)
        if "Circular reference" in reason or isinstance(e, RecursionError):
            reason = "it contains itself (a circular reference), or is nested too deeply"
        raise InvalidInputError(
            f"{what} must be JSON-serialisable (str, number, bool, None, list, dict with str keys): {reason}"
        ) from None
    bad = _non_str_keys(value)
    if bad:
        raise InvalidInputError(
            f"{what} must be JSON data, whose objects have string keys; got the key {bad[0]!r}. "
            "Use string keys (saving would silently turn it into a string)"
        )


def _non_str_keys(value: Any) -> list[Any]:
    """The first dict key in ``value`` that is not a str, as a one-item list (``value`` is known to be acyclic)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return [key]
                stack.append(inner)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return []


class Node(Generic[T]):
    """A value in a traced graph.

    ``data`` is the value (reading it inside a bundled function is recorded); ``parents`` the
    nodes it was computed from; ``op`` the :class:`Op` that made it (``None`` for leaves);
    ``feedback`` what backward calls delivered to it.

    Operators are traced (``+ - * / // % **``, comparisons including ``==``, ``[]``, calling a
    node that holds a function) and return new nodes; hashing is by identity. Conversions Python
    needs as plain values return them: ``bool(node)`` is ``bool(node.data)``, ``len``, ``in``;
    inside a forward call each such read makes the node a control parent of what is made after it.
    Iterating a list/tuple node yields traced items, a dict node traced keys.

    Example:
        >>> q = Node("What is 2+2?", name="question")
        >>> q.name, q.parents, q.op
        ('question', (), None)
    """

    __slots__ = ("__weakref__", "_data", "description", "feedback", "name", "op", "parents")

    #: Whether backward delivers feedback to this node (only trainable parameters say yes).
    trainable: bool = False

    #: Where in a forward call this node was made (``None`` for leaves and nodes made outside one).
    _control: Control | None = None

    def __init__(self, value: T, *, name: str | None = None, description: str = "") -> None:
        self._data = value
        self.name = name if name is not None else scoped(f"node:{next_index('node')}")
        self.description = description
        self.parents: tuple[Node[Any], ...] = ()
        self.op: Op | None = None
        self.feedback: list[Any] = []
        note_created(self)  # so a bundle does not count reading a node it made itself as hidden

    @property
    def data(self) -> T:
        """The value. Reading it inside a bundled function records the read; inside a forward call,
        the node becomes a control parent of every node made after the read."""
        note_read(self)
        return self._data

    @data.setter
    def data(self, value: T) -> None:
        raise GraphError(
            f"{self.name!r} is a computed value and cannot be assigned; only a Parameter's data can be set"
        )

    @property
    def control_parents(self) -> tuple[Node[Any], ...]:
        """The values user code read in the forward call before this node was made (also in ``parents``).

        Example:
            >>> from feedprop.module import Module
            >>> class Gate(Module):
            ...     def forward(self, x):
            ...         return x + 1 if x.data > 0 else x - 1
            >>> x = Node(2, name="x")
            >>> out = Gate()(x)
            >>> out.data, out.control_parents == (x,)
            (3, True)
        """
        control = self._control
        return control.parents if control is not None else ()

    def backward(
        self,
        feedback: str | float | Feedback,
        propagator: Propagator | None = None,
        *,
        retain_feedback: bool = False,
    ) -> None:
        """Send ``feedback`` (a string, a score, or a :class:`Feedback`) back to every trainable parameter.

        Each parameter reached appends one entry to its ``feedback``; entries accumulate over calls
        until :meth:`zero_feedback`. ``propagator`` defaults to minimal-subgraph propagation.
        """
        propagate.backward(self, as_feedback(feedback), propagator, retain_feedback=retain_feedback)
        control = self._control
        if control is not None and control.forward is not None:
            _warn_unreached(self, control.forward)

    def zero_feedback(self) -> None:
        """Forget the feedback this node has received."""
        self.feedback.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, data={_short.repr(self._data)})"

    # -- traced operators --------------------------------------------------------------------
    # ``==`` is traced like torch's, so the hash stays identity-based; use ``is`` for identity.
    __hash__ = object.__hash__

    def __add__(self, other: Any) -> MessageNode[Any]:
        return ADD(self, other)

    def __radd__(self, other: Any) -> MessageNode[Any]:
        return ADD(other, self)

    def __sub__(self, other: Any) -> MessageNode[Any]:
        return SUB(self, other)

    def __rsub__(self, other: Any) -> MessageNode[Any]:
        return SUB(other, self)

    def __mul__(self, other: Any) -> MessageNode[Any]:
        return MUL(self, other)

    def __rmul__(self, other: Any) -> MessageNode[Any]:
        return MUL(other, self)

    def __truediv__(self, other: Any) -> MessageNode[Any]:
        return TRUEDIV(self, other)

    def __rtruediv__(self, other: Any) -> MessageNode[Any]:
        return TRUEDIV(other, self)

    def __floordiv__(self, other: Any) -> MessageNode[Any]:
        return FLOORDIV(self, other)

    def __rfloordiv__(self, other: Any) -> MessageNode[Any]:
        return FLOORDIV(other, self)

    def __mod__(self, other: Any) -> MessageNode[Any]:
        return MOD(self, other)

    def __rmod__(self, other: Any) -> MessageNode[Any]:
        return MOD(other, self)

    def __pow__(self, other: Any) -> MessageNode[Any]:
        return POW(self, other)

    def __rpow__(self, other: Any) -> MessageNode[Any]:
        return POW(other, self)

    def __neg__(self) -> MessageNode[Any]:
        return NEG(self)

    def __pos__(self) -> MessageNode[Any]:
        return POS(self)

    def __abs__(self) -> MessageNode[Any]:
        return ABS(self)

    def __lt__(self, other: Any) -> MessageNode[Any]:
        return LT(self, other)

    def __le__(self, other: Any) -> MessageNode[Any]:
        return LE(self, other)

    def __gt__(self, other: Any) -> MessageNode[Any]:
        return GT(self, other)

    def __ge__(self, other: Any) -> MessageNode[Any]:
        return GE(self, other)

    def __eq__(self, other: object) -> MessageNode[Any]:  # type: ignore[override]
        return EQ(self, other)

    def __ne__(self, other: object) -> MessageNode[Any]:  # type: ignore[override]
        return NE(self, other)

    def __getitem__(self, key: Any) -> MessageNode[Any]:
        return GETITEM(self, key)

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        if not callable(self._data):
            raise InvalidInputError(f"{self.name!r} holds a {type(self._data).__name__}, which is not callable")
        return CALL(self, *args, **kwargs)

    # -- untraced conversions: Python needs plain values back from these ------------------------

    def __bool__(self) -> bool:
        return bool(self.data)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __contains__(self, item: Any) -> bool:
        value = item.data if isinstance(item, Node) else item
        return value in self.data  # type: ignore[operator]

    def __iter__(self) -> Iterator[MessageNode[Any]]:
        """Iterate a list or tuple as traced items, a dict as traced keys; anything else is an error."""
        note_input(self)  # the items are traced, so iterating is not a control read
        value = self._data
        if isinstance(value, list | tuple):
            return (GETITEM(self, i) for i in range(len(value)))
        if isinstance(value, dict):
            keys = KEYS(self)
            return (GETITEM(keys, i) for i in range(len(value)))
        raise InvalidInputError(
            f"cannot iterate {self.name!r}: it holds a {type(value).__name__}; traced iteration works on "
            "lists, tuples and dicts (use ops.split for text, or iterate node.data untraced)"
        )


class Parameter(Node[T]):
    """A trainable leaf: a prompt, a piece of code, a number, or a JSON value an optimizer may rewrite.

    ``kind`` is ``"text"``, ``"code"``, ``"number"``, ``"json"`` or ``"demos"`` (inferred from the
    value when ``None``: str → text, int/float → number, anything else JSON-serialisable → json;
    demonstrations are declared with :class:`Demos`).
    ``constraint`` is a sentence the optimizer is shown; ``bounds=(lo, hi)`` limits a number.
    Assigning ``param.data = v`` (or ``param.set(v)``) checks the type still fits the kind.

    Example:
        >>> p = Parameter("Answer the question.", name="instruction", description="the system prompt")
        >>> p.kind, p.trainable
        ('text', True)
        >>> p.data = "Answer briefly."
        >>> p.data
        'Answer briefly.'
    """

    __slots__ = ("_user_named", "bounds", "constraint", "kind", "trainable")

    def __init__(
        self,
        value: T,
        *,
        name: str | None = None,
        description: str = "",
        constraint: str | None = None,
        kind: str | None = None,
        bounds: tuple[float, float] | None = None,
        trainable: bool = True,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidInputError(f"Parameter name must be a non-empty str, got {name!r}")
        super().__init__(value, name=name if name is not None else f"param:{next_index('param')}")
        self._user_named = name is not None
        if not isinstance(description, str):
            raise InvalidInputError(f"Parameter description must be a str, got {type(description).__name__}")
        if constraint is not None and not (isinstance(constraint, str) or callable(constraint)):
            raise InvalidInputError(
                f"Parameter constraint must be a sentence (str) or a callable check, got {type(constraint).__name__}"
            )
        if not isinstance(trainable, bool):
            raise InvalidInputError(
                f"Parameter trainable must be True or False, got {trainable!r}; pass trainable=False to freeze it"
            )
        self.description = description
        self.constraint = constraint
        self.trainable = trainable
        self.kind = infer_kind(value) if kind is None else kind
        if self.kind not in KINDS:
            raise InvalidInputError(f"Parameter kind must be one of {KINDS}, got {kind!r}")
        self.bounds: tuple[float, float] | None = None
        if bounds is not None:
            if self.kind != "number":
                raise InvalidInputError(f"bounds apply only to number parameters; {self.name!r} is {self.kind}")
            if not isinstance(bounds, tuple | list) or len(bounds) != 2:
                raise InvalidInputError(f"bounds must be a pair (lo, hi), got {bounds!r}")
            lo, hi = bounds
            if not all(isinstance(b, int | float) and not isinstance(b, bool) and not math.isnan(b) for b in bounds):
                raise InvalidInputError(f"bounds must be two numbers (lo, hi), got {bounds!r}")
            if not lo <= hi:
                raise InvalidInputError(f"bounds must be (lo, hi) with lo <= hi, got {bounds!r}")
            self.bounds = (lo, hi)
        _check_value(self, value, initial=True)

    @property
    def data(self) -> T:
        note_read(self)
        return self._data

    @data.setter
    def data(self, value: T) -> None:
        self.set(value)

    def set(self, value: T) -> None:
        """Replace the value; raises if it does not fit this parameter's kind (or bounds)."""
        self._data = _check_value(self, value, initial=False)

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, kind={self.kind!r}, data={_short.repr(self._data)})"


def infer_kind(value: Any) -> str:
    """The kind of a :class:`Parameter` holding ``value`` when none is given: str → text, int/float → number,
    anything else → json (``code`` and ``demos`` are always declared).

    Example:
        >>> [infer_kind(v) for v in ("a", 1, 2.5, True, [1], None)]
        ['text', 'number', 'number', 'json', 'json', 'json']
    """
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return "json"


def bound_text(bound: float | None, infinite: str) -> str:
    """A bound as messages show it: ``infinite`` for an open end, whole numbers without a point.

    Example:
        >>> bound_text(10.0, "inf"), bound_text(0.25, "inf"), bound_text(None, "-inf")
        ('10', '0.25', '-inf')
    """
    if bound is None:
        return infinite
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else repr(bound)


def outside_bounds(value: float, bounds: tuple[float | None, float | None] | None) -> str | None:
    """Why ``value`` breaks ``bounds`` (``(lo, hi)``, ``None`` for an open end), or ``None`` if it fits.

    The one bounds rule: :class:`Parameter` and the checks of an optimizer's suggestions both use it.

    Example:
        >>> outside_bounds(11, (0, 10)), outside_bounds(5, (0, 10)), outside_bounds(-1.5, (0, None))
        ('11 is outside the bounds [0, 10]', None, '-1.5 is outside the bounds [0, inf]')
    """
    if bounds is None:
        return None
    lo, hi = bounds
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return None
    return f"{bound_text(value, 'nan')} is outside the bounds [{bound_text(lo, '-inf')}, {bound_text(hi, 'inf')}]"


def _check_value(param: Parameter[Any], value: Any, *, initial: bool) -> Any:
    """``value`` as the parameter will store it, or a typed error saying why it does not fit."""
    where = f"parameter {param.name!r} ({param.kind})"
    _check_encodable(value, where)
    if param.kind in ("text", "code"):
        if not isinstance(value, str):
            raise InvalidInputError(f"{where} holds a str; got {type(value).__name__}")
        return value
    if param.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            raise InvalidInputError(f"{where} holds a finite int or float; got {_short.repr(value)}")
        if not initial and isinstance(param._data, int) and not isinstance(value, int):
            # An integer parameter stays an integer: 3.0 is taken as 3, 3.5 is refused.
            if not float(value).is_integer():
                raise SuggestionError(f"{where} holds an integer; got {value!r}", param.name, value)
            value = int(value)
        if param.bounds is not None and outside_bounds(value, param.bounds):
            lo, hi = param.bounds
            if initial:
                raise InvalidInputError(
                    f"{where} starts at {value!r}, outside its bounds [{lo}, {hi}]; "
                    "give an initial value within the bounds, or widen them"
                )
            raise SuggestionError(f"{where} must lie within [{lo}, {hi}]; got {value!r}", param.name, value)
        return value
    if param.kind == "demos":
        problem = demos_problem(value, getattr(param, "max_demos", None))
        if problem:
            raise InvalidInputError(f"{where}: {problem}")
        return [{"input": d["input"], "output": d["output"]} for d in value]
    _check_json(value, where)
    if not initial:
        for shape in (dict, list):
            if isinstance(param._data, shape) and not isinstance(value, shape):
                raise InvalidInputError(f"{where} holds a {shape.__name__}; got {type(value).__name__}")
    return value


def _check_encodable(value: Any, where: str) -> None:
    """Refuse text that UTF-8 cannot write (a lone surrogate), anywhere in ``value``: saving it would fail."""
    stack = [value]
    seen: set[int] = set()  # a value that contains itself is refused later, as not JSON data
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidInputError(
                    f"{where} holds {item[e.start]!r} at position {e.start} of a text, a lone surrogate, which is "
                    "not a character and cannot be saved; remove it, or clean the text with "
                    "text.encode('utf-8', 'replace').decode('utf-8') (lone surrogates come from bytes decoded with "
                    "errors='surrogateescape' or a JSON '\\ud800' escape)"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def demos_problem(value: Any, max_demos: int | None = None) -> str | None:
    """Why ``value`` is not a list of demonstrations ``{"input": str, "output": str}``, or ``None``.

    Example:
        >>> demos_problem([{"input": "2+2?", "output": "4"}]) is None
        True
        >>> demos_problem([{"input": "2+2?", "output": 4}])
        "demonstration 0's 'output' must be a str, got int"
    """
    if not isinstance(value, list | tuple):
        return f'demonstrations are a list of {{"input": str, "output": str}}, got {type(value).__name__}'
    for i, demo in enumerate(value):
        if not isinstance(demo, Mapping):
            return f'demonstration {i} must be a dict {{"input": str, "output": str}}, got {type(demo).__name__}'
        if set(demo) != {"input", "output"}:
            keys = sorted(map(str, demo))
            return f"demonstration {i} must have exactly the keys 'input' and 'output' (both str), got {keys}"
        for key in ("input", "output"):
            if not isinstance(demo[key], str):
                return f"demonstration {i}'s {key!r} must be a str, got {type(demo[key]).__name__}"
    if max_demos is not None and len(value) > max_demos:
        return f"holds at most {max_demos} demonstrations (max_demos), got {len(value)}; keep the best {max_demos}"
    return None


class Demos(Parameter[list[dict[str, str]]]):
    """Trainable demonstrations for an LLM call: a list of ``{"input": str, "output": str}``.

    Pass it to :func:`feedprop.ops.llm_call` as ``demos=``: each demonstration is shown to the model
    as a user turn (``input``) and its assistant reply (``output``) before the question. The
    parameter is the call site's identity across runs, so an optimizer such as
    :class:`feedprop.optim.BootstrapDemos` can fill it from the call's well-scored runs.
    ``max_demos`` caps how many it holds. Saved and loaded as JSON like any parameter.

    Example:
        >>> demos = Demos([{"input": "2+2?", "output": "4"}], name="shots", max_demos=2)
        >>> demos.kind, len(demos.data), demos.max_demos
        ('demos', 1, 2)
        >>> demos.data = [{"input": "3+3?", "output": "6"}, {"input": "1+1?", "output": "2"}]
        >>> demos.data = [{"input": "x"}]  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        feedprop.errors.InvalidInputError: parameter 'shots' (demos): demonstration 0 must have exactly the keys ...
    """

    __slots__ = ("max_demos",)

    def __init__(
        self,
        value: list[dict[str, str]] | None = None,
        *,
        name: str | None = None,
        description: str = "",
        max_demos: int = 4,
    ) -> None:
        if isinstance(max_demos, bool) or not isinstance(max_demos, int) or max_demos < 1:
            raise InvalidInputError(f"max_demos must be an int >= 1, got {max_demos!r}")
        self.max_demos = max_demos
        value = [] if value is None else value
        super().__init__(value, name=name, description=description, kind="demos")
        self._data = _check_value(self, value, initial=True)  # stored as plain dicts, copied

    def __repr__(self) -> str:
        return f"Demos(name={self.name!r}, demos={len(self._data)}, max_demos={self.max_demos})"


class MessageNode(Node[T]):
    """The output of an op. ``inputs`` are ``(argument name, node or plain value)`` pairs.

    ``info`` holds what the op wants remembered (an LLM call's prompts, response and usage;
    hidden dependencies a bundle recorded). Under ``no_trace()`` the node has no parents.
    Made inside a forward call, its parents end with its :attr:`~Node.control_parents`.

    Example:
        >>> a = Node(2, name="a")
        >>> out = a + 3
        >>> out.inputs, out.parents == (a,)
        ((('lhs', Node(name='a', data=2)), ('rhs', 3)), True)
    """

    __slots__ = ("_control", "info", "inputs")

    def __init__(
        self,
        value: T,
        *,
        op: Op,
        inputs: tuple[tuple[str, Any], ...] = (),
        info: dict[str, Any] | None = None,
        extra_parents: tuple[Node[Any], ...] = (),
        name: str | None = None,
    ) -> None:
        current = tracing_state()
        super().__init__(value, name=name if name is not None else op.next_name(current.scope))
        self.op = op
        self.description = op.description
        self.info = info
        if current.tracing:
            self.inputs = inputs
            self.parents = _unique_nodes(inputs, extra_parents)
            forward = current.forward
            self._control = None if forward is None else _made_in(self, forward)
        else:
            self.inputs = ()
            self._control = None


def _message(value: Any, op: Op, inputs: tuple[tuple[str, Any], ...], current: TraceState) -> MessageNode[Any]:
    """``MessageNode(value, op=op, inputs=inputs)`` without the generic constructor's overhead."""
    node: MessageNode[Any] = MessageNode.__new__(MessageNode)
    node._data = value
    node.name = op.next_name(current.scope)
    node.description = op.description
    node.feedback = []
    node.op = op
    node.info = None
    if current.tracing:
        node.inputs = inputs
        node.parents = _unique_nodes(inputs, ())
        forward = current.forward
        node._control = None if forward is None else _made_in(node, forward)
    else:
        node.inputs = ()
        node.parents = ()
        node._control = None
    if current.reads is not None:
        current.reads.created(node)
    return node


def _made_in(node: MessageNode[Any], forward: Forward) -> Control:
    """Record ``node`` as made in ``forward``: the values read so far become control parents."""
    forward.use(node.parents)
    control = forward.control
    if control.parents:
        node.parents = _unique_nodes((), node.parents + control.parents)
    return control


def run_forward(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``forward(*args, **kwargs)`` as one traced forward call (what ``Module.__call__`` does).

    Values user code reads inside become control parents of what is made after the read. When
    the result is a node made before the last read (``if ok.data: return answer``), it comes
    back through the :data:`RETURN` op, whose control parents are every value read, so feedback
    on the result reaches the prompts that chose it. Backward on the result of the outermost
    call, when the call made it, warns (:class:`~feedprop.errors.FeedbackWarning`, once per call)
    about trainable parameters the call used (gave to an op, or read) that received no feedback.

    Example:
        >>> answer, ok = Node("Paris", name="answer"), Node("yes", name="ok")
        >>> def pick():
        ...     return answer if ok.data == "yes" else None
        >>> out = run_forward(pick)
        >>> out.op is RETURN, out.parents == (answer, ok), out.control_parents == (ok,)
        (True, True, True)
    """
    with forward_scope() as (call, outermost):
        result = forward(*args, **kwargs)
        if isinstance(result, Node):
            control = call.control
            if control.parents and result._control is not control:
                result = RETURN(result)
            if outermost:
                call.result = weakref.ref(result)
    return result


def _warn_unreached(output: Node[Any], forward: Forward) -> None:
    """Warn once per forward call when backward on its result missed a parameter the call used."""
    if forward.warned or forward.result is None or forward.result() is not output:
        return
    missed = [
        p
        for p in forward.used.values()
        if p.trainable and not (p.feedback and getattr(p.feedback[-1], "output", None) is output)
    ]
    if missed:
        forward.warned = True
        names = ", ".join(repr(p.name) for p in missed)
        warnings.warn(
            FeedbackWarning(
                f"backward on {output.name!r} gave no feedback to {names}, which the forward call used: a value "
                "computed from them was read where it could not be recorded (in a thread that did not inherit "
                "the forward's context, under no_trace(), or after the forward returned), or what they computed "
                "was dropped. Read values in the forward itself, or return every node the result depends on"
            ),
            stacklevel=3,
        )


def _unique_nodes(inputs: tuple[tuple[str, Any], ...], extra: tuple[Node[Any], ...]) -> tuple[Node[Any], ...]:
    """The nodes among the inputs' values and ``extra``, each once, in order."""
    nodes = [v for _, v in inputs if isinstance(v, Node)]
    if extra:
        nodes.extend(extra)
    if len(nodes) < 2 or (len(nodes) == 2 and nodes[0] is not nodes[1]):
        return tuple(nodes)
    seen: set[int] = set()
    out: list[Node[Any]] = []
    for v in nodes:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return tuple(out)


class ExceptionNode(MessageNode[BaseException]):
    """An exception raised inside an op; ``data`` is the exception.

    ``traceback`` is the traceback text, mapped onto the lines of the trainable code when the
    failing code is a code :class:`Parameter` (``code``), and ``lineno`` the failing line there.
    Backward works like any node's, so the error can become feedback for what caused it.

    Example:
        >>> from feedprop.errors import ExecutionError
        >>> x = Parameter(0, name="x")
        >>> try:
        ...     1 / x
        ... except ExecutionError as e:
        ...     e.node.backward("x must not be zero")
        >>> x.feedback[0].feedback.text
        'x must not be zero'
    """

    __slots__ = ("code", "lineno", "traceback")

    def __init__(
        self,
        exception: BaseException,
        *,
        op: Op,
        inputs: tuple[tuple[str, Any], ...] = (),
        traceback: str = "",
        lineno: int | None = None,
        code: Parameter[str] | None = None,
        info: dict[str, Any] | None = None,
        extra_parents: tuple[Node[Any], ...] = (),
    ) -> None:
        extra = extra_parents if code is None or any(code is p for p in extra_parents) else (*extra_parents, code)
        super().__init__(
            exception,
            op=op,
            inputs=inputs,
            info=info,
            extra_parents=extra,
            name=scoped(f"exception:{next_index('exception')}"),
        )
        self.traceback = traceback
        self.lineno = lineno
        self.code = code

    @property
    def message(self) -> str:
        """``"TypeName: message"`` of the exception."""
        return f"{type(self._data).__name__}: {self._data}"


# -- the ops behind Python's operators (feedprop.ops re-exports them with the other built-ins) ----


def _binary(name: str, fn: Callable[[Any, Any], Any], symbol: str) -> Op:
    return Op(name, fn, ("lhs", "rhs"), f"[{name}] lhs {symbol} rhs")


def _unary(name: str, fn: Callable[[Any], Any], symbol: str) -> Op:
    return Op(name, fn, ("x",), f"[{name}] {symbol}")


ADD = _binary("add", operator.add, "+")
SUB = _binary("sub", operator.sub, "-")
MUL = _binary("mul", operator.mul, "*")
TRUEDIV = _binary("truediv", operator.truediv, "/")
FLOORDIV = _binary("floordiv", operator.floordiv, "//")
MOD = _binary("mod", operator.mod, "%")
POW = _binary("pow", operator.pow, "**")
LT = _binary("lt", operator.lt, "<")
LE = _binary("le", operator.le, "<=")
GT = _binary("gt", operator.gt, ">")
GE = _binary("ge", operator.ge, ">=")
EQ = _binary("eq", operator.eq, "==")
NE = _binary("ne", operator.ne, "!=")
NEG = _unary("neg", operator.neg, "-x")
POS = _unary("pos", operator.pos, "+x")
ABS = _unary("abs", abs, "abs(x)")
GETITEM = Op("getitem", operator.getitem, ("obj", "key"), "[getitem] obj[key]")
KEYS = Op("keys", lambda d: list(d.keys()), ("obj",), "[keys] list(obj.keys())")
CALL = Op("call", lambda fn, *a, **k: fn(*a, **k), ("fn",), "[call] fn(*args, **kwargs)")
RETURN = Op("return", lambda value: value, ("value",), "[return] what a forward returned, after the values it read")


# -- node(): Trace's way of making a node ------------------------------------------------------------


def node(
    value: Any,
    name: str | None = None,
    trainable: bool = False,
    description: str = "",
    *,
    constraint: str | None = None,
    kind: str | None = None,
    bounds: tuple[float, float] | None = None,
) -> Node[Any]:
    """A node holding ``value``: a :class:`Parameter` when ``trainable``, else a plain :class:`Node`.

    The function Trace users know as ``node()``. ``fp.node`` is this module, made callable: calling
    it calls this function, while ``import feedprop.node`` and ``from feedprop.node import Node``
    work as for any module (type checkers see the module; ``from feedprop.node import node`` gives
    them the function). A node given as ``value`` comes back unchanged. ``constraint``, ``kind``
    and ``bounds`` describe what an optimizer may write, so they need ``trainable=True``.

    Example:
        >>> import feedprop as fp
        >>> x = fp.node(3, name="x")
        >>> type(x).__name__, x.data, x.trainable
        ('Node', 3, False)
        >>> p = fp.node("Answer briefly.", name="instruction", trainable=True)
        >>> type(p).__name__, p.kind, fp.node(p) is p
        ('Parameter', 'text', True)
    """
    if not isinstance(trainable, bool):
        raise InvalidInputError(f"node's trainable must be True or False, got {trainable!r}")
    if isinstance(value, Node):
        asked = (name, description or None, constraint, kind, bounds)
        if any(option is not None for option in asked) or (trainable and not value.trainable):
            raise InvalidInputError(
                f"node() was given the node {value.name!r}, which it returns unchanged; to make a new node with "
                "other settings, pass its value: node(x.data, ...)"
            )
        return value
    if trainable:
        return Parameter(
            value, name=name, description=description, constraint=constraint, kind=kind, bounds=bounds, trainable=True
        )
    if constraint is not None or kind is not None or bounds is not None:
        raise InvalidInputError(
            "constraint, kind and bounds describe what an optimizer may write; pass trainable=True "
            "(or fp.Parameter(..., trainable=False) for a parameter that stays fixed)"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError(f"node name must be a non-empty str, got {name!r}")
    if not isinstance(description, str):
        raise InvalidInputError(f"node description must be a str, got {type(description).__name__}")
    return Node(value, name=name, description=description)


class _CallableModule(types.ModuleType):
    """The type of this module: calling the module calls :func:`node`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Node[Any]:
        return node(*args, **kwargs)


# ``fp.node`` must be this module (``import feedprop.node as n`` reads the package attribute) and
# Trace's ``node()`` at once; a module whose type is callable is both.
sys.modules[__name__].__class__ = _CallableModule
