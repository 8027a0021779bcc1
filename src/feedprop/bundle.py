"""``@bundle``: turn a Python function or method into a traced op.

Calling a bundled function with nodes records one :class:`~feedprop.node.MessageNode` whose
parents are the node arguments; the function itself sees plain values. Inside it nothing is
traced (the bundle is one op), but every node it *reads* is: reading a node it was not given is
a :class:`~feedprop.errors.HiddenDependencyError` unless ``allow_external_dependencies=True``,
in which case the node becomes a parent too.

``trainable=True`` makes the function's source a code :class:`~feedprop.node.Parameter` (one per
instance for methods). The code runs through an :class:`~feedprop.sandbox.Executor`, so an
optimizer's rewrite takes effect on the next call. Rewritten code sees only the globals and
``self`` attributes that the original function used (:func:`feedprop.sandbox.withhold`): a
secret the original never read is never handed to code an optimizer wrote. When the code raises, the error becomes an
:class:`~feedprop.node.ExceptionNode` (its traceback mapped onto the code's lines) and is raised as
:class:`~feedprop.errors.ExecutionError`, ready for ``e.node.backward(...)``.

Example:
    >>> from feedprop.node import Node
    >>> @bundle(trainable=True)
    ... def last_line(text: str) -> str:
    ...     return text.strip().splitlines()[-1]
    >>> out = last_line(Node("reasoning\\n42", name="response"))
    >>> out.data, out.op is last_line, [p.name for p in out.parents]
    ('42', True, ['response', 'last_line'])
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import traceback as tb
from collections.abc import Callable
from typing import Any, overload

from feedprop.errors import ExecutionError, FeedpropError, GraphError, HiddenDependencyError, InvalidInputError
from feedprop.node import ExceptionNode, MessageNode, Node, Op, Parameter
from feedprop.sandbox import CODE_FILENAME, CodeFailure, Executor, default_executor, withhold
from feedprop.tracing import no_trace, note_input, recording_reads

__all__ = ["BoundBundle", "Bundle", "bundle", "function_source"]

#: Where a method's per-instance code parameters live in the instance ``__dict__``.
CODE_ATTRIBUTE = "_bundle_code"

_FRAME = re.compile(rf'File "{re.escape(CODE_FILENAME)}", line (\d+)')


def function_source(fn: Callable[..., Any]) -> str:
    """The source of ``fn`` from its ``def`` line on: decorators stripped, indentation removed.

    Example:
        >>> def f(x):
        ...     return x + 1
        >>> print(function_source(f), end="")  # doctest: +SKIP
        def f(x):
            return x + 1
    """
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise InvalidInputError(
            f"trainable bundles need the source of {getattr(fn, '__qualname__', fn)!r}, which Python cannot find "
            "(define the function in a .py file, not a lambda or the interactive prompt)"
        ) from e
    try:
        defs = [n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        defs = []
    if not defs:
        raise InvalidInputError(
            f"trainable bundles need a 'def' function; {fn!r} is not one (lambdas cannot be trained)"
        )
    lines = text.splitlines(keepends=True)
    return "".join(lines[defs[0].lineno - 1 : defs[0].end_lineno])


class Bundle(Op):
    """A function or method turned into a traced op; see :func:`bundle`.

    The bundle is the op object of every node it makes (``node.op is my_bundle``). It keeps the
    wrapped function's name, docstring and signature (``inspect.signature`` sees the original).
    ``source`` is the original source for trainable bundles; ``parameter`` the code parameter of a
    trainable plain function (methods have one per instance: ``obj.method.parameter``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        trainable: bool = False,
        catch_execution_error: bool = True,
        allow_external_dependencies: bool = False,
        name: str | None = None,
        description: str | None = None,
        constraint: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidInputError(f"bundle wraps a function, got {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):
            raise InvalidInputError(
                f"bundle cannot wrap the coroutine function {fn.__qualname__!r}; bundle a sync function and run "
                "it in a thread (asyncio.to_thread) to call it from async code"
            )
        op_name = name or fn.__name__
        doc = inspect.getdoc(fn) or ""
        summary = doc.splitlines()[0] if doc else f"calls {fn.__qualname__}"
        super().__init__(op_name, fn, (), description or f"[{op_name}] {summary}")
        functools.update_wrapper(self, fn)
        self.signature = inspect.signature(fn)
        self.trainable = trainable
        self.catch_execution_error = catch_execution_error
        self.allow_external_dependencies = allow_external_dependencies
        self.constraint = constraint
        self.executor = executor
        self.source = function_source(fn) if trainable else ""
        self.attribute: str | None = None  # set when the bundle is a method (see __set_name__)
        self._parameter: Parameter[str] | None = None
        if trainable:
            self._parameter = self._new_parameter()

    # -- code parameters ----------------------------------------------------------------------

    def _new_parameter(self) -> Parameter[str]:
        doc = inspect.getdoc(self.fn) or ""
        description = f"the code of {self.fn.__qualname__}" + (f": {doc}" if doc else "")  # type: ignore[union-attr]
        return Parameter(self.source, name=self.name, kind="code", description=description, constraint=self.constraint)

    def __set_name__(self, owner: type, attribute: str) -> None:
        # Defined in a class body: a method, so each instance gets its own code parameter.
        self.attribute = attribute
        self._parameter = None

    @property
    def parameter(self) -> Parameter[str] | None:
        """The code parameter of a trainable plain function (``None`` for methods and frozen code)."""
        return self._parameter

    def parameter_for(self, instance: Any) -> Parameter[str] | None:
        """The code parameter of this method on ``instance``, created on first use."""
        if not self.trainable:
            return None
        if self.attribute is None:
            return self._parameter
        try:
            store = vars(instance)
        except TypeError as e:
            raise GraphError(
                f"trainable method {self.name!r} keeps its code on the instance, but {type(instance).__name__} "
                "has no __dict__ (remove __slots__ or add '__dict__' to them)"
            ) from e
        codes: dict[str, Parameter[str]] = store.setdefault(CODE_ATTRIBUTE, {})
        param = codes.get(self.attribute)
        if param is None:
            param = codes.setdefault(self.attribute, self._new_parameter())
        return param

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else BoundBundle(self, instance)

    # -- calling ------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        if self.attribute is not None and args:  # called through the class: Class.method(obj, ...)
            return self.invoke(args[0], args[1:], kwargs)
        return self.invoke(None, args, kwargs)

    def invoke(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> MessageNode[Any]:
        """Run the function (on ``instance`` for methods) and record its output node."""
        full = (instance, *args) if instance is not None else args
        try:
            bound = self.signature.bind(*full, **kwargs)
        except TypeError as e:
            raise InvalidInputError(
                f"{self.name}{self.signature}: {e}; call it with the arguments of that signature"
            ) from None
        inputs, call_args, call_kwargs = _split_arguments(bound, skip_first=instance is not None)
        code = self.parameter_for(instance) if instance is not None else self._parameter
        given = {id(v) for _, v in inputs if isinstance(v, Node)}
        if code is not None:
            given.add(id(code))
        with recording_reads() as record, no_trace():
            try:
                result = self._run(code, call_args, call_kwargs)
                failure: BaseException | None = None
            except ExecutionError as e:  # a traced op inside the function failed: the function failed
                failure = e
            except FeedpropError:
                raise  # misuse or infrastructure (bad arguments, sandbox, model, budget): not the code's fault
            except Exception as e:
                failure = e
        hidden = tuple(n for n in record.nodes() if id(n) not in given)
        if failure is not None:
            self._fail(failure, code, inputs, hidden if self.allow_external_dependencies else ())
        if hidden and not self.allow_external_dependencies:
            names = ", ".join(repr(n.name) for n in hidden)
            raise HiddenDependencyError(
                f"{self.name} read node(s) {names} without receiving them as arguments, so feedback could not reach "
                f"them; pass them in as arguments, or use @bundle(allow_external_dependencies=True) to record "
                "them as hidden dependencies"
            )
        info: dict[str, Any] | None = None
        if code is not None or hidden:
            info = {}
            if code is not None:
                info["code"] = code
            if hidden:
                info["hidden"] = [n.name for n in hidden]
        extra = ((code,) if code is not None else ()) + hidden
        if isinstance(result, Node):
            result = result._data
        return MessageNode(result, op=self, inputs=inputs, info=info, extra_parents=extra)

    def _run(self, code: Parameter[str] | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if code is None:
            assert self.fn is not None
            return self.fn(*args, **kwargs)
        executor = self.executor if self.executor is not None else default_executor()
        globals_ = dict(self.fn.__globals__)  # type: ignore[union-attr]
        closure = inspect.getclosurevars(self.fn).nonlocals  # type: ignore[arg-type]
        globals_.update(closure)
        name = self.fn.__name__  # type: ignore[union-attr]
        # Rewritten code sees only the globals and self attributes the original code used.
        globals_, args = withhold(self.source, code._data, name, globals_, args)
        return executor.run(code._data, name, args, kwargs, globals_)

    def _fail(
        self,
        error: BaseException,
        code: Parameter[str] | None,
        inputs: tuple[tuple[str, Any], ...],
        hidden: tuple[Node[Any], ...],
    ) -> None:
        if isinstance(error, CodeFailure):
            original = error.original if error.original is not None else error
            trace, lineno = _map_code_traceback(error, code._data if code is not None else "", self.name)
            message = f"{self.name} raised {error.type_name}: {error.message}"
        else:
            original = error
            # Drop this module's frames: the traceback starts in the user's function.
            frames = error.__traceback__
            while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
                frames = frames.tb_next
            trace = "".join(tb.format_exception(type(error), error, frames))
            lineno = None
            message = f"{self.name} raised {type(error).__name__}: {error}"
        if lineno is not None and code is not None:
            line = code._data.splitlines()[lineno - 1].strip() if 0 < lineno <= len(code._data.splitlines()) else ""
            message += f" (line {lineno} of the code of {self.name}: {line})" if line else f" (line {lineno})"
        info = {"code": code} if code is not None else None
        node = ExceptionNode(
            original,
            op=self,
            inputs=inputs,
            traceback=trace,
            lineno=lineno,
            code=code,
            info=info,
            extra_parents=hidden,
        )
        if not self.catch_execution_error:
            raise original
        raise ExecutionError(node, message) from original

    def __repr__(self) -> str:
        kind = "trainable " if self.trainable else ""
        return f"<{kind}bundle {self.name}{self.signature}>"


class BoundBundle:
    """A bundled method bound to an instance (what ``obj.method`` returns)."""

    __slots__ = ("bundle", "instance")

    def __init__(self, bundle: Bundle, instance: Any) -> None:
        self.bundle = bundle
        self.instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode[Any]:
        return self.bundle.invoke(self.instance, args, kwargs)

    @property
    def parameter(self) -> Parameter[str] | None:
        """This instance's code parameter (``None`` when the method is not trainable)."""
        return self.bundle.parameter_for(self.instance)

    @property
    def __signature__(self) -> inspect.Signature:
        params = list(self.bundle.signature.parameters.values())[1:]
        return self.bundle.signature.replace(parameters=params)

    def __repr__(self) -> str:
        return f"<bound {self.bundle!r} of {type(self.instance).__name__}>"


def _unwrap(value: Any) -> Any:
    if isinstance(value, Node):
        note_input(value)  # an argument, not a control read
        return value._data
    return value


def _split_arguments(
    bound: inspect.BoundArguments, *, skip_first: bool
) -> tuple[tuple[tuple[str, Any], ...], tuple[Any, ...], dict[str, Any]]:
    """(inputs as recorded, positional values, keyword values) with nodes unwrapped.

    Nodes inside a list, tuple or dict argument are unwrapped too and recorded as ``name[i]``.
    """
    inputs: list[tuple[str, Any]] = []
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    params = bound.signature.parameters
    for index, (name, value) in enumerate(bound.arguments.items()):
        kind = params[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(_unwrap_container(f"{name}[{i}]", v, inputs) for i, v in enumerate(value))
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update((k, _unwrap_container(k, v, inputs)) for k, v in value.items())
            continue
        if index == 0 and skip_first:
            args.append(value)
            continue
        plain = _unwrap_container(name, value, inputs)
        if kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[name] = plain
        else:
            args.append(plain)
    return tuple(inputs), tuple(args), kwargs


def _unwrap_container(name: str, value: Any, inputs: list[tuple[str, Any]]) -> Any:
    """``value`` with nodes replaced by their data; records it (or the nodes inside it) in ``inputs``."""
    if isinstance(value, Node):
        inputs.append((name, value))
        return _unwrap(value)
    if isinstance(value, list | tuple) and any(isinstance(v, Node) for v in value):
        inputs.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
        return type(value)(_unwrap(v) for v in value) if isinstance(value, list) else tuple(_unwrap(v) for v in value)
    if isinstance(value, dict) and any(isinstance(v, Node) for v in value.values()):
        inputs.extend((f"{name}[{k!r}]", v) for k, v in value.items())
        return {k: _unwrap(v) for k, v in value.items()}
    inputs.append((name, value))
    return value


def _map_code_traceback(failure: CodeFailure, source: str, name: str) -> tuple[str, int | None]:
    """The failure's traceback restricted to the trainable code, each frame shown with its line."""
    lines = source.splitlines()
    frames = [int(m.group(1)) for m in _FRAME.finditer(failure.traceback)]
    if not frames and failure.lineno is not None:
        frames = [failure.lineno]
    out = [f"Traceback (most recent call last), in the trainable code of {name}:"]
    for n in frames:
        text = lines[n - 1].strip() if 0 < n <= len(lines) else ""
        out.append(f"  line {n}: {text}")
    out.append(f"{failure.type_name}: {failure.message}")
    lineno = failure.lineno if failure.lineno is not None else (frames[-1] if frames else None)
    return "\n".join(out), lineno


@overload
def bundle(fn: Callable[..., Any], /) -> Bundle: ...


@overload
def bundle(
    fn: None = None,
    /,
    *,
    trainable: bool = False,
    catch_execution_error: bool = True,
    allow_external_dependencies: bool = False,
    name: str | None = None,
    description: str | None = None,
    constraint: str | None = None,
    executor: Executor | None = None,
) -> Callable[[Callable[..., Any]], Bundle]: ...


def bundle(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    trainable: bool = False,
    catch_execution_error: bool = True,
    allow_external_dependencies: bool = False,
    name: str | None = None,
    description: str | None = None,
    constraint: str | None = None,
    executor: Executor | None = None,
) -> Bundle | Callable[[Callable[..., Any]], Bundle]:
    """Turn a function or method into a traced op (usable as ``@bundle`` or ``@bundle(...)``).

    - ``trainable``: the source becomes a code :class:`~feedprop.node.Parameter` an optimizer may rewrite;
      it runs through ``executor`` (default: ``feedprop.sandbox.default_executor()``).
    - ``catch_execution_error``: raise :class:`~feedprop.errors.ExecutionError` carrying an
      :class:`~feedprop.node.ExceptionNode` (``False``: re-raise the original exception).
    - ``allow_external_dependencies``: record nodes read but not passed in as parents instead of
      raising :class:`~feedprop.errors.HiddenDependencyError`.

    Example:
        >>> from feedprop.node import Parameter
        >>> @bundle
        ... def shout(text):
        ...     '''Upper-case the text.'''
        ...     return text.upper() + "!"
        >>> out = shout(Parameter("hi", name="greeting"))
        >>> out.data, out.op.description
        ('HI!', '[shout] Upper-case the text.')
    """
    options = dict(
        trainable=trainable,
        catch_execution_error=catch_execution_error,
        allow_external_dependencies=allow_external_dependencies,
        name=name,
        description=description,
        constraint=constraint,
        executor=executor,
    )

    def wrap(f: Callable[..., Any]) -> Bundle:
        return Bundle(f, **options)  # type: ignore[arg-type]

    return wrap if fn is None else wrap(fn)
