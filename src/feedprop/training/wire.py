"""Workflows and outcomes as JSON data, for running items in other processes.

A workflow travels as its class import path plus its JSON ``state_dict`` (:func:`workflow_spec`,
:func:`build_workflow`); never as a pickled object. What comes back from one item is an
:class:`~feedprop.training.evaluation.Outcome` as data (:func:`encode_outcome`): the guide's
feedback, and the graph of the output — every node with its op, parents and inputs, and the
values that the minimal subgraphs of the trainable parameters contain.

:class:`Rebuilder` turns that data back into nodes in the receiving process. Parameters of the
workflow (and other nodes the workflow holds as attributes) become the receiving model's own
objects, found by their dotted names; ops become one :class:`~feedprop.node.Op` per distinct
(name, description, function); everything else becomes fresh nodes. ``backward`` on a rebuilt
output therefore delivers the same feedback, with the same subgraphs, to the same parameters as
it would have on the original graph, and an optimizer renders the same problem from it.

Values that are not JSON (custom objects, sets, bytes) travel as their ``repr``
(:class:`Opaque`), which is what the problem report shows of them anyway; exceptions raised
inside ops come back as instances of a stand-in class with the original's name, message and
repr. Values of nodes outside every minimal subgraph are not sent at all (:data:`NOT_SENT`).

Example:
    >>> from feedprop.node import Node, Parameter
    >>> from feedprop.module import Module
    >>> class Twice(Module):
    ...     def __init__(self):
    ...         self.k = Parameter(2, name="k")
    ...     def forward(self, x):
    ...         return x * self.k
    >>> here, there = Twice(), Twice()
    >>> out = there(Node(21, name="x"))
    >>> data = encode_graph(out, there)
    >>> copy = Rebuilder(here).graph(data)
    >>> copy.data, copy.parents[1] is here.k
    (42, True)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from feedprop.bundle import CODE_ATTRIBUTE
from feedprop.errors import ConfigurationError, ExecutionError, InvalidInputError
from feedprop.llm.spec import import_object
from feedprop.module import Module
from feedprop.node import ExceptionNode, Feedback, MessageNode, Node, Op, Parameter
from feedprop.ops import LLM_CALL
from feedprop.propagate import minimal_subgraph, toposort
from feedprop.tracing import Control
from feedprop.training.evaluation import Outcome

__all__ = [
    "NOT_SENT",
    "Opaque",
    "Rebuilder",
    "RemoteException",
    "build_workflow",
    "decode_value",
    "encode_graph",
    "encode_outcome",
    "encode_value",
    "workflow_spec",
]


class Opaque:
    """A value that is not JSON, as it travelled: its ``repr`` (and type name).

    Example:
        >>> Opaque("{1, 2}", "set")
        {1, 2}
    """

    __slots__ = ("text", "type_name")

    def __init__(self, text: str, type_name: str) -> None:
        self.text = text
        self.type_name = type_name

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and (other.text, other.type_name) == (self.text, self.type_name)

    def __hash__(self) -> int:
        return hash((self.text, self.type_name))


#: The value of a node whose value was not needed by the receiver (outside every minimal subgraph).
NOT_SENT = Opaque("<value not sent>", "not sent")


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the whole outcome
        return f"<{type(value).__qualname__} object>"


def encode_value(value: Any) -> dict[str, Any]:
    """``{"j": value}`` for JSON values, ``{"r": repr, "t": type}`` for the rest.

    Example:
        >>> encode_value([1, "a"]), encode_value({1, 2})
        ({'j': [1, 'a']}, {'r': '{1, 2}', 't': 'set'})
    """
    if value is None or isinstance(value, str | bool | int | float):
        return {"j": value}
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return {"r": _repr(value), "t": type(value).__qualname__}
    return {"j": value}


def decode_value(data: Mapping[str, Any]) -> Any:
    """The value :func:`encode_value` encoded (an :class:`Opaque` for non-JSON values).

    Example:
        >>> decode_value({"j": [1, 2]}), decode_value({"r": "{1, 2}", "t": "set"})
        ([1, 2], {1, 2})
    """
    if "j" in data:
        return data["j"]
    if "r" in data:
        return Opaque(str(data["r"]), str(data.get("t", "")))
    return NOT_SENT


# -- workflows ---------------------------------------------------------------------------------


def workflow_spec(model: Module, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``model`` as data: its class import path, JSON ``state_dict``, training mode and constructor kwargs.

    The class must be importable by that path in the process that rebuilds it (not defined in
    ``__main__`` or inside a function), and constructible as ``cls(**kwargs)``.

    Example:
        >>> workflow_spec(Module())
        {'class': 'feedprop.module:Module', 'state': {}, 'training': True, 'kwargs': {}}
    """
    if not isinstance(model, Module):
        raise InvalidInputError(
            f"only a feedprop.Module can run in other processes (it travels as class + state_dict), "
            f"got {type(model).__name__}; run a plain callable with the local executor"
        )
    cls = type(model)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        where = "a function" if "<locals>" in path else "__main__"
        raise ConfigurationError(
            f"the workflow class {cls.__qualname__} is defined in {where}, so other processes cannot import it; "
            "move it to a module (a .py file importable on every worker)"
        )
    try:
        found = import_object(path, "workflow class")
    except ConfigurationError:
        found = None
    if found is not cls:
        raise ConfigurationError(
            f"the workflow class cannot be imported back as {path!r}; define it at the top level of a module"
        )
    init = dict(kwargs or {})
    state = model.state_dict()
    try:
        json.dumps([state, init], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the workflow's state_dict and kwargs must be JSON to travel: {exc}") from None
    return {"class": path, "state": state, "training": bool(model.training), "kwargs": init}


def build_workflow(spec: Mapping[str, Any], cache: dict[str, Module] | None = None) -> Module:
    """The workflow ``spec`` describes: the class built with its kwargs, the state loaded, the mode set.

    With ``cache`` (a dict the caller keeps), one instance per class and kwargs is built and
    reused: only its state and mode are set again.
    """
    key = json.dumps([spec["class"], spec.get("kwargs", {})], sort_keys=True)
    model = cache.get(key) if cache is not None else None
    if model is None:
        cls = import_object(spec["class"], "workflow class")
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise ConfigurationError(f"{spec['class']!r} is not a feedprop.Module subclass")
        model = cls(**spec.get("kwargs", {}))
        if cache is not None:
            cache[key] = model
    model.load_state_dict(spec["state"])
    model.train(bool(spec.get("training", True)))
    return model


def model_nodes(model: Module) -> Iterator[tuple[str, Node[Any]]]:
    """``(dotted name, node)`` for every node the model holds: its parameters, then other nodes in attributes."""
    yield from model.named_parameters()
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if name in (CODE_ATTRIBUTE, "training"):
                continue
            path = f"{prefix}.{name}" if prefix else name
            yield from _nodes_in(value, path, seen)


def _nodes_in(value: Any, path: str, seen: set[int]) -> Iterator[tuple[str, Node[Any]]]:
    if isinstance(value, Parameter | Module):
        return  # parameters were listed; modules are walked on their own
    if isinstance(value, Node):
        if id(value) not in seen:
            seen.add(id(value))
            yield path, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _nodes_in(item, f"{path}.{i}", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _nodes_in(item, f"{path}.{key}", seen)


# -- encoding (in the process that ran the item) ------------------------------------------------


def _op_key(op: Op) -> list[str]:
    fn = op.fn
    where = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}" if fn is not None else ""
    return [type(op).__qualname__, op.name, op.description, where]


#: A rebuilt llm_call node carries ops.LLM_CALL itself, so ``node.op is LLM_CALL`` finds it as locally.
_LLM_CALL_KEY = json.dumps(_op_key(LLM_CALL))


class _Encoder:
    def __init__(self, model: Module) -> None:
        self.held = {id(node): name for name, node in model_nodes(model)}
        self.index: dict[int, int] = {}
        self.ops: dict[int, int] = {}
        self.op_records: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def ref_or_value(self, value: Any, sent: bool) -> dict[str, Any]:
        if isinstance(value, Node):
            return {"n": self.node_index(value, sent=False)}
        return encode_value(value) if sent else {}

    def node_index(self, node: Node[Any], sent: bool) -> int:
        found = self.index.get(id(node))
        if found is None:  # a node referenced from an info dict only: add it as a leaf
            found = self.add(node, sent, parents=False)
        return found

    def op_index(self, op: Op) -> int:
        found = self.ops.get(id(op))
        if found is None:
            found = len(self.op_records)
            self.ops[id(op)] = found
            self.op_records.append({"key": _op_key(op), "args": list(op.arg_names)})
        return found

    def add(self, node: Node[Any], sent: bool, parents: bool = True) -> int:
        held = self.held.get(id(node))
        record: dict[str, Any]
        if held is not None:
            record = {"k": "held", "path": held}
        elif isinstance(node, MessageNode) and node.op is not None:
            record = {
                "k": "exc" if isinstance(node, ExceptionNode) else "msg",
                "name": node.name,
                "description": node.description,
                "op": self.op_index(node.op),
                "parents": [self.index[id(p)] for p in node.parents] if parents else [],
                "inputs": [[k, self.ref_or_value(v, sent)] for k, v in node.inputs] if parents else [],
            }
            if node.info and parents:
                record["info"] = {k: self.ref_or_value(v, sent) for k, v in node.info.items()}
            if node.control_parents and parents:
                record["control"] = [self.index[id(p)] for p in node.control_parents]
            if isinstance(node, ExceptionNode):
                exc = node._data
                record["exception"] = {
                    "module": type(exc).__module__,
                    "qualname": type(exc).__qualname__,
                    "str": str(exc),
                    "repr": _repr(exc),
                }
                record["traceback"] = node.traceback
                record["lineno"] = node.lineno
                if node.code is not None and parents:
                    record["code"] = self.node_index(node.code, sent=False)
            else:
                record["data"] = encode_value(node._data) if sent else {}
        else:
            record = {"k": "leaf", "name": node.name, "description": node.description}
            record["data"] = encode_value(node._data) if sent else {}
            if isinstance(node, Parameter):
                record["parameter"] = {
                    "kind": node.kind,
                    "constraint": node.constraint,
                    "bounds": list(node.bounds) if node.bounds is not None else None,
                    "trainable": node.trainable,
                }
        self.records.append(record)
        index = len(self.records) - 1
        self.index[id(node)] = index
        return index

    def graph(self, root: Node[Any], with_graph: bool) -> dict[str, Any]:
        if not with_graph:
            self.add(root, sent=True, parents=False)
        else:
            order = toposort(root)
            sent: set[int] = {id(root)}
            for node in order:
                if node.trainable:
                    sent.update(id(n) for n in minimal_subgraph(node, root, order))
            for node in order:
                self.add(node, id(node) in sent)
        return {"nodes": self.records, "ops": self.op_records, "root": self.index[id(root)]}


def encode_graph(root: Node[Any], model: Module, *, with_graph: bool = True) -> dict[str, Any]:
    """The graph of ``root`` as JSON-able data (just ``root`` itself without ``with_graph``).

    Nodes ``model`` holds are sent by their dotted names; values outside every minimal subgraph
    of a trainable parameter are left out.
    """
    return _Encoder(model).graph(root, with_graph)


def encode_feedback(feedback: Feedback) -> dict[str, Any]:
    extras = [[k if isinstance(k, str) else encode_value(k), encode_value(v)] for k, v in feedback.extras.items()]
    return {"text": feedback.text, "score": feedback.score, "extras": extras}


def decode_feedback(data: Mapping[str, Any]) -> Feedback:
    extras = {k if isinstance(k, str) else decode_value(k): decode_value(v) for k, v in data["extras"]}
    return Feedback(data["text"], score=data["score"], extras=extras)


def encode_outcome(outcome: Outcome, model: Module, *, with_graph: bool) -> dict[str, Any]:
    """One item's outcome as JSON-able data: feedback, and the output's graph (or value, or the error's graph)."""
    data: dict[str, Any] = {"index": outcome.index, "feedback": encode_feedback(outcome.feedback)}
    if outcome.error is not None:
        data["error"] = str(outcome.error)
        data["graph"] = encode_graph(outcome.error.node, model, with_graph=with_graph)
    elif isinstance(outcome.output, Node):
        data["graph"] = encode_graph(outcome.output, model, with_graph=with_graph)
    else:
        data["value"] = encode_value(outcome.output)
    return data


# -- decoding (in the process that asked) ------------------------------------------------------


class RemoteException(Exception):
    """Stands in for an exception raised inside an op in another process: same class name, message, repr.

    The stand-in classes are made per original class (:meth:`like`), so ``type(e).__name__``
    reads as the original's.

    Example:
        >>> e = RemoteException.like("builtins", "ZeroDivisionError")("division by zero")
        >>> f"{type(e).__name__}: {e}"
        'ZeroDivisionError: division by zero'
    """

    _classes: dict[tuple[str, str], type[RemoteException]] = {}  # noqa: RUF012 - a registry, not per instance

    remote_repr: str = ""

    def __repr__(self) -> str:
        return self.remote_repr or super().__repr__()

    @classmethod
    def like(cls, module: str, qualname: str) -> type[RemoteException]:
        """The stand-in class for ``module.qualname`` (one per name, made on first use)."""
        found = cls._classes.get((module, qualname))
        if found is None:
            name = qualname.rsplit(".", 1)[-1]
            found = type(name, (cls,), {"__module__": module, "__qualname__": qualname})
            found = cls._classes.setdefault((module, qualname), found)
        return found


class Rebuilder:
    """Rebuilds encoded graphs and outcomes against ``model``: the model's own nodes stand for theirs.

    Keep one per batch (or run) so that ops shared by several items stay one op object.

    Example:
        >>> from feedprop.module import Module
        >>> Rebuilder(Module()).value({"j": 3})
        3
    """

    def __init__(self, model: Module) -> None:
        self.held = dict(model_nodes(model))
        self.ops: dict[str, Op] = {}

    def value(self, data: Mapping[str, Any]) -> Any:
        return decode_value(data)

    def op(self, record: Mapping[str, Any]) -> Op:
        key = json.dumps(record["key"])
        found = self.ops.get(key)
        if found is None and key == _LLM_CALL_KEY:  # the one op whose identity readers test (ops.LLM_CALL)
            found = self.ops[key] = LLM_CALL
        if found is None:
            _kind, name, description, _where = record["key"]
            found = self.ops[key] = Op(name, None, tuple(record["args"]), description)
        return found

    def graph(self, data: Mapping[str, Any]) -> Node[Any]:
        """The root node of an encoded graph, with every node it was computed from."""
        ops = [self.op(r) for r in data["ops"]]
        nodes: list[Node[Any]] = []
        for record in data["nodes"]:
            nodes.append(self._node(record, nodes, ops))
        return nodes[int(data["root"])]

    def _slot(self, data: Mapping[str, Any], nodes: list[Node[Any]]) -> Any:
        return nodes[data["n"]] if "n" in data else decode_value(data)

    def _node(self, record: Mapping[str, Any], nodes: list[Node[Any]], ops: list[Op]) -> Node[Any]:
        kind = record["k"]
        if kind == "held":
            held = self.held.get(record["path"])
            if held is None:
                raise ConfigurationError(
                    f"the workflow on the worker holds a node {record['path']!r} that the local model does not; "
                    "the class must build the same parameters and nodes in every process"
                )
            return held
        if kind == "leaf":
            value = decode_value(record["data"])
            info = record.get("parameter")
            if info is not None and not isinstance(value, Opaque):
                bounds = tuple(info["bounds"]) if info["bounds"] is not None else None
                return Parameter(
                    value,
                    name=record["name"],
                    description=record["description"],
                    constraint=info["constraint"],
                    kind=info["kind"],
                    bounds=bounds,
                    trainable=info["trainable"],
                )
            leaf: Node[Any] = Node.__new__(Node)
            _fill(leaf, record, value)
            leaf.op = None
            leaf.parents = ()
            return leaf
        node: MessageNode[Any]
        if kind == "exc":
            exc = record["exception"]
            error = RemoteException.like(exc["module"], exc["qualname"])(exc["str"])
            error.remote_repr = exc["repr"]
            failed: ExceptionNode = ExceptionNode.__new__(ExceptionNode)
            _fill(failed, record, error)
            failed.traceback = record["traceback"]
            failed.lineno = record["lineno"]
            failed.code = nodes[record["code"]] if "code" in record else None
            node = failed
        else:
            node = MessageNode.__new__(MessageNode)
            _fill(node, record, decode_value(record["data"]))
        node.op = ops[record["op"]]
        node.parents = tuple(nodes[i] for i in record["parents"])
        node._control = Control(tuple(nodes[i] for i in record["control"]), None) if "control" in record else None
        node.inputs = tuple((k, self._slot(v, nodes)) for k, v in record["inputs"])
        info = record.get("info")
        node.info = {k: self._slot(v, nodes) for k, v in info.items()} if info is not None else None
        return node

    def outcome(self, data: Mapping[str, Any]) -> Outcome:
        """The :class:`~feedprop.training.evaluation.Outcome` :func:`encode_outcome` encoded."""
        feedback = decode_feedback(data["feedback"])
        if "value" in data:
            return Outcome(data["index"], decode_value(data["value"]), feedback)
        root = self.graph(data["graph"])
        if "error" in data:
            if not isinstance(root, ExceptionNode):
                raise ConfigurationError("an encoded error outcome must have an exception node at its root")
            return Outcome(data["index"], None, feedback, ExecutionError(root, data["error"]))
        return Outcome(data["index"], root, feedback)


def _fill(node: Node[Any], record: Mapping[str, Any], value: Any) -> None:
    node._data = value
    node.name = record["name"]
    node.description = record["description"]
    node.feedback = []
