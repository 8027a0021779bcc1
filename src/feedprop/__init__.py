"""feedprop: train AI workflows end to end, the way PyTorch trains neural networks.

A workflow is ordinary Python. Running it records a graph; feedback (a score, an error, a
failing test, a sentence of critique) flows backwards through it; an optimizer rewrites the
trainable parameters: prompts, code, numbers and structured values.

Example:
    >>> import feedprop as fp
    >>> class Greeter(fp.Module):
    ...     def __init__(self):
    ...         self.greeting = fp.Parameter("Hello", description="how to greet")
    ...     def forward(self, name):
    ...         return self.greeting + ", " + name
    >>> model = Greeter()
    >>> out = model("Ada")
    >>> out.data
    'Hello, Ada'
    >>> out.backward("Too formal: greet like a friend.")
    >>> reply = '{"reasoning": "be casual", "suggestion": {"greeting": "Hi"}}'
    >>> opt = fp.optim.OptoPrime(model.parameters(), llm=fp.llm.MockLLM(reply))
    >>> _ = opt.step()
    >>> model("Ada").data
    'Hi, Ada'
"""

from feedprop import agent, llm, node, ops, optim, tasks
from feedprop.agent import arun_agent, run_agent
from feedprop.bundle import bundle
from feedprop.errors import (
    BudgetExhausted,
    ConfigurationError,
    ExecutionError,
    FeedbackWarning,
    FeedpropError,
    InvalidInputError,
    LLMError,
    StateDictError,
)
from feedprop.llm import LLM, Completion, LocalModel, MockLLM, OpenAICompatible, track_usage
from feedprop.module import Module
from feedprop.node import Demos, ExceptionNode, Feedback, MessageNode, Node, Parameter
from feedprop.sandbox import InProcessExecutor, SandboxExecutor, set_default_executor
from feedprop.tasks import Example, Task
from feedprop.tool import Tool
from feedprop.tracing import name_scope, no_trace
from feedprop.training import (
    Budget,
    Evaluation,
    ExactMatch,
    Guide,
    LLMJudge,
    MultipleChoice,
    Numeric,
    TrainResult,
    UnitTest,
    evaluate,
    train,
)

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "Budget",
    "BudgetExhausted",
    "Completion",
    "ConfigurationError",
    "Demos",
    "Evaluation",
    "ExactMatch",
    "Example",
    "ExceptionNode",
    "ExecutionError",
    "Feedback",
    "FeedbackWarning",
    "FeedpropError",
    "Guide",
    "InProcessExecutor",
    "InvalidInputError",
    "LLMError",
    "LLMJudge",
    "LocalModel",
    "MessageNode",
    "MockLLM",
    "Module",
    "MultipleChoice",
    "Node",
    "Numeric",
    "OpenAICompatible",
    "Parameter",
    "SandboxExecutor",
    "StateDictError",
    "Task",
    "Tool",
    "TrainResult",
    "UnitTest",
    "agent",
    "arun_agent",
    "bundle",
    "evaluate",
    "llm",
    "name_scope",
    "no_trace",
    "node",
    "ops",
    "optim",
    "run_agent",
    "set_default_executor",
    "tasks",
    "track_usage",
    "train",
]
