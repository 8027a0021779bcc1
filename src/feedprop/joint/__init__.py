"""Joint optimization of prompts and model weights.

The weights side of feedprop: a :class:`Student` is the embedded llama.cpp model with a LoRA
adapter that is a parameter of the workflow; :func:`alternate` runs prompt phases (any feedprop
optimizer) and weight phases (LoRA fine-tuning with peft on the workflow's own successful
traces, exported to GGUF and loaded back into the engine) in the order a strategy string such
as ``"p -> w -> p"`` names; :class:`SoftPromptLoRA` trains a soft prompt and LoRA weights
together from one loss.

Importing this package does not import torch; the features that train weights need the
``joint`` extra (``pip install 'feedprop[joint]'``) and import it when first used.

Example:
    >>> from feedprop.joint import parse_strategy, LoRAConfig
    >>> parse_strategy("p -> w -> p"), LoRAConfig().targets
    (['p', 'w', 'p'], ('q_proj', 'v_proj'))
"""

from feedprop.joint._deps import INSTALL_HINT, available
from feedprop.joint.finetune import FinetuneConfig, FinetuneResult, LoRAConfig, finetune_lora
from feedprop.joint.gguf_adapter import GGUFAdapter, read_adapter, write_adapter
from feedprop.joint.sft import SFTExample
from feedprop.joint.soft_prompt import SoftPromptLLM, SoftPromptLoRA
from feedprop.joint.strategy import JointResult, PhaseResult, WeightOptions, alternate, find_student, parse_strategy
from feedprop.joint.student import Rollout, Student
from feedprop.joint.torch_model import TorchBase, load_base
from feedprop.joint.traces import Harvest, collect_examples, llm_calls

__all__ = [
    "INSTALL_HINT",
    "FinetuneConfig",
    "FinetuneResult",
    "GGUFAdapter",
    "Harvest",
    "JointResult",
    "LoRAConfig",
    "PhaseResult",
    "Rollout",
    "SFTExample",
    "SoftPromptLLM",
    "SoftPromptLoRA",
    "Student",
    "TorchBase",
    "WeightOptions",
    "alternate",
    "available",
    "collect_examples",
    "find_student",
    "finetune_lora",
    "llm_calls",
    "load_base",
    "parse_strategy",
    "read_adapter",
    "write_adapter",
]
