"""A scripted OpenAI-compatible endpoint for the smoke run: deterministic, instant, no model.

It stands where the llama.cpp server stands in a real run (behind the counting proxy), so the
smoke run goes through the same code as a real one: the same clients, proxy, budget checks,
loops, scoring and result files. What it answers is scripted from the request alone:

- an optimizer request gets a well-formed reply in the format that optimizer asked for (an
  OptoPrime JSON suggestion for every variable it lists, a textgrad ``<IMPROVED_VARIABLE>``, a
  DSPy field-marker or JSON-object reply (GEPA's reflection asks for one), or a sentence of
  textual gradient), each proposing :data:`GOOD_PROMPT`;
- a student request whose question is one of the known ``answers`` is answered correctly when
  the system prompt contains :data:`MAGIC` (which :data:`GOOD_PROMPT` does), and wrongly otherwise.

So a system that carries the optimizer's proposal into its prompt improves, and one that loses
it does not: the smoke run checks the plumbing, not anyone's optimizer.

Example:
    >>> fake = FakeEndpoint({"How many legs has a cat?": "4"})
    >>> question = {"role": "user", "content": "How many legs has a cat?"}
    >>> fake.reply([{"role": "system", "content": GOOD_PROMPT}, question])
    'Counting carefully: 4. The answer is 4.'
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["GOOD_PROMPT", "MAGIC", "MODEL_NAME", "FakeEndpoint"]

MODEL_NAME = "fake-model"
MAGIC = "carefully"
GOOD_PROMPT = "Work through the question carefully, then finish with: The answer is <answer>."

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")
_VARIABLE = re.compile(r"^\((\w+)\)\s*([\w:.\[\]-]+)\s*=", re.MULTILINE)
_LEGAL = re.compile(r"You may change only these variables: (.+)")
_JSON_FIELDS = re.compile(r'"(\w+)": "\{\1\}"')


def _text(messages: list[dict[str, Any]], role: str) -> str:
    parts = []
    for m in messages:
        if m.get("role") == role:
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
    return "\n".join(parts)


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class FakeEndpoint:
    """The scripted endpoint; :meth:`start` serves it on a loopback port (``base_url`` ends in ``/v1``)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = {q.strip(): str(a) for q, a in answers.items()}
        self.calls = 0
        self.requests: list[dict[str, Any]] = []  # every chat request received, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- the script --------------------------------------------------------------------------

    def _student(self, question: str, system: str) -> str | None:
        target = self.answers.get(question.strip())
        if target is None:
            return None
        if MAGIC in system:
            return f"Counting carefully: {target}. The answer is {target}."
        wrong = str(int(target) + 1) if target.lstrip("-").isdigit() else "none of them"
        return f"I think it is {wrong}."

    def _dspy(self, system: str, user: str) -> str:
        inputs, _, asked = user.partition("Respond with the corresponding output fields")
        fields = [f for f in _FIELD.findall(asked) if f != "completed"]
        question = ""
        match = re.search(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n\[\[ ## |\Z)", inputs, re.DOTALL)
        if match:
            question = match.group(1).strip()
        answer = self._student(question, system) or "ok"
        out = []
        for name in fields or ["answer"]:
            if "instruction" in name:
                value = GOOD_PROMPT
            elif "prefix" in name:
                value = "Answer:"
            elif name == "reasoning":
                value = "Let me count the items one by one."
            elif name in ("answer", "completion"):
                value = answer
            else:
                value = "The task asks short questions with numeric answers."
            out.append(f"[[ ## {name} ## ]]\n{value}")
        return "\n\n".join(out) + "\n\n[[ ## completed ## ]]"

    def reply(self, messages: list[dict[str, Any]]) -> str:
        """The scripted reply to a chat request."""
        system, user = _text(messages, "system"), _last_user(messages)
        everything = system + "\n" + _text(messages, "user")
        if "Outputs will be a JSON object with the following fields" in system:
            fields = _JSON_FIELDS.findall(system.split("Outputs will be a JSON object", 1)[1])
            return json.dumps({name: GOOD_PROMPT if "instruction" in name else "ok" for name in fields or ["answer"]})
        if "[[ ## completed ## ]]" in everything:
            return self._dspy(system, user)
        if "<IMPROVED_VARIABLE>" in everything:
            return f"<IMPROVED_VARIABLE>{GOOD_PROMPT}</IMPROVED_VARIABLE>"
        if "#Variables" in everything and "suggestion" in everything:
            legal = _LEGAL.search(user)
            names = [n.strip() for n in legal.group(1).split(",")] if legal else []
            if not names:
                block = everything.rsplit("#Variables", 1)[1].split("\n#", 1)[0]
                names = [name for kind, name in _VARIABLE.findall(block) if kind in ("str", "text")]
            return json.dumps(
                {
                    "reasoning": "The answers are wrong; ask for care.",
                    "suggestion": {name: GOOD_PROMPT for name in names},
                }
            )
        answer = self._student(user, system)
        if answer is not None:
            return answer
        return f"The system prompt should ask the model to work {MAGIC} and end with the answer."

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                messages = request.get("messages") or []
                text = fake.reply(messages)
                with fake._lock:
                    fake.calls += 1
                    fake.requests.append(request)
                prompt_chars = sum(len(json.dumps(m.get("content", ""))) for m in messages)
                self._send(
                    200,
                    {
                        "id": f"fake-{fake.calls}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request.get("model", MODEL_NAME),
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {
                            "prompt_tokens": max(1, prompt_chars // 4),
                            "completion_tokens": max(1, len(text) // 4),
                            "total_tokens": max(1, prompt_chars // 4) + max(1, len(text) // 4),
                        },
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-endpoint", daemon=True).start()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("call start() first")
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
