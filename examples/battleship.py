"""A Battleship policy whose ``reason`` and ``act`` functions are trainable code.

The environment is a small deterministic Battleship: a square board (6x6 by default) with ships
of lengths 3 and 2 placed from a seed. The policy sees the board as text rows (``.`` unknown,
``X`` hit, ``o`` miss) and gets a fixed number of shots. Each shot calls two bundled methods:

- ``reason(board)``: ordinary Python that analyses the board (the starting version lists the
  unknown cells);
- ``act(board, analysis)``: picks the cell to shoot as ``[row, col]`` (the starting version takes
  the first unknown cell, a row-by-row sweep).

Both functions' *source code* is a trainable parameter. A game's output is the list of moves; the
guide replays it on the seeded board and feeds back what the environment said: hits, misses,
invalid moves (off the board, repeated, malformed) and ships sunk. ``fp.train`` trains over games
on training seeds and the policy is tested on unseen boards.

The optimizer is :func:`feedprop.optim.recommended`, which gives code parameters to ``Reflect``:
each step, for one function (``act`` first, then ``reason``, in turn), one call diagnoses the
failing games and ``--n-candidates`` calls each write a whole new function.
``fp.train(search="pareto")`` screens every candidate on the minibatch's boards first; the
policy makes no LLM call, so screening costs no model call at all (and there are no
demonstrations to learn), and only candidates that beat their parent there are played on the
validation boards. ``--optimizer optoprime`` runs the earlier setup (OptoPrime, greedy search),
for a before/after comparison.

Run it (default model: the embedded one; ``FEEDPROP_BASE_URL`` points it elsewhere)::

    .venv/bin/python examples/battleship.py                          # real model
    .venv/bin/python examples/battleship.py --optimizer optoprime    # the earlier optimizer
    .venv/bin/python examples/battleship.py --mock                   # scripted model, seconds

Expected output: the share of ship cells found on unseen boards before -> after, the moves of
one test game drawn as a board, and the learned code. With ``--mock`` the scripted optimizer
diagnoses the sweep and rewrites ``act`` to hunt and target (shoot next to hits, else a
checkerboard sweep), so the score on unseen boards goes up; that is the plumbing, not the
model's skill.

Measured with the new default (``recommended`` + ``search="pareto"``, the embedded 1.5B model,
defaults: 6x6, 14 shots, 4 train / 4 val / 8 test boards, 2 steps; commit 8d184d3, 2026-12-03,
4 minutes): ship cells found on unseen boards 38% -> 38%, validation 20% -> 20%, no update
accepted. Screening cost no model call, as designed, and threw out every candidate: the
diagnosis blamed the wrong thing ("return the cell that is unknown, not the first one"; "only
return the cells that are not part of the ships"), so the four rewrites of ``reason`` each scored 0
on the minibatch and the ``act`` rewrites repeated the sweep.
Again at dd10e67 (2026-12-05, response cache off, quiet machine, 2.9 minutes), where half of the
rewrites are asked without the diagnosis: 38% -> 38%, validation 20% -> 20%, no update accepted.
Step 1's four ``act`` rewrites scored 0 or tied their parent on the minibatch (one returned the
first unknown cell again, one used ``self.ship_cells``, which the policy does not have); step
2's two ``reason`` rewrites scored 0. The follow-ups do not act here: no model call writes text
that code reads, both parameters are code.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedprop import llm as llm_module
from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import InvalidInputError
from feedprop.module import Module
from feedprop.node import Feedback, Node
from feedprop.optim import Optimizer, OptoPrime, recommended
from feedprop.training import Budget, Guide, TrainResult, train


@dataclass(frozen=True)
class Rules:
    """Board size, ship lengths and shots per game."""

    size: int = 6
    ships: tuple[int, ...] = (3, 2)
    shots: int = 14


class Board:
    """A seeded Battleship board; ``shoot`` answers "hit", "sunk", "miss" or "invalid: <why>".

    Example:
        >>> board = Board(seed=1, rules=Rules(size=4, ships=(2,), shots=16))
        >>> sorted({board.shoot(r, c).split(":")[0] for r in range(4) for c in range(4)})
        ['hit', 'miss', 'sunk']
        >>> board.all_sunk, board.shoot(0, 0)
        (True, 'invalid: (0, 0) was already shot')
    """

    def __init__(self, seed: int, rules: Rules = Rules()) -> None:
        if any(length > rules.size for length in rules.ships):
            raise InvalidInputError(f"every ship must fit on the board: ships {rules.ships}, size {rules.size}")
        self.rules = rules
        self.ships: list[set[tuple[int, int]]] = []
        rng = random.Random(seed)
        taken: set[tuple[int, int]] = set()
        for length in rules.ships:
            while True:
                horizontal = rng.random() < 0.5
                r = rng.randrange(rules.size - (0 if horizontal else length - 1))
                c = rng.randrange(rules.size - (length - 1 if horizontal else 0))
                cells = {(r, c + i) if horizontal else (r + i, c) for i in range(length)}
                if not cells & taken:
                    break
            self.ships.append(cells)
            taken |= cells
        self.shot: dict[tuple[int, int], str] = {}

    @property
    def all_sunk(self) -> bool:
        return all(ship <= self.shot.keys() for ship in self.ships)

    def view(self) -> list[str]:
        """The board as the player sees it: one string per row."""
        n = self.rules.size
        return ["".join(self.shot.get((r, c), ".") for c in range(n)) for r in range(n)]

    def shoot(self, row: Any, col: Any) -> str:
        n = self.rules.size
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (row, col)):
            return f"invalid: a move is [row, col] with two ints, got {[row, col]!r}"
        if not (0 <= row < n and 0 <= col < n):
            return f"invalid: ({row}, {col}) is off the {n}x{n} board"
        if (row, col) in self.shot:
            return f"invalid: ({row}, {col}) was already shot"
        ship = next((s for s in self.ships if (row, col) in s), None)
        self.shot[(row, col)] = "X" if ship else "o"
        if ship is None:
            return "miss"
        return "sunk" if ship <= self.shot.keys() else "hit"


def read_move(move: Any) -> tuple[Any, Any]:
    """``[row, col]`` (list or tuple of two items) as a pair; anything else as ``(move, None)``."""
    if isinstance(move, list | tuple) and len(move) == 2:
        return move[0], move[1]
    return move, None


class Policy(Module):
    """Two trainable functions: ``reason`` analyses the board, ``act`` chooses the next shot."""

    def __init__(self, rules: Rules = Rules()) -> None:
        self.rules = rules

    @bundle(trainable=True, description="analyses the board rows ('.' unknown, 'X' hit, 'o' miss) for act")
    def reason(self, board: list[str]) -> dict[str, Any]:
        unknown = [[r, c] for r, row in enumerate(board) for c, cell in enumerate(row) if cell == "."]
        return {"unknown": unknown}

    @bundle(trainable=True, description="returns the next cell to shoot as [row, col] (0-based)")
    def act(self, board: list[str], analysis: dict[str, Any]) -> list[int]:
        return list(analysis["unknown"][0])

    def forward(self, seed: Any) -> Node[Any]:
        board = Board(int(seed), self.rules)
        moves = []
        for turn in range(self.rules.shots):
            view = Node(board.view(), name=f"board_{turn}")
            move = self.act(view, self.reason(view))
            moves.append(move)
            board.shoot(*read_move(move.data))
            if board.all_sunk:
                break
        return ops.make_list(*moves)


class GameReplay(Guide):
    """Replays a game's moves on the seeded board; the score is the share of ship cells hit.

    Example:
        >>> guide = GameReplay(Rules(size=4, ships=(2,), shots=16))
        >>> guide([[r, c] for r in range(4) for c in range(4)], 1).score
        1.0
    """

    def __init__(self, rules: Rules = Rules()) -> None:
        self.rules = rules

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        board = Board(int(target), self.rules)
        if not isinstance(output, list):
            return Feedback(f"The game produced no list of moves, got {type(output).__name__}.", 0.0)
        counts = {"hit": 0, "sunk": 0, "miss": 0, "invalid": 0}
        invalid: list[str] = []
        for i, move in enumerate(output):
            said = board.shoot(*read_move(move))
            counts[said.split(":")[0]] += 1
            if said.startswith("invalid"):
                invalid.append(f"shot {i + 1}: {said[len('invalid: ') :]}")
        cells = sum(self.rules.ships)
        found = counts["hit"] + counts["sunk"]
        sunk = sum(ship <= board.shot.keys() for ship in board.ships)
        text = (
            f"{len(output)} shots: {found} hits, {counts['miss']} misses, {counts['invalid']} invalid moves; "
            f"sank {sunk} of {len(board.ships)} ships (lengths {list(self.rules.ships)}) with {self.rules.shots} "
            f"shots allowed. Found {found} of {cells} ship cells."
        )
        if invalid:
            text += " Invalid: " + "; ".join(invalid[:3]) + "."
        if found < cells:
            text += " Find the ships in fewer shots: after a hit, shoot its neighbours; never shoot a cell twice."
        return Feedback(text, found / cells, {"hits": found, "invalid": counts["invalid"]})


def draw(seed: int, moves: Sequence[Any], rules: Rules) -> str:
    """The board after ``moves``, with the ships' unfound cells as ``#``."""
    board = Board(seed, rules)
    for move in moves:
        board.shoot(*read_move(move))
    rows = board.view()
    hidden = {cell for ship in board.ships for cell in ship} - board.shot.keys()
    return "\n".join("".join("#" if (r, c) in hidden else ch for c, ch in enumerate(row)) for r, row in enumerate(rows))


# -- a scripted model for --mock -----------------------------------------------------------------------

HUNT_AND_TARGET = """def act(self, board: list[str], analysis: dict[str, Any]) -> list[int]:
    n = len(board)
    for r in range(n):
        for c in range(n):
            if board[r][c] == "X":
                for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < n and 0 <= cc < n and board[rr][cc] == ".":
                        return [rr, cc]
    for r, c in analysis["unknown"]:
        if (r + c) % 2 == 0:
            return [r, c]
    return list(analysis["unknown"][0])
"""


def scripted_llm() -> llm_module.MockLLM:
    """A scripted optimizer (plumbing only): it rewrites ``act`` to hunt and target.

    To ``Reflect`` it answers with a diagnosis, then the new ``act`` in a python block (and
    nothing new for ``reason``); to ``OptoPrime`` with the same code in a JSON suggestion.
    """

    def handler(messages: list[dict[str, Any]], **params: Any) -> str:
        system, user = messages[0]["content"], messages[-1]["content"]
        if system.startswith("You are an optimizer"):  # OptoPrime
            return json.dumps(
                {"reasoning": "shoot next to hits, else sweep a checkerboard", "suggestion": {"act": HUNT_AND_TARGET}}
            )
        if "what rule would fix it" in user:  # Reflect's diagnosis
            return "act sweeps row by row and ignores hits; after a hit it should shoot the neighbours."
        if "def act(" in user.split("It fails on these cases:")[0]:  # a rewrite of act
            return f"```python\n{HUNT_AND_TARGET}```"
        return "I would keep this function as it is."  # a rewrite of reason: no code, refused

    return llm_module.MockLLM(handler)


#: The optimizers ``--optimizer`` chooses from, and the search each uses unless ``--search`` says otherwise.
OPTIMIZERS = {"recommended": "pareto", "optoprime": "greedy"}


def make_optimizer(name: str, policy: Policy, n_candidates: int = 4) -> Optimizer:
    """``recommended``: fp.optim.recommended, one function a step; ``optoprime``: the earlier setup."""
    if name == "optoprime":
        return OptoPrime(policy.parameters(), max_tokens=700)
    if name == "recommended":
        # Reflect rewrites one function per step (1 + n_candidates calls), in this order: act
        # chooses the shot, so it goes first.
        functions = dict(policy.named_parameters())
        return recommended([functions["act"], functions["reason"]], n_candidates=n_candidates, max_tokens=700)
    raise InvalidInputError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")


def run(args: argparse.Namespace) -> TrainResult:
    rules = Rules(size=args.size, shots=args.shots)
    # Disjoint seeds: training boards, validation boards, unseen test boards.
    train_seeds = [(s, s) for s in range(args.n_train)]
    val_seeds = [(s, s) for s in range(100, 100 + args.n_val)]
    test_seeds = [(s, s) for s in range(1000, 1000 + args.n_test)]
    if args.mock:
        llm_module.set_default(scripted_llm())
    model = llm_module.default()
    search = args.search or OPTIMIZERS.get(args.optimizer, "greedy")
    print(
        f"Battleship {rules.size}x{rules.size}, ships {list(rules.ships)}, {rules.shots} shots; "
        f"{len(train_seeds)} train / {len(val_seeds)} val / {len(test_seeds)} unseen test boards; "
        f"optimizer {args.optimizer}, {search} search; "
        f"model {model.model}{' (SCRIPTED, plumbing only)' if args.mock else ''}"
    )
    policy = Policy(rules)
    result = train(
        policy,
        train_seeds,
        GameReplay(rules),
        make_optimizer(args.optimizer, policy, args.n_candidates),
        val_set=val_seeds,
        test_set=test_seeds,
        batch_size=args.batch_size,
        max_steps=args.steps,
        search=search,
        follow_ups=2 if search == "pareto" else 0,
        budget=Budget(tokens=60_000, scope="optimizer"),
        checkpoint=args.run_dir,
    )
    print(f"ship cells found on unseen boards: {_percent(result.test_before)} -> {_percent(result.test_after)}")
    print(f"validation: {_percent(result.val_before)} -> {_percent(result.val_after)}")
    print(f"steps {result.steps}, accepted updates {result.accepted}, stop: {result.stop_reason}")
    seed = test_seeds[0][0]
    print(f"one unseen board (seed {seed}) after training: X hit, o miss, # ship cell not found")
    print(draw(seed, policy(seed).data, rules))
    for name, value in result.best_state.items():
        print(f"--- {name}\n{str(value).rstrip()}")
    return result


def _percent(score: float | None) -> str:
    return "n/a" if score is None else f"{100 * score:.0f}%"


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description="train a Battleship policy's code from game feedback")
    parser.add_argument("--mock", action="store_true", help="scripted model: checks the plumbing in seconds")
    parser.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        default="recommended",
        help="recommended (default): diagnose-then-rewrite, Pareto search; optoprime: the earlier setup, greedy search",
    )
    parser.add_argument("--search", choices=("pareto", "greedy"), help="default: pareto for recommended, else greedy")
    parser.add_argument("--n-candidates", type=int, default=4, help="rewrites per function per step")
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--shots", type=int, default=14)
    parser.add_argument("--n-train", type=int, default=4)
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / time.strftime("battleship-%Y%m%d-%H%M%S"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
