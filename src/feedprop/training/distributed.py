"""Running items as Ray tasks: evaluation and training spread over the processes of a Ray cluster.

``fp.train(..., executor="ray")`` and ``fp.evaluate(..., executor="ray")`` use a default
:class:`RayExecutor` for that one call (it connects, and disconnects afterwards if it did);
build one yourself to choose the cluster, the workers' model and more, and to keep using it
across calls. Ray is imported when the executor is first used, never before
(``pip install feedprop[distributed]``).

What travels, and why the optimizer sees the same thing as with local threads:

- to a worker: the workflow as class import path + JSON ``state_dict`` + training mode
  (:func:`~feedprop.training.wire.workflow_spec`), the workers' LLM as a JSON spec
  (:mod:`feedprop.llm.spec`), the item and the guide (with Ray's serialization), and the
  recorded replies of any active :func:`~feedprop.llm.replay` (so a screening replays there too);
- on the worker: forward and guide, exactly as :func:`~feedprop.training.evaluation.run_items`
  runs them, under a usage meter;
- back, as one JSON document per item: the feedback, the usage, and (in training mode) the
  output's graph (:mod:`feedprop.training.wire`). The driver rebuilds the graph around its own
  parameters, merges the usage into its active meters, and ``backward`` runs here, so each
  parameter receives the same entries, with the same minimal subgraphs, as in a local run.

Budgets across workers. When a call or token limit is active (``fp.Budget`` in training, or
any ``track_usage(max_calls=..., max_tokens=...)`` around the call), a ledger actor holds the
limits of every active meter, and each call of the workers' LLM asks it for a slot before it
starts, exactly as a local call reserves one in its meters: **the number of calls started
across all workers never exceeds ``max_calls``**, a call refused raises
:class:`~feedprop.errors.BudgetExhausted` on its worker, and tokens are reported to the ledger
as each call ends (calls already running may finish above the token limit, as locally). The
usage each item measured comes back with it, also for items that failed, and is added to the
driver's meters, so ``meter.calls`` and the token counts equal the sum over the workers' calls.
Two differences from local threads, both conservative: calls made by an attempt that was lost
with a killed worker count against the ledger but are not in the usage (their results were
thrown away and the task ran again), and only calls of the workers' LLM (the one built from
``llm``, which is ``fp.llm.default()`` on the worker) ask the ledger; calls of other LLM objects
the workflow builds itself are metered but only stopped by the driver not dispatching more items.

One difference in what the optimizer sees is possible, and only with an unusual guide: a guide
that returns the *same* ``Feedback`` object for several items. Optimizers count distinct
feedback objects (``Optimizer.observed_feedback``), so locally that object counts once, while
each item's copy from a worker counts once per item. Guides that build their feedback per call
(all of feedprop's, and any returning a number or a bool) are unaffected.

Failures. A worker process that dies mid-task is retried by Ray (``max_retries`` times); the
item then runs again from its request, so the run completes with the same result. A task lost
for good raises :class:`~feedprop.errors.DistributedError`. Errors raised on a worker (a budget
running out, an unreachable model, a guide's bug) are rebuilt here with their type and message
and raised as a local run would raise them. Endpoints: give several URLs in the ``llm`` spec and
each worker load-balances over them, taking an endpoint that goes down out of rotation
(:class:`~feedprop.llm.pool.EndpointPool`).

Example:
    >>> executor = RayExecutor(llm={"kind": "openai", "base_url": ["http://10.0.0.1:8080/v1"], "model": "qwen"})
    >>> executor.llm_spec["kind"], executor.max_retries
    ('openai', 3)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from feedprop.errors import BudgetExhausted, ConfigurationError, DistributedError, InvalidInputError
from feedprop.llm import LLM, Completion, UsageMeter, active_meters, check_messages, set_default, track_usage
from feedprop.llm.cache import cache_key
from feedprop.llm.replay import RecordedCall, active_records, is_replayed, replay
from feedprop.llm.spec import check_spec, from_spec, import_object, spec_of
from feedprop.llm.usage import add_usage
from feedprop.module import Module
from feedprop.tracing import current_scope, is_tracing, name_scope, no_trace
from feedprop.training.data import Item
from feedprop.training.evaluation import GuideFn, ItemExecutor, Outcome, _accepts_example, _score_one
from feedprop.training.wire import Rebuilder, build_workflow, encode_outcome, workflow_spec

__all__ = ["BudgetLedger", "RayExecutor", "run_item"]


# -- the budget ledger ---------------------------------------------------------------------------


class BudgetLedger:
    """The call and token limits of the caller's meters, shared by every worker (run as a Ray actor).

    :meth:`open` starts a batch with one meter per limited meter of the caller, counting from
    where that meter stands; :meth:`reserve` grants a call slot or returns why not, in the words
    a local meter would use; :meth:`settle` adds a finished call's tokens. Calls for a batch that
    is no longer open are refused.

    Example:
        >>> ledger = BudgetLedger()
        >>> limit = {"calls": 4, "max_calls": 5, "prompt_tokens": 0, "completion_tokens": 0, "max_tokens": None}
        >>> ledger.open(1, [limit])
        >>> ledger.reserve(1), ledger.reserve(1) is not None
        (None, True)
    """

    def __init__(self) -> None:
        self.batch = -1
        self.meters: list[UsageMeter] = []

    def open(self, batch: int, limits: Sequence[Mapping[str, Any]]) -> None:
        self.batch = batch
        self.meters = []
        for limit in limits:
            meter = UsageMeter(max_calls=limit["max_calls"], max_tokens=limit["max_tokens"])
            meter.calls = int(limit["calls"])
            meter.prompt_tokens = int(limit["prompt_tokens"])
            meter.completion_tokens = int(limit["completion_tokens"])
            self.meters.append(meter)

    def reserve(self, batch: int) -> str | None:
        if batch != self.batch:
            return "the evaluation this call belongs to has ended; no further calls are made for it"
        for meter in self.meters:
            reason = meter.exhausted_reason()
            if reason is not None:
                return reason
        for meter in self.meters:
            meter.calls += 1
        return None

    def settle(self, batch: int, prompt_tokens: int, completion_tokens: int) -> None:
        if batch != self.batch:
            return
        for meter in self.meters:
            meter.prompt_tokens += prompt_tokens
            meter.completion_tokens += completion_tokens

    def counts(self) -> list[dict[str, Any]]:
        """Each meter's counts (for tests and inspection)."""
        return [m.to_dict() for m in self.meters]


def _limits() -> list[dict[str, Any]]:
    """The caller's active meters that carry a limit, as :meth:`BudgetLedger.open` takes them."""
    out = []
    for meter in active_meters():
        if meter.max_calls is not None or meter.max_tokens is not None:
            out.append(
                {
                    "calls": meter.calls,
                    "max_calls": meter.max_calls,
                    "prompt_tokens": meter.prompt_tokens,
                    "completion_tokens": meter.completion_tokens,
                    "max_tokens": meter.max_tokens,
                }
            )
    return out


def _ask(ledger: Any, method: str, *args: Any) -> Any:
    """Call ``method`` of the ledger: a Ray actor handle (waiting for the answer), or a BudgetLedger here."""
    bound = getattr(ledger, method)
    if hasattr(bound, "remote"):
        import ray

        return ray.get(bound.remote(*args))
    return bound(*args)


class _Budgeted(LLM):
    """The workers' LLM while a budget is active: each call asks the ledger for a slot before it starts.

    ``ledger`` is the run's :class:`BudgetLedger` actor (or, in one process, the ledger itself).
    """

    def __init__(self, inner: LLM, ledger: Any, batch: int) -> None:
        super().__init__()
        self.inner = inner
        self.model = inner.model
        self.supports_json_schema = inner.supports_json_schema
        self.ledger = ledger
        self.batch = batch

    def _cached(self, messages: Any, use_cache: bool, salt: Any, params: dict[str, Any]) -> bool:
        # A cached or replayed answer is not a call, locally or here: it needs no slot.
        checked = check_messages(messages)
        if is_replayed(self.inner.model, checked, params, salt):
            return True
        store = self.inner.cache if use_cache else None
        if store is None:
            return False
        return store.get(cache_key(self.inner.model, checked, params, salt)) is not None

    def _settle(self, completion: Completion) -> None:
        if completion.cached:
            return
        usage = completion.usage
        settle = self.ledger.settle
        if hasattr(settle, "remote"):  # no need to wait: the actor runs this caller's calls in order
            settle.remote(self.batch, usage.prompt_tokens, usage.completion_tokens)
        else:
            settle(self.batch, usage.prompt_tokens, usage.completion_tokens)

    def complete(self, messages: Any, *, cache: bool = True, cache_salt: Any = None, **params: Any) -> Completion:
        if self._cached(messages, cache, cache_salt, params):
            return self.inner.complete(messages, cache=cache, cache_salt=cache_salt, **params)
        reason = _ask(self.ledger, "reserve", self.batch)
        if reason is not None:
            raise BudgetExhausted(reason)
        completion = self.inner.complete(messages, cache=cache, cache_salt=cache_salt, **params)
        self._settle(completion)
        return completion

    async def acomplete(
        self, messages: Any, *, cache: bool = True, cache_salt: Any = None, **params: Any
    ) -> Completion:
        if self._cached(messages, cache, cache_salt, params):
            return await self.inner.acomplete(messages, cache=cache, cache_salt=cache_salt, **params)
        reason = await asyncio.to_thread(_ask, self.ledger, "reserve", self.batch)
        if reason is not None:
            raise BudgetExhausted(reason)
        completion = await self.inner.acomplete(messages, cache=cache, cache_salt=cache_salt, **params)
        self._settle(completion)
        return completion

    def close(self) -> None:
        """The inner model belongs to the worker's cache; nothing to release here."""


# -- the worker side -----------------------------------------------------------------------------

# Per worker process: one workflow instance per class, one LLM per spec (building them costs).
_WORKFLOWS: dict[str, Module] = {}
_LLMS: dict[str, LLM] = {}


def _worker_llm(spec: Mapping[str, Any]) -> LLM:
    key = json.dumps(spec, sort_keys=True)
    llm = _LLMS.get(key)
    if llm is None:
        llm = _LLMS[key] = from_spec(spec)
    return llm


def _failure(exc: BaseException) -> dict[str, Any]:
    args: list[Any] | None = list(exc.args)
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        args = None
    return {
        "type": f"{type(exc).__module__}:{type(exc).__qualname__}",
        "message": str(exc),
        "args": args,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def run_item(request: str, index: int, item: Item, guide: GuideFn, ledger: Any = None) -> str:
    """Run item ``index`` as a worker does: rebuild the workflow and LLM, forward, guide; reply in JSON.

    ``request`` is the JSON :meth:`RayExecutor.request` writes, shared by every item of a
    batch. The reply holds ``usage`` and either ``outcome``
    (:func:`~feedprop.training.wire.encode_outcome`) or ``failure`` (an error that stops the
    evaluation: its type, message, arguments and traceback).
    """
    req = json.loads(request)
    with track_usage() as meter:
        try:
            model = build_workflow(req["workflow"], _WORKFLOWS)
            llm = _worker_llm(req["llm"])
            set_default(_Budgeted(llm, ledger, req["batch"]) if ledger is not None else llm)
            records = [RecordedCall.from_dict(r) for r in req.get("replay", ())]
            with replay(records), _trace_state(req["tracing"], req["scope"]):
                outcome = _score_one(model, item, index, guide, _accepts_example(guide), None)
            reply: dict[str, Any] = {"outcome": encode_outcome(outcome, model, with_graph=model.training)}
        except Exception as exc:
            reply = {"failure": _failure(exc)}
    reply["usage"] = meter.to_dict()
    return json.dumps(reply)


@contextlib.contextmanager
def _trace_state(tracing: bool, scope: str) -> Iterator[None]:
    """The caller's tracing state on the worker: tracing on or off, and its name scope."""
    with contextlib.ExitStack() as stack:
        if not tracing:
            stack.enter_context(no_trace())
        for part in scope.split("/"):
            if part:
                stack.enter_context(name_scope(part))
        yield


# -- the driver side -----------------------------------------------------------------------------


def _rebuild_failure(failure: Mapping[str, Any]) -> BaseException:
    """The error a worker raised, as the same type with the same message (else DistributedError)."""
    message = str(failure["message"])
    exc: BaseException | None = None
    try:
        cls = import_object(failure["type"], "error class")
    except ConfigurationError:
        cls = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        for args in (failure.get("args"), [message]):
            if args is None:
                continue
            try:
                candidate = cls(*args)
            except Exception:
                continue
            if str(candidate) == message:
                exc = candidate
                break
    if exc is None:
        exc = DistributedError(f"a worker raised {failure['type']}: {message}")
    exc.add_note("raised on a Ray worker:\n" + str(failure.get("traceback", "")).rstrip())
    return exc


def _check_inputs(model: Callable[[Any], Any], guide: GuideFn) -> Module:
    """The workflow to send (a :class:`~feedprop.module.Module`); a typed error for what cannot travel."""
    if not callable(guide):
        raise InvalidInputError(f"guide must be callable (output, target) -> Feedback, got {type(guide).__name__}")
    if not isinstance(model, Module):
        raise InvalidInputError(
            "executor='ray' runs a feedprop.Module (it travels as class + state_dict), "
            f"got {type(model).__name__}; use the local executor for a plain callable"
        )
    return model


def _put_guide(ray: Any, guide: GuideFn) -> Any:
    """The guide in Ray's object store (sent once per batch), or a typed error if it cannot be pickled."""
    try:
        return ray.put(guide)
    except Exception as exc:
        raise ConfigurationError(
            f"the guide cannot be sent to Ray workers ({type(exc).__name__}: {exc}); use a guide that can be "
            "pickled: a function in an importable module, or an object without open connections or locks"
        ) from exc


class _Flight:
    """The item tasks of one batch: started a window at a time, their outcomes kept in item order.

    The first failure (an item's, or ``check`` raising before an item starts) starts no more
    items; it is raised by :meth:`result` once the running ones are back.
    """

    def __init__(self, ray: Any, items: Sequence[Item], submit: Callable[[int, Item], Any]) -> None:
        self.ray = ray
        self.submit = submit
        self.pending = deque(enumerate(items))
        self.running: dict[Any, int] = {}
        self.outcomes: list[Outcome | None] = [None] * len(items)
        self.failure: BaseException | None = None

    def launch(self, window: int, check: Callable[[], None] | None) -> bool:
        """Start items until ``window`` run; whether any task is still out."""
        while self.pending and self.failure is None and len(self.running) < window:
            if check is not None:
                try:
                    check()
                except BaseException as exc:
                    self.failure = exc
                    break
            index, item = self.pending.popleft()
            self.running[self.submit(index, item)] = index
        return bool(self.running)

    def landed(self) -> Iterator[tuple[int, Any]]:
        """Wait for at least one task to finish; ``(item index, task ref)`` of each finished one."""
        done, _ = self.ray.wait(list(self.running), num_returns=1)
        for ref in done:
            yield self.running.pop(ref), ref

    def take(
        self, index: int, reply: dict[str, Any], rebuild: Rebuilder, on_done: Callable[[Outcome], None] | None
    ) -> None:
        """Keep item ``index``'s outcome from its ``reply`` (or its failure, if it is the first)."""
        if "failure" in reply:
            if self.failure is None:
                self.failure = _rebuild_failure(reply["failure"])
            return
        outcome = rebuild.outcome(reply["outcome"])
        self.outcomes[index] = outcome
        if on_done is not None:
            on_done(outcome)

    def cancel(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)

    def result(self) -> list[Outcome]:
        """The outcomes in item order, or the first failure raised."""
        if self.failure is not None:
            raise self.failure
        return [o for o in self.outcomes if o is not None]


class RayExecutor(ItemExecutor):
    """Runs each item as a Ray task: see the module docs for what travels and what "exact" means.

    Args:
        address: the cluster to use, if this process is not connected to one yet (else that
            connection is used). ``"host:port"`` or ``"auto"``: an existing cluster.
            ``"local"``: a new cluster on this machine (``num_cpus`` CPUs, no dashboard).
            ``None``: Ray's own choice (``RAY_ADDRESS``, else the cluster last started on this
            machine with ``ray start``, else a new local one; ``"local"`` if ``num_cpus`` is set).
        llm: the workers' model, ``fp.llm.default()`` on every worker: an LLM spec (a dict, see
            :mod:`feedprop.llm.spec`; a list of ``base_url`` is load-balanced), or an LLM that
            :func:`~feedprop.llm.spec.spec_of` can describe. Default ``{"kind": "env"}``: each
            worker's own ``FEEDPROP_BASE_URL`` (configured per machine) or its default model.
        max_retries: how often Ray runs a task again whose worker process died.
        task_cpus: CPUs each item task reserves; below 1 runs several latency-bound items per CPU.
        num_cpus: CPUs of a local cluster this executor starts (``None``: Ray's count).
        runtime_env: Ray's runtime environment for the workers (e.g. ``{"env_vars": {"PYTHONPATH": ...}}``
            so they can import the workflow's module, or ``{"working_dir": "."}``).
        workflow_kwargs: JSON keyword arguments to construct the workflow class with on workers.
        ray_init: more keyword arguments for ``ray.init`` (e.g. ``object_store_memory``).

    ``max_workers`` (of ``train``/``evaluate``) caps the items in flight; by default it is the
    number of tasks the cluster can run at once. ``close()`` (or ``with``) disconnects from
    Ray if this executor connected.

    Example:
        >>> RayExecutor(address="127.0.0.1:6379", task_cpus=0.25).task_cpus
        0.25
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        llm: Mapping[str, Any] | LLM | None = None,
        max_retries: int = 3,
        task_cpus: float = 1.0,
        num_cpus: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        workflow_kwargs: Mapping[str, Any] | None = None,
        ray_init: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise InvalidInputError(f"address must be 'host:port', 'auto' or None, got {address!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if isinstance(task_cpus, bool) or not isinstance(task_cpus, int | float) or task_cpus <= 0:
            raise ConfigurationError(f"task_cpus must be a positive number, got {task_cpus!r}")
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise ConfigurationError(f"num_cpus must be an int >= 1 or None, got {num_cpus!r}")
        if llm is None:
            spec: dict[str, Any] = {"kind": "env"}
        elif isinstance(llm, LLM):
            spec = spec_of(llm)
        elif isinstance(llm, Mapping):
            spec = check_spec(llm)
        else:
            raise InvalidInputError(f"llm must be an LLM spec (a dict) or an LLM, got {type(llm).__name__}")
        self.address = address
        self.llm_spec = spec
        self.max_retries = max_retries
        self.task_cpus = float(task_cpus)
        self.num_cpus = num_cpus
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.workflow_kwargs = dict(workflow_kwargs or {})
        self.ray_init = dict(ray_init or {})
        self._connected_here = False
        self._ledger: Any = None
        self._task: Any = None
        self._batches = itertools.count()
        self._lock = threading.Lock()

    # -- connection ------------------------------------------------------------------------------

    def init_kwargs(self) -> dict[str, Any]:
        """What :meth:`connect` passes to ``ray.init`` when this process is not connected yet."""
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.ray_init}
        address = "local" if self.address is None and self.num_cpus is not None else self.address
        if address is not None:
            kwargs["address"] = address
        if address == "local" and self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        if self.runtime_env is not None:
            kwargs["runtime_env"] = self.runtime_env
        return kwargs

    def connect(self) -> Any:
        """Import Ray and connect (once); returns the ``ray`` module."""
        try:
            import ray
        except ImportError as exc:
            raise ConfigurationError(
                "executor='ray' needs Ray: pip install 'feedprop[distributed]' (or pip install 'ray[default]')"
            ) from exc
        with self._lock:
            if not ray.is_initialized():
                try:
                    ray.init(**self.init_kwargs())
                except Exception as exc:  # Ray raises plain Exception for a node that timed out starting
                    raise DistributedError(
                        f"could not connect to the Ray cluster at {self.address or 'a new local instance'}: {exc}. "
                        "Check the address (ray status shows it) or start one with 'ray start --head'; on a busy "
                        "machine give a new instance longer to start (RAY_raylet_start_wait_time_s=300 and "
                        "RAY_agent_register_timeout_ms=300000 in the environment)"
                    ) from exc
                self._connected_here = True
            if self._task is None:
                self._task = ray.remote(run_item).options(max_retries=self.max_retries, num_cpus=self.task_cpus)
        return ray

    def slots(self) -> int:
        """How many item tasks the cluster can run at once (its CPUs over ``task_cpus``)."""
        ray = self.connect()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus / self.task_cpus + 1e-9))

    def close(self) -> None:
        """Stop the ledger actor; disconnect from Ray if this executor connected (a local cluster it started stops)."""
        ray = sys.modules.get("ray")  # never imported: nothing was started
        if ray is None:
            return
        if self._ledger is not None:
            with contextlib.suppress(Exception):  # the cluster may already be gone: nothing left to stop
                ray.kill(self._ledger)
            self._ledger = None
        self._task = None
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
        self._connected_here = False

    # -- running items ---------------------------------------------------------------------------

    def request(self, model: Module, batch: int) -> str:
        """The JSON request of a batch (what :func:`run_item` reads): workflow, workers' LLM, tracing state,
        and the records of the active replays (if any)."""
        request: dict[str, Any] = {
            "workflow": workflow_spec(model, self.workflow_kwargs),
            "llm": self.llm_spec,
            "batch": batch,
            "tracing": is_tracing(),
            "scope": current_scope(),
        }
        records = active_records()
        if records:
            request["replay"] = [record.to_dict() for record in records]
        return json.dumps(request)

    def _ledger_for(self, ray: Any, batch: int) -> Any:
        limits = _limits()
        if not limits:
            return None
        if self._ledger is None:
            self._ledger = ray.remote(BudgetLedger).options(num_cpus=0, max_restarts=-1).remote()
        ray.get(self._ledger.open.remote(batch, limits))
        return self._ledger

    def run_items(
        self,
        model: Callable[[Any], Any],
        items: Sequence[Item],
        guide: GuideFn,
        *,
        max_workers: int | None = None,
        check: Callable[[], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        workflow = _check_inputs(model, guide)
        if not items:
            return []
        batch = next(self._batches)
        request = self.request(workflow, batch)
        ray = self.connect()
        guide_ref = _put_guide(ray, guide)
        request_ref = ray.put(request)  # once per batch: the workflow's state may be long
        ledger = self._ledger_for(ray, batch)
        window = max(1, min(max_workers or self.slots(), len(items)))
        flight = _Flight(ray, items, lambda index, item: self._task.remote(request_ref, index, item, guide_ref, ledger))
        rebuild = Rebuilder(workflow)
        try:
            while flight.launch(window, check):
                for index, ref in flight.landed():
                    reply = self._reply(ray, ref, index)
                    add_usage(reply["usage"])
                    flight.take(index, reply, rebuild, on_done)
        except BaseException:
            flight.cancel()  # interrupted here (Ctrl-C, a lost task): stop what still runs
            raise
        finally:
            if ledger is not None:
                ledger.open.remote(-1, [])  # calls of stragglers are refused from now on
        return flight.result()

    def _reply(self, ray: Any, ref: Any, index: int) -> dict[str, Any]:
        try:
            text = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise DistributedError(
                f"item {index} was lost on the Ray cluster ({type(exc).__name__}: {str(exc)[:500]}); its worker "
                f"died more than max_retries={self.max_retries} times or the cluster went away"
            ) from exc
        reply: dict[str, Any] = json.loads(text)
        return reply
