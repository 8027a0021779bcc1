"""TrainConfig: one checked set of run options, shared by the run, its fingerprint and its report."""

from __future__ import annotations

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.training import Budget, TrainConfig


def test_beam_width_above_one_means_beam_search() -> None:
    assert TrainConfig().strategy == "greedy"
    assert TrainConfig(beam_width=3).strategy == "beam"
    assert TrainConfig(search="pareto").strategy == "pareto"
    assert TrainConfig(search="pareto").needs_validation and TrainConfig(beam_width=2).needs_validation
    assert not TrainConfig().needs_validation


def test_a_bad_search_name_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="'beam', 'greedy', 'pareto'"):
        TrainConfig(search="anneal")
    with pytest.raises(InvalidInputError, match="search must be a name"):
        TrainConfig(search=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="drop one of them"):
        TrainConfig(search="pareto", beam_width=2)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"epochs": 0}, ConfigurationError, "epochs must be >= 1"),
        ({"batch_size": 1.5}, InvalidInputError, "batch_size must be an int"),
        ({"merge_every": -1}, ConfigurationError, "merge_every must be >= 0"),
        ({"seed": True}, InvalidInputError, "seed must be an int"),
        ({"budget": {"calls": 3}}, InvalidInputError, "fp.Budget"),
    ],
)
def test_bad_options_are_typed_errors(options: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TrainConfig(**options)  # type: ignore[arg-type]


def test_the_fingerprint_leaves_out_what_may_change_between_sessions() -> None:
    config = TrainConfig(budget=Budget(calls=9), max_workers=2, progress=False)
    fingerprint = config.fingerprint()
    assert fingerprint["budget"]["calls"] == 9 and fingerprint["search"] == "greedy"
    assert not {"max_workers", "progress", "plot", "merge_every"} & set(fingerprint)
    assert TrainConfig(search="pareto", merge_every=5).fingerprint()["merge_every"] == 5
    assert config.to_dict()["max_workers"] == 2 and config.to_dict()["progress"] is False


def test_test_workers_is_a_session_option() -> None:
    assert TrainConfig(test_workers=1).to_dict()["test_workers"] == 1
    assert "test_workers" not in TrainConfig(test_workers=1).fingerprint(), "old checkpoints resume with it"
    with pytest.raises(ConfigurationError, match="test_workers must be >= 1"):
        TrainConfig(test_workers=0)
    with pytest.raises(InvalidInputError, match="test_workers must be an int"):
        TrainConfig(test_workers=True)  # type: ignore[arg-type]
