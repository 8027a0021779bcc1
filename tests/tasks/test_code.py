"""MBPP and HumanEval: id-based splits, and canonical solutions passing their own tests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from feedprop.tasks import MBPP_KNOWN_ISSUES, Example, load_humaneval, load_mbpp, reference_solution


def _number(example: Example) -> int:
    return int(str(example.meta["task_id"]).split("/")[1])


def test_mbpp_splits_by_id() -> None:
    task = load_mbpp()
    assert [_number(e) for e in task.few_shot] == list(range(1, 11))
    assert [_number(e) for e in task.test] == list(range(11, 511))
    assert [_number(e) for e in task.val] == list(range(511, 601))
    assert [_number(e) for e in task.train] == list(range(601, 975))
    first = task.test[0]
    assert first.meta["entry_point"] == "remove_Occ" and "def remove_Occ" in first.input
    assert set(first.target) == {"test", "entry_point", "prompt"}


def test_mbpp_canonical_solutions_pass_and_a_broken_one_fails() -> None:
    task = load_mbpp()
    sample = [*task.test[:6], task.val[0], task.train[1], task.few_shot[0]]  # (train[0], MBPP/601, is broken)
    for example in sample:
        fb = task.guide(reference_solution(example), example.target, example=example)
        assert fb.score == 1.0, (example.meta["task_id"], fb.text)
    remove_occ = task.test[0]
    broken = remove_occ.meta["prompt"] + "    return s[1:-1]\n"
    fb = task.guide(broken, remove_occ.target)
    assert fb.score == 0.0
    assert fb.text == "Failed test `assert candidate('hello', 'l') == 'heo'`; the code returned 'ell'."


def test_mbpp_model_style_reply_is_scored() -> None:
    task = load_mbpp()
    example = task.test[0]
    reply = (
        "Here is the function:\n```python\ndef remove_Occ(s, ch):\n"
        "    i = s.find(ch)\n    if i != -1:\n        s = s[:i] + s[i + 1:]\n"
        "    j = s.rfind(ch)\n    if j != -1:\n        s = s[:j] + s[j + 1:]\n    return s\n```"
    )
    assert task.guide(reply, example.target).score == 1.0


def test_mbpp_known_issues_are_flagged() -> None:
    task = load_mbpp()
    flagged = {
        e.meta["task_id"] for e in (*task.few_shot, *task.train, *task.val, *task.test) if "known_issue" in e.meta
    }
    assert flagged == set(MBPP_KNOWN_ISSUES)


def test_humaneval_loads_all_problems_as_test() -> None:
    task = load_humaneval()
    assert (len(task.train), len(task.val), len(task.test)) == (0, 0, 164)
    assert [e.meta["task_id"] for e in task.test[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for example in task.test[:5]:
        assert task.guide(reference_solution(example), example.target).score == 1.0
    first = task.test[0]
    fb = task.guide(first.meta["prompt"] + "    return False\n", first.target)
    assert fb.score == 0.0 and fb.text.startswith("Failed test `assert candidate(")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # in some canonical solutions
def test_every_canonical_solution_passes_except_the_known_issues() -> None:
    # A generous timeout: this checks the data and the harness, not speed (MBPP/123 takes seconds).
    mbpp, humaneval = load_mbpp(timeout=60), load_humaneval(timeout=60)
    jobs = [(mbpp, e) for e in (*mbpp.few_shot, *mbpp.train, *mbpp.val, *mbpp.test)]
    jobs += [(humaneval, e) for e in humaneval.test]
    with ThreadPoolExecutor(2) as pool:
        scores = list(pool.map(lambda job: job[0].guide(reference_solution(job[1]), job[1].target).score, jobs))
    failed = {e.meta["task_id"] for (_, e), score in zip(jobs, scores, strict=True) if score != 1.0}
    assert failed == set(MBPP_KNOWN_ISSUES)
