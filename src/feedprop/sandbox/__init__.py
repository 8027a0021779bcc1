"""Where trainable code runs.

A trainable function's source is data that an optimizer rewrites, so running it means
compiling a string. An :class:`Executor` does that: it defines the function ``name`` from
``source`` and calls it. Every failure of the code comes back as :class:`CodeFailure`, whose
``lineno`` points into ``source`` so feedback can name the failing line.

* :class:`SandboxExecutor` (the default, see :func:`default_executor`) runs the code in a warm
  worker process with a wall-clock timeout, memory, CPU-time and process limits, no network, a
  scrubbed environment and a private working directory. Arguments and results cross as JSON.
  :func:`run_unit_tests`, which the :class:`~feedprop.training.UnitTest` guide calls, runs code
  under test through it too.
* :class:`InProcessExecutor` runs the code inside this interpreter: fast, any Python object
  crosses, but only for code you trust. Choose it explicitly with
  ``set_default_executor(InProcessExecutor())``.

Code that an optimizer rewrote sees only what the user's original code used: :func:`withhold`
narrows the caller's globals and ``self`` before any executor runs it, so a secret such as a
module-level ``API_KEY`` or ``self.api_key`` that the original never read never reaches it.

SECURITY.md says what the sandbox guarantees and what it does not. This package is the public
entry; the modules inside it are private: ``executor`` (the protocol, in-process execution),
``sandbox_executor``, ``pool`` and ``default`` (the sandboxed executor, its warm workers, the
process-wide default), ``failure`` (how a failure is told), ``boundary`` (what crosses),
``process`` and ``namespaces`` (one worker process and its isolation), ``worker`` (the script a
worker runs, and the JSON codec), ``unit_tests`` and ``harness`` (unit tests as one sandboxed call).

Example:
    >>> ex = InProcessExecutor()
    >>> ex.run("def double(x):\\n    return 2 * x\\n", "double", (21,), {}, {})
    42
"""

from feedprop.sandbox.boundary import Withheld, WithheldSelf, withhold
from feedprop.sandbox.default import default_executor, set_default_executor
from feedprop.sandbox.executor import Executor, InProcessExecutor
from feedprop.sandbox.failure import CodeFailure
from feedprop.sandbox.pool import SandboxWeakWarning
from feedprop.sandbox.sandbox_executor import SandboxExecutor
from feedprop.sandbox.unit_tests import run_unit_tests
from feedprop.sandbox.worker import CODE_FILENAME

__all__ = [
    "CODE_FILENAME",
    "CodeFailure",
    "Executor",
    "InProcessExecutor",
    "SandboxExecutor",
    "SandboxWeakWarning",
    "Withheld",
    "WithheldSelf",
    "default_executor",
    "run_unit_tests",
    "set_default_executor",
    "withhold",
]
