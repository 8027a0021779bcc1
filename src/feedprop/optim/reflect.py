"""Reflect: decomposed proposals a small model can make — diagnose once, then rewrite n times.

Asked for one JSON object holding its reasoning and a new value, a small model names the
problem in its reasoning and then copies the old value into the suggestion. Asked the two
halves separately, in plain words, it does both. So, for each text or code parameter whose
feedback holds failures, one step of Reflect makes:

1. **one diagnose call** (temperature 0): the parameter (the function, or the prompt text and
   what it is for), a few failing cases — what the parameter's op received and produced, the
   program's final output and the feedback — and a couple of passing ones, then the question
   "what is wrong, and what rule would fix it?", answered in a few sentences;
2. **n rewrite calls** (``n_candidates``, at ``candidate_temperature``, sample ``i`` with
   ``cache_salt=i``): the current value, the failing cases and the diagnosis, then "return only
   the new function" (or "only the new text") — no JSON, no explanation. A share of the samples
   (``plain_share``, half by default) is asked plainly, without the diagnosis ("it fails on these
   cases; rewrite it"): a wrong diagnosis then misleads only the other half;
3. **tolerant reading** of each reply (:func:`read_code`, :func:`read_text`): a fenced block or
   the whole reply; code must parse and define the same function with the same parameters
   (imports of standard modules it uses but forgot are added); text loses quotes, fences and
   "Instruction:" style prefixes. A rewrite that cannot be read, that is the current value
   unchanged, or that was already offered at an earlier step from the same value (and so not
   accepted) is refused with the reason (:class:`~feedprop.optim.Rejection`).

Every :class:`~feedprop.optim.Candidate` changes one parameter, so a trainer (or a screening
pass over the recorded inputs, for code) can judge each on its own. Cost per step is
predictable: ``1 + n_candidates`` model calls for each parameter touched, and at most
``params_per_step`` parameters are touched (round-robin across steps; ``None`` touches every
parameter with failures).

Example:
    >>> from feedprop import ops
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.node import Feedback, Parameter
    >>> instruction = Parameter("Answer.", name="instruction")
    >>> out = ops.llm_call(instruction, "2+2?", llm=MockLLM("four"))
    >>> out.backward(Feedback("Wrong: expected '4', got 'four'.", score=0.0))
    >>> def model(messages, **params):
    ...     if "what rule would fix it" in messages[-1]["content"]:  # the diagnose call
    ...         return "The answer must be written in digits."
    ...     return 'Instruction: "Answer with one number in digits."'  # a rewrite call
    >>> opt = Reflect([instruction], llm=MockLLM(model), n_candidates=2)
    >>> proposal = opt.propose()
    >>> [c.updates["instruction"] for c in proposal.candidates]  # the two samples agree: one candidate
    ['Answer with one number in digits.']
    >>> proposal.usage.calls  # one diagnosis, two rewrites
    3
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, SuggestionError
from feedprop.llm import LLM, Message, thread_map
from feedprop.llm.tokens import estimate_prompt_tokens
from feedprop.node import ExceptionNode, Feedback, MessageNode, Node, Parameter
from feedprop.ops import LLM_CALL
from feedprop.optim.conversation import Conversation
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal, Rejection, check_int_option, kind_of
from feedprop.optim.templates import fill, fixed_text, template
from feedprop.optim.validate import copied_passage

__all__ = ["Case", "Reflect", "fingerprint", "is_failure", "read_code", "read_text"]

#: The parameter kinds Reflect rewrites.
REFLECT_KINDS = ("text", "code")
#: Passing cases shown in the diagnosis prompt (contrast helps; more only costs tokens).
MAX_PASSING_CASES = 2
#: The diagnosis is a few sentences: its reply limit.
DIAGNOSIS_TOKENS = 300
#: How much of a diagnosis goes into the rewrite prompt, and of a refused reply into a rejection.
MAX_DIAGNOSIS_CHARS = 1500
MAX_REFUSED_CHARS = 1000
#: Rewrites remembered per parameter, so a candidate that was not accepted is not offered again.
MAX_TRIED = 64
#: Per prompt, tried in order until the prompt fits ``max_prompt_tokens``: (characters per shown
#: value, share of the failing cases kept, passing cases kept). The parameter's value is never cut.
#: The prompts a text rewrite is asked with; a reply repeating their fixed wording is refused.
_TEXT_PROMPTS = ("reflect_subject_text", "reflect_rewrite_text", "reflect_rewrite_text_plain")


def _tip_directions() -> list[str]:
    """The tips' words to the optimizer, their quoted sentences (meant to be copied) left out.

    A small model given the tip "add to the instruction a short numbered procedure ..." sometimes
    opens its new instruction with those very words, which then tell the student to edit a prompt.

    Example:
        >>> any("numbered procedure for the model" in d for d in _tip_directions())
        True
        >>> any("Think step by step" in d for d in _tip_directions())
        False
    """
    lines = template("reflect_tips").splitlines()
    return [re.sub(r'"[^"]*"', " ", line.removeprefix("code:")) for line in lines if line.strip()]


_PLANS = (
    (1200, 1.0, True),
    (600, 1.0, True),
    (600, 1.0, False),
    (300, 1.0, False),
    (300, 0.0, False),
    (120, 0.0, False),
)

_NEGATIVE = re.compile(
    r"\b(wrong|incorrect|error|errors|fail|fails|failed|failing|failure|exception|raised|traceback|expected|"
    r"should|must|missing|not|never|bad|invalid|too|instead)\b|n't\b",
    re.IGNORECASE,
)
_FENCED = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^\s*(?:async\s+def|def|import|from|class|@)\b")
_CHATTER = re.compile(r"^\s*(?:sure|okay|ok|certainly|of course|absolutely|great)\b[^\n]*\n", re.IGNORECASE)
_LEAD = re.compile(
    r"^\s*(?:here|below|the|this|my|new|improved|updated|revised|rewritten)\b[^\n]{0,120}:\s*\n", re.IGNORECASE
)
_PREFIX = re.compile(
    r"^\s*[*#_]*\s*(?:(?:new|improved|updated|revised|rewritten|final)\s+)?(?:system\s+)?"
    r"(?:instruction|prompt|text)\s*[*_]*\s*:\s*[*_]*\s*",
    re.IGNORECASE,
)
_AFTERWORD = re.compile(
    r"^\s*[*_]*(?:explanation|note|notes|this (?:new |revised |updated |improved )?(?:instruction|prompt|version|text)|"
    r"the (?:new |revised |updated |improved )?(?:instruction|prompt) (?:now|above|will))\b",
    re.IGNORECASE,
)
_QUOTES = (
    ('"""', '"""'),
    ("'''", "'''"),
    ('"', '"'),
    ("'", "'"),
    ("`", "`"),
    ("\u201c", "\u201d"),
    ("\u00ab", "\u00bb"),
)


def is_failure(feedback: Feedback) -> bool:
    """Whether feedback reports a failure: a score below 1, or, without a score, negative words.

    Example:
        >>> is_failure(Feedback("Correct.", score=1.0)), is_failure(Feedback("close", score=0.5))
        (False, True)
        >>> is_failure(Feedback("Wrong: expected 4")), is_failure(Feedback("Looks good"))
        (True, False)
    """
    if feedback.score is not None:
        return feedback.score < 1.0
    return bool(_NEGATIVE.search(feedback.text))


def fingerprint(value: Any, kind: str) -> str:
    """A short digest of a value, equal for values :func:`~feedprop.optim.conversation.same_value` calls equal.

    Code is compared by syntax tree (comments, quotes and blank lines do not count), text by its
    lines without trailing whitespace.

    Example:
        >>> fingerprint("def f():\\n    return 'a'  # note", "code") == fingerprint('def f():\\n    return "a"', "code")
        True
        >>> fingerprint("Be brief. ", "text") == fingerprint("Be brief.", "text")
        True
    """
    text = "\n".join(line.rstrip() for line in str(value).strip("\n").splitlines())
    if kind == "code":
        with contextlib.suppress(SyntaxError, ValueError, RecursionError, MemoryError):
            text = ast.dump(ast.parse(textwrap.dedent(str(value))))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _output_feedback(entry: Any) -> Feedback:
    fb = getattr(entry, "output_feedback", getattr(entry, "feedback", entry))
    return fb if isinstance(fb, Feedback) else Feedback(str(fb))


@dataclass(frozen=True)
class Case:
    """One run shown to the model: whether it ``failed``, and ``(label, text, as_block)`` lines."""

    failed: bool
    shown: tuple[tuple[str, str, bool], ...]

    def render(self, number: int, max_chars: int = 1200) -> str:
        """The case as text, each shown value cut in the middle to ``max_chars``.

        Example:
            >>> print(Case(True, (("input x", "3", False), ("feedback", "Wrong", False))).render(1))
            Case 1 (failed)
              input x: 3
              feedback: Wrong
        """
        lines = [f"Case {number} ({'failed' if self.failed else 'passed'})"]
        for label, text, block in self.shown:
            cut = truncate_middle(text, max_chars)
            if block:
                lines.append(f"  {label}:\n{textwrap.indent(cut, '    ', lambda _: True)}")
            else:
                lines.append(f"  {label}: {cut}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, ExceptionNode):
        return f"raised {value.message}"
    if isinstance(value, Node):
        value = value.data
    try:
        return repr(value)
    except Exception:  # a value whose repr fails (or is too long an int) is shown by its type
        return f"<{type(value).__name__}>"


def _last_user_message(info: Mapping[str, Any]) -> str:
    messages = info.get("messages") or []
    for message in reversed(list(messages)):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def _llm_node(subgraph: Iterable[Node[Any]], param: Node[Any] | None = None) -> MessageNode[Any] | None:
    # The call given the parameter is the one it feeds; the subgraph also holds calls that are other
    # inputs of later steps, or values read before a branch. Otherwise the first call in topological order.
    calls = [n for n in subgraph if isinstance(n, MessageNode) and n.op is LLM_CALL and n.info]
    return next((n for n in calls if any(v is param for _, v in n.inputs)), calls[0] if calls else None)


def _code_node(subgraph: Iterable[Node[Any]], param: Parameter[Any]) -> MessageNode[Any] | None:
    for n in subgraph:
        if isinstance(n, MessageNode) and isinstance(n.info, dict) and n.info.get("code") is param:
            return n
    return None


def _case(param: Parameter[Any], kind: str, entry: Any) -> Case:
    """What one run did at ``param``'s op, its final output and the feedback."""
    fb = _output_feedback(entry)
    subgraph = getattr(entry, "subgraph", ())
    output = getattr(entry, "output", None)
    shown: list[tuple[str, str, bool]] = []
    node: MessageNode[Any] | None
    if kind == "code":
        node = _code_node(subgraph, param)
        if node is not None:
            for arg, value in node.inputs:
                shown.append((f"input {arg}", _show(value), False))
            if isinstance(node, ExceptionNode):
                shown.append(("it raised", node.message, False))
            else:
                shown.append(("it returned", _show(node), False))
    else:
        node = _llm_node(subgraph, param)
        if node is not None and node.info is not None:
            shown.append(("the model was asked", _last_user_message(node.info), True))
            shown.append(("it replied", str(node.info.get("response", node.data)), True))
            calls = node.info.get("tool_calls") or ()
            if calls:
                text = "\n".join(f"{c.get('name')}({c.get('arguments')})" for c in calls if isinstance(c, Mapping))
                shown.append(("it called the tools", text, True))
    if output is not None and output is not node:
        shown.append(("final output of the program", _show(output), False))
    shown.append(("feedback", fb.text, False))
    own = getattr(entry, "feedback", fb)
    if isinstance(own, Feedback) and own.text != fb.text:  # a textual-gradient propagator's note for this part
        shown.append(("feedback on this part", own.text, False))
    return Case(is_failure(fb), tuple(shown))


# -- reading replies ---------------------------------------------------------------------------


def _first_function(source: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), None)


def _header(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    returns = f" -> {ast.unparse(fn.returns)}" if fn.returns is not None else ""
    prefix = "async def" if isinstance(fn, ast.AsyncFunctionDef) else "def"
    return f"{prefix} {fn.name}({ast.unparse(fn.args)}){returns}:"


def _parse_code(source: str) -> tuple[str, ast.Module] | None:
    """The code in ``source`` from its first code-like line on, trailing prose cut off; ``None`` if none parses."""
    lines = textwrap.dedent(source).strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return None
    lines = lines[start:]
    for end in range(len(lines), max(0, len(lines) - 40), -1):
        chunk = textwrap.dedent("\n".join(lines[:end])).strip("\n")
        try:
            tree = ast.parse(chunk)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in _defs(tree)):
            return chunk, tree
    return None


def _defs(tree: ast.Module) -> list[ast.stmt]:
    """The top-level statements of ``tree`` and those of its top-level classes."""
    inner = [m for n in tree.body if isinstance(n, ast.ClassDef) for m in n.body]
    return [*tree.body, *inner]


def _lift_method(source: str, tree: ast.Module, target: str) -> tuple[str, ast.Module] | None:
    """A method ``target`` written inside a class, as a function (with the module's imports); else ``None``."""
    lines = source.splitlines()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name == target:
                imports = [
                    "\n".join(lines[n.lineno - 1 : n.end_lineno])
                    for n in tree.body
                    if isinstance(n, ast.Import | ast.ImportFrom)
                ]
                method = textwrap.dedent("\n".join(lines[fn.lineno - 1 : fn.end_lineno]))
                lifted = "\n".join([*imports, method])
                try:
                    return lifted, ast.parse(lifted)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    return None
    return None


def _wrap_body(source: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ast.Module] | None:
    """A reply holding only a function body, put under the current function's ``def`` line; else ``None``."""
    body = textwrap.dedent(source).strip("\n")
    if not re.search(r"^\s*return\b", body, re.MULTILINE):
        return None
    wrapped = f"{_header(fn)}\n{textwrap.indent(body, '    ')}"
    try:
        return wrapped, ast.parse(wrapped)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _calls_any(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names for n in ast.walk(node))


def _missing_imports(tree: ast.Module) -> list[str]:
    """Standard modules the code uses as ``module.attr`` but never imports or binds."""
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            used.add(node.value.id)
    return sorted(m for m in used - bound if m in sys.stdlib_module_names and not m.startswith("_"))


def _clean_code(source: str, tree: ast.Module) -> str:
    """Imports, definitions and constants of ``source``; example calls, prints and decorators dropped.

    Standard modules used but not imported get an ``import`` line (small models often forget one).
    """
    lines = source.splitlines()
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    kept: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            start = stmt.lineno  # the def line: decorators (@bundle, @staticmethod, ...) are left out
        elif isinstance(stmt, ast.Import | ast.ImportFrom) or (
            isinstance(stmt, ast.Assign | ast.AnnAssign) and not _calls_any(stmt, defined)
        ):
            start = stmt.lineno
        else:
            continue  # example calls, prints, `if __name__ == "__main__":` blocks
        kept.append("\n".join(lines[start - 1 : stmt.end_lineno]))
    imports = [f"import {m}" for m in _missing_imports(tree)]
    return "\n".join([*imports, *kept])


def read_code(reply: str, current: str) -> str:
    """The function in a rewrite reply: a fenced block or the whole reply, cleaned up.

    The block defining the current function's name is preferred; prose around the code, example
    calls, decorators and a forgotten import of a standard module are handled (see
    :func:`_clean_code`), and so are the function written as a method inside a class, and a
    fenced body without its ``def`` line (it is put under the current one). Raises
    :class:`~feedprop.errors.SuggestionError` when no function parses. The name and parameters
    are checked afterwards, by the optimizer's validation.

    Example:
        >>> reply = "Here it is:\\n```python\\ndef f(text):\\n    return re.findall(r'\\\\d+', text)[-1]\\n```\\nDone."
        >>> print(read_code(reply, "def f(text):\\n    return text"))
        import re
        def f(text):
            return re.findall(r'\\d+', text)[-1]
    """
    fn = _first_function(current)
    target = fn.name if fn is not None else None
    fenced = [m.group(1) for m in _FENCED.finditer(reply)]
    fallback: tuple[str, ast.Module] | None = None
    for source in [*fenced, reply]:
        parsed = _parse_code(source)
        if parsed is None:
            continue
        names = {n.name for n in parsed[1].body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if target is None or target in names:
            return _clean_code(*parsed)
        lifted = _lift_method(*parsed, target)
        if lifted is not None:
            return _clean_code(*lifted)
        fallback = fallback or parsed
    if fallback is not None:
        return _clean_code(*fallback)  # the wrong function: validation says which one is expected
    for source in fenced or [reply]:
        wrapped = _wrap_body(source, fn) if fn is not None else None
        if wrapped is not None:
            return _clean_code(*wrapped)
    raise SuggestionError(
        "the reply holds no Python function that parses; write the whole function in one ```python block"
    )


def _strip_quotes(text: str) -> str:
    for delimiter in ('"""', "'''"):  # an opening triple quote on its own line that nothing closes
        if text.count(delimiter) == 1 and (text.startswith(delimiter + "\n") or text.endswith("\n" + delimiter)):
            text = text.replace(delimiter, "", 1).strip()
    for _ in range(3):
        for open_, close in _QUOTES:
            if len(text) >= len(open_) + len(close) and text.startswith(open_) and text.endswith(close):
                text = text[len(open_) : -len(close)].strip()
                break
        else:
            return text
    return text


def read_text(reply: str) -> str:
    """The new text in a rewrite reply: fences, quotes, preambles and "Instruction:" prefixes removed.

    Raises :class:`~feedprop.errors.SuggestionError` when nothing is left.

    Example:
        >>> read_text('Sure! Here is the improved instruction:\\n\\n"Count each item, then answer with the number."')
        'Count each item, then answer with the number.'
        >>> read_text("**New instruction:** Answer briefly.\\n\\nExplanation: shorter answers parse.")
        'Answer briefly.'
    """
    text = reply.strip()
    blocks = [m.group(1).strip() for m in _FENCED.finditer(text) if m.group(1).strip()]
    if blocks:
        text = blocks[0]
    for _ in range(3):
        for pattern in (_CHATTER, _LEAD):
            match = pattern.match(text)
            if match and text[match.end() :].strip():
                text = text[match.end() :].strip()
    text = _PREFIX.sub("", text, count=1).strip()
    paragraphs = re.split(r"\n\s*\n", text)
    while len(paragraphs) > 1 and _AFTERWORD.match(paragraphs[-1]):
        paragraphs.pop()
    text = _strip_quotes("\n\n".join(paragraphs).strip())
    if not text:
        raise SuggestionError("the reply holds no text; write only the new text")
    return text


# -- the optimizer --------------------------------------------------------------------------------


def _messages(user: str) -> list[Message]:
    return [Message(role="system", content=template("reflect_system").strip()), Message(role="user", content=user)]


class Reflect(Optimizer):
    """Diagnose the failures of one parameter, then sample plain rewrites from the diagnosis.

    For text and code parameters only (a demonstrations parameter is chosen by
    ``BootstrapDemos``; numbers and JSON values by :class:`~feedprop.optim.OptoPrime`). The
    algorithm is in the module docstring. Each step costs ``1 + n_candidates`` model calls per
    parameter touched, for at most ``params_per_step`` parameters that received failing
    feedback; code parameters come first in the rotation (their candidates can be screened on
    recorded inputs without a model call), then text, each in the optimizer's order.

    Options: ``n_candidates`` rewrites per parameter (default 4, at ``candidate_temperature``);
    ``plain_share`` of them asked without the diagnosis (default 0.5: the last half of the
    samples); ``max_cases`` failing cases shown (default 3; a couple of passing ones are added to the
    diagnosis); ``params_per_step`` (default 1, round-robin across steps; ``None``: every
    parameter with failures); plus the common ``max_tokens`` (of a rewrite) and
    ``max_prompt_tokens`` (cases are shortened, then dropped, to fit). ``reply_format``,
    ``max_retries`` and ``json_schema`` do not apply: the replies are plain code or text.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Parameter
        >>> opt = Reflect([Parameter("Answer.", name="instruction")], llm=MockLLM("x"))
        >>> opt.defaults["n_candidates"], opt.defaults["plain_share"], opt.defaults["max_cases"]
        (4, 0.5, 3)
        >>> Reflect([Parameter(1.0, name="rate")], llm=MockLLM("x"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        feedprop.errors.ConfigurationError: Reflect takes text and code parameters; 'rate' is a number parameter...
    """

    OPTIONS: ClassVar[tuple[str, ...]] = ("max_cases", "params_per_step", "plain_share", "tips")
    KINDS: ClassVar[tuple[str, ...] | None] = REFLECT_KINDS
    OTHER_KINDS_HINT: ClassVar[str] = (
        "Give numbers and JSON values to OptoPrime (or Hindsight) and demonstrations to BootstrapDemos, each in its "
        "own optimizer, or use fp.optim.recommended()"
    )

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        n_candidates: int = 4,
        max_cases: int = 3,
        params_per_step: int | None = 1,
        plain_share: float = 0.5,
        tips: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            llm,
            n_candidates=n_candidates,
            max_cases=max_cases,
            params_per_step=params_per_step,
            plain_share=plain_share,
            tips=tips,
            **options,
        )
        self.conversation = Conversation(self)

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        check_int_option(options, "max_cases", 1)
        share = options.get("plain_share", 0.5)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ConfigurationError(f"plain_share must be a number from 0 to 1, got {share!r}")
        if not isinstance(options.get("tips", True), bool):
            raise ConfigurationError(f"tips must be True or False, got {options.get('tips')!r}")
        if options.get("params_per_step") is not None:
            check_int_option(options, "params_per_step", 1)

    # -- which parameters, which cases -------------------------------------------------------------

    def failing(self) -> list[str]:
        """The owned parameters whose feedback includes a failure, code first, then text."""
        owned = dict(self.named_parameters())
        order = sorted(owned, key=lambda n: kind_of(owned[n]) != "code")
        return [n for n in order if any(is_failure(_output_feedback(e)) for e in owned[n].feedback)]

    def choose(self) -> list[str]:
        """The parameters this step rewrites: ``params_per_step`` of :meth:`failing`, round-robin."""
        failing = self.failing()
        per_step = self.defaults["params_per_step"]
        if not failing:
            return []
        if per_step is None or len(failing) <= int(per_step):
            chosen = failing
        else:
            last = self.global_state.get("cursor")
            start = failing.index(last) + 1 if last in failing else 0
            chosen = (failing[start:] + failing[:start])[: int(per_step)]
        self.global_state["cursor"] = chosen[-1]
        return chosen

    def cases(self, name: str) -> tuple[list[Case], list[Case]]:
        """The distinct failing and passing cases in the feedback of the parameter called ``name``."""
        param = self.get_parameter(name)
        kind = kind_of(param)
        failing: list[Case] = []
        passing: list[Case] = []
        seen: set[str] = set()
        for entry in self.feedback_entries(name):
            case = _case(param, kind, entry)
            key = case.render(0, 1 << 30)
            if key not in seen:
                seen.add(key)
                (failing if case.failed else passing).append(case)
        return failing, passing

    # -- the prompts -----------------------------------------------------------------------------------

    def _what(self, name: str) -> str:
        if kind_of(self.get_parameter(name)) == "code":
            return "function"
        param = self.get_parameter(name)
        for entry in self.feedback_entries(name):
            node = _llm_node(getattr(entry, "subgraph", ()), param)
            if node is not None:
                keys = [k for k, v in node.inputs if v is param]
                if "system" in keys:
                    return "instruction"
                return "tool description" if any(k.startswith("tools[") for k in keys) else "prompt text"
        return "text"

    def _subject(self, name: str) -> str:
        param = self.get_parameter(name)
        kind = kind_of(param)
        role = f" ({param.description})" if param.description else ""
        value = str(param.data).strip("\n")
        if kind == "code":
            return fill("reflect_subject_code", role=role, value=value)
        return fill("reflect_subject_text", role=role, value=value, what=self._what(name))

    def _fit(self, name: str, build: Callable[[int, int, int], list[Message]]) -> list[Message]:
        """The first of :data:`_PLANS` whose messages fit ``max_prompt_tokens``, else the smallest (checked)."""
        failing, passing = self.cases(name)
        n_fail = min(len(failing), int(self.options(name)["max_cases"]))
        n_pass = min(len(passing), MAX_PASSING_CASES)
        limit = int(self.defaults["max_prompt_tokens"])
        messages: list[Message] = []
        for chars, fail_share, with_passing in _PLANS:
            fails = n_fail if fail_share >= 1 else min(n_fail, 1)
            messages = build(chars, fails, n_pass if with_passing else 0)
            if estimate_prompt_tokens(messages) <= limit:
                return messages
        self.conversation.check_prompt(messages)  # raises, saying to raise max_prompt_tokens
        return messages

    def _render_cases(self, cases: list[Case], chars: int) -> str:
        return "\n\n".join(case.render(i + 1, chars) for i, case in enumerate(cases)) or "(no cases recorded)"

    def diagnose_messages(self, name: str) -> list[Message]:
        """The messages of the diagnose call for the parameter called ``name``."""
        failing, passing = self.cases(name)
        code = kind_of(self.get_parameter(name)) == "code"

        def build(chars: int, fails: int, passes: int) -> list[Message]:
            user = fill(
                "reflect_diagnose",
                subject=self._subject(name),
                cases=self._render_cases(failing[:fails] + passing[:passes], chars),
                what=f"the {self._what(name)}",
                artifact="any code" if code else "the new text yet",
            )
            return _messages(user)

        return self._fit(name, build)

    def rewrite_messages(self, name: str, diagnosis: str | None, tip: str = "") -> list[Message]:
        """The messages of a rewrite call for the parameter called ``name``, given the ``diagnosis``
        (``None``: a plain rewrite, from the failing cases alone) and, for text, a ``tip`` on how
        to ask (see :meth:`tip`)."""
        failing, _ = self.cases(name)
        param = self.get_parameter(name)
        fn = _first_function(str(param.data)) if kind_of(param) == "code" else None
        shown_diagnosis = truncate_middle((diagnosis or "").strip() or "(no diagnosis)", MAX_DIAGNOSIS_CHARS)
        plain = "_plain" if diagnosis is None else ""

        def build(chars: int, fails: int, passes: int) -> list[Message]:
            cases = self._render_cases(failing[:fails], chars)
            if kind_of(param) == "code":
                user = fill(
                    "reflect_rewrite_code" + plain,
                    subject=self._subject(name),
                    cases=cases,
                    diagnosis=shown_diagnosis,
                    signature=_header(fn) if fn is not None else "the same def line as now",
                )
            else:
                user = fill(
                    "reflect_rewrite_text" + plain,
                    subject=self._subject(name),
                    cases=cases,
                    diagnosis=shown_diagnosis,
                    what=self._what(name),
                    tip=f"One way to try: {tip}\n\n" if tip else "",
                )
            return _messages(user)

        return self._fit(name, build)

    # -- the calls -------------------------------------------------------------------------------------

    def diagnose(self, name: str) -> str:
        """One call at temperature 0: what is wrong with the parameter ``name`` and what rule would fix it."""
        tokens = min(DIAGNOSIS_TOKENS, int(self.options(name)["max_tokens"]))
        return self.conversation.complete(self.diagnose_messages(name), temperature=0.0, max_tokens=tokens).text.strip()

    def plain_samples(self, name: str) -> range:
        """The sample numbers asked without the diagnosis: the last ``plain_share`` of the ``n_candidates``.

        Example:
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.node import Parameter
            >>> opt = Reflect([Parameter("Answer.", name="p")], llm=MockLLM("x"), n_candidates=5)
            >>> list(opt.plain_samples("p"))
            [3, 4]
        """
        opts = self.options(name)
        n = int(opts["n_candidates"])
        return range(n - int(n * float(opts["plain_share"])), n)

    def feeds_code(self, name: str) -> bool:
        """Whether the runs in the feedback of the text parameter ``name`` pass its call's reply on
        to trainable code (so a reply in a form that code reads is worth trying)."""
        for entry in self.feedback_entries(name):
            for node in getattr(entry, "subgraph", ()):
                code = node.info.get("code") if isinstance(node, MessageNode) and isinstance(node.info, dict) else None
                if isinstance(code, Parameter) and code.trainable:
                    return True
        return False

    def tip(self, name: str, sample: int) -> str:
        """The tip on how to ask that rewrite ``sample`` of the text parameter ``name`` is given ("" for none).

        Asked to fix an instruction from its failures, a small model writes the same instruction
        in other words ("Count the objects."); a tip makes some samples try another way of
        asking instead, as a sentence to add: reasoning first, the facts in a fixed form for code
        to work on, the answer alone in the expected form, a procedure (``reflect_tips``). Odd
        samples get one, rotating with each step that rewrites the parameter; even samples and
        code get none; ``tips=False`` turns them off. The tip to write the facts for code is
        given only where the reply goes on to trainable code.

        Example:
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.node import Parameter
            >>> opt = Reflect([Parameter("Answer.", name="p")], llm=MockLLM("x"))
            >>> [opt.tip("p", i).partition('"')[2][:28] for i in range(4)]
            ['', 'Think step by step, then wri', '', 'Reply with the final answer ']
        """
        param = self.get_parameter(name)
        if sample % 2 == 0 or kind_of(param) == "code" or not self.options(name)["tips"]:
            return ""
        code = self.feeds_code(name)
        tips = [
            line.removeprefix("code:").strip()
            for line in template("reflect_tips").splitlines()
            if line.strip() and (code or not line.startswith("code:"))
        ]
        n = int(self.options(name)["n_candidates"])
        rounds = int(self.state[name].get("rounds", 0))
        return tips[(rounds * ((n + 1) // 2) + sample // 2) % len(tips)]

    def rewrite(self, name: str, diagnosis: str, sample: int) -> str:
        """Rewrite call number ``sample`` (its ``cache_salt``): the model's reply, unread.

        Samples in :meth:`plain_samples` are asked without the diagnosis; odd text samples get a
        :meth:`tip` on how to ask.
        """
        opts = self.options(name)
        plain = sample in self.plain_samples(name)
        messages = self.rewrite_messages(name, None if plain else diagnosis, self.tip(name, sample))
        return self.conversation.complete(
            messages,
            temperature=float(opts["candidate_temperature"]),
            max_tokens=int(opts["max_tokens"]),
            cache_salt=sample,
        ).text

    def read_rewrite(self, name: str, reply: str) -> Any:
        """The validated new value in a rewrite ``reply``; :class:`~feedprop.errors.SuggestionError` if none.

        A value equal to the current one is returned as it is (:meth:`_propose` refuses it).
        """
        param = self.get_parameter(name)
        if kind_of(param) == "code":
            return self.validate(name, read_code(reply, str(param.data)))
        value = read_text(reply)
        if _first_function(value) is not None and _first_function(str(param.data)) is None:
            # Small models asked for an instruction sometimes answer with the function they would write.
            raise SuggestionError(f"the reply is Python code, but {name} is text; write the new text itself")
        echoed = copied_passage(value, [*fixed_text(*_TEXT_PROMPTS), *_tip_directions()], current=str(param.data))
        if echoed is not None:
            raise SuggestionError(
                f"the reply repeats the request it was given ({truncate_middle(echoed, 60)!r}); "
                f"write only the new {name} itself"
            )
        return self.validate(name, value)

    def _propose(self) -> Proposal:
        proposal = Proposal()
        for name in self.choose():
            self._propose_for(name, proposal)
        return proposal

    def _propose_for(self, name: str, proposal: Proposal) -> None:
        param = self.get_parameter(name)
        kind = kind_of(param)
        state = self.state[name]
        if state.get("base") != fingerprint(param.data, kind):  # the value moved on: earlier refusals are moot
            state["base"] = fingerprint(param.data, kind)
            state["tried"] = []
        tried: list[str] = state["tried"]
        diagnosis = self.diagnose(name)
        proposal.replies.append(diagnosis)
        n = int(self.options(name)["n_candidates"])

        def sample(i: int) -> str:
            return self.rewrite(name, diagnosis, i)

        replies = thread_map(sample, range(n), max_workers=n) if n > 1 else [sample(0)]
        kept: list[str] = []
        for i, reply in enumerate(replies):
            proposal.replies.append(reply)
            try:
                value = self.read_rewrite(name, reply)
            except SuggestionError as e:
                proposal.rejected.append(Rejection(name, truncate_middle(reply, MAX_REFUSED_CHARS), str(e), name))
                continue
            key = fingerprint(value, kind)
            shown = truncate_middle(str(value), MAX_REFUSED_CHARS)
            if key == state["base"]:
                proposal.rejected.append(Rejection(name, shown, "the rewrite is the current value unchanged", name))
                continue
            if key in kept:  # an earlier sample of this step wrote the same
                continue
            if key in tried:  # proposed at an earlier step from this same value, and it is still this value
                reason = "this rewrite was proposed at an earlier step and not accepted"
                proposal.rejected.append(Rejection(name, shown, reason, name))
                continue
            kept.append(key)
            extras = {"parameter": name, "sample": i, "tip": bool(self.tip(name, i))}
            proposal.candidates.append(Candidate({name: value}, diagnosis, extras))
        tried.extend(kept)
        del tried[: max(0, len(tried) - MAX_TRIED)]
        state["diagnosis"] = truncate_middle(diagnosis, MAX_DIAGNOSIS_CHARS)
        state["rounds"] = int(state.get("rounds", 0)) + 1
