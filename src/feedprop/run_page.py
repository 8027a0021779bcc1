"""The run page: one self-contained HTML file per run, readable offline (``feedprop view RUN_DIR``).

The page is plain HTML with inline SVG and CSS, and no script at all: nothing is fetched from a
network, so it opens from disk, from an archive, or from :func:`serve_run_page` on a loopback port.
It shows, from the files the run wrote (:func:`feedprop.run_record.load_run`):

- the scores before and after, and the learning curve — train minibatch, validation and test
  scores against the step and against the LLM tokens spent; validated candidates as crosses;
- each step: its candidates with a diff of every parameter they change, the validation score and
  the reason each was kept or refused (and, for a joint run, each phase's row);
- the test set's items before and after, the ones that flipped first;
- LLM usage by phase and by model (for older runs, which did not count by model, by role);
- the workflow's graph drawn as SVG (:mod:`feedprop.graph_svg`) with the parameters highlighted;
- the parameters' diffs from the start to the kept program.

A part the run did not record is replaced by a note saying why. All text from the run is escaped.

Example:
    >>> import tempfile
    >>> from feedprop.run_record import RunView
    >>> html = render_run_page(RunView(Path(tempfile.mkdtemp()), "train", "An empty run"))
    >>> html.startswith("<!DOCTYPE html>") and "<script" not in html and 'id="curve"' in html
    True
"""

from __future__ import annotations

import os
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from feedprop._files import atomic_write
from feedprop.chart_svg import Series, line_chart
from feedprop.graph_svg import to_svg
from feedprop.run_record import CandidateView, RunView, StepView, load_run
from feedprop.training.summary import parameter_diff

__all__ = ["PAGE_FILE", "render_run_page", "serve_run_page", "write_run_page"]

#: The page's file name inside the run directory (unless ``out`` says otherwise).
PAGE_FILE = "run.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#0f172a;background:#f8fafc}
main{max-width:1120px;margin:0 auto;padding:12px 24px 48px}
header{background:#0f172a;color:#f8fafc;padding:16px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cbd5e1;font-size:13px;word-break:break-all}
nav{font-size:13px;margin:10px 0}nav a{margin-right:14px;color:#1d4ed8}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 18px;margin:14px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#92400e;background:#fffbeb;border-left:3px solid #f59e0b;padding:6px 10px;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600}
.b-kept,.b-gained{background:#dcfce7;color:#166534}.b-admitted{background:#fef9c3;color:#854d0e}
.b-refused,.b-invalid,.b-lost{background:#fee2e2;color:#991b1b}.b-not-kept,.b-same{background:#e2e8f0;color:#334155}
details.step{border-top:1px solid #e2e8f0;padding:6px 0}details.step>summary{cursor:pointer;font-size:14px}
.candidate{margin:8px 0 8px 18px;padding:6px 10px;border-left:3px solid #cbd5e1}
.candidate.c-kept{border-left-color:#16a34a}.candidate.c-refused,.candidate.c-invalid{border-left-color:#dc2626}
.candidate.c-admitted{border-left-color:#ca8a04}
.meta{font-size:13px;color:#334155}.reasoning{font-size:13px;color:#475569;white-space:pre-wrap;margin:4px 0}
pre.diff{font-size:12px;background:#f8fafc;border:1px solid #e2e8f0;padding:6px;overflow-x:auto;margin:4px 0;
white-space:pre-wrap;word-break:break-word}
pre.diff .add{background:#dcfce7}pre.diff .del{background:#fee2e2}
pre.diff span{display:block;min-height:1em}pre.diff .hunk{color:#6d28d9}pre.diff .head{color:#64748b}
td.out{max-width:300px;white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:12px}
tr.gained td{background:#f0fdf4}tr.lost td{background:#fef2f2}
.graph-wrap{overflow-x:auto}footer{font-size:12px;color:#64748b;margin-top:20px}
"""

_COLORS = {"train": "#f59e0b", "val": "#2563eb", "test": "#16a34a", "candidates": "#dc2626"}


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _badge(status: str) -> str:
    return f'<span class="badge b-{escape(status.replace(" ", "-"))}">{escape(status)}</span>'


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        if line.startswith("\\ No newline"):  # difflib's marker: noise on a page
            continue
        if line.startswith(("+++", "---")):
            cls = "head"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        else:
            cls = "ctx"
        lines.append(f'<span class="{cls}">{escape(line) or " "}</span>')
    return '<pre class="diff">' + "".join(lines) + "</pre>"


def _summary(view: RunView) -> str:
    rows = [
        f"<tr><th>validation</th><td class='num'>{_score(view.val_before)}</td>"
        f"<td class='num'>{_score(view.val_after)}</td></tr>",
        f"<tr><th>test</th><td class='num'>{_score(view.test_before)}</td>"
        f"<td class='num'>{_score(view.test_after)}</td></tr>",
    ]
    facts = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in view.facts)
    return (
        '<section id="summary"><h2>Summary</h2><div class="charts">'
        f"<table><tr><th>score</th><th>before</th><th>after</th></tr>{''.join(rows)}</table>"
        f"<table>{facts}</table></div></section>"
    )


def _curve(view: RunView) -> str:
    def series(axis: str) -> list[Series]:
        out = []
        for key, name, style in (("train", "train minibatch", "markers"), ("val", "validation (kept)", "step")):
            pts = [(p.x if axis == "x" else p.tokens, getattr(p, key), p.label) for p in view.points]
            kept = [(x, y, label) for x, y, label in pts if y is not None]
            if kept:
                out.append(
                    Series(
                        name,
                        [(float(x), float(y)) for x, y, _ in kept],
                        color=_COLORS[key],
                        style=style,
                        labels=[f"{name} {y:.3f} ({label})" for _, y, label in kept],
                    )
                )
        tests = [(p.x if axis == "x" else p.tokens, p.test, p.label) for p in view.points if p.test is not None]
        if tests:
            out.append(
                Series(
                    "test",
                    [(float(x), float(y)) for x, y, _ in tests],
                    color=_COLORS["test"],
                    style="line" if view.kind == "joint" else "markers",  # a train run measures test twice
                    dashed=True,
                    labels=[f"test {y:.3f} ({label})" for _, y, label in tests],
                )
            )
        if axis == "x" and view.candidate_points:
            out.append(
                Series(
                    "candidates (validated)",
                    [(float(x), y) for x, y, _ in view.candidate_points],
                    color=_COLORS["candidates"],
                    style="markers",
                    marker="cross",
                    labels=[tip for _, _, tip in view.candidate_points],
                )
            )
        return out

    if not view.points:
        return '<section id="curve"><h2>Learning curve</h2>' + _note("No scores were recorded.") + "</section>"
    y_range = (0.0, 1.0) if all(0 <= v <= 1 for v in _all_scores(view)) else None
    by_step = line_chart(
        series("x"),
        x_label="step",
        y_label="score",
        title="against steps",
        marks=view.marks,
        y_range=y_range,
        integer_x=True,
    )
    token_marks = [(float(_tokens_at(view, x)), label) for x, label in view.marks]
    by_tokens = line_chart(
        series("tokens"),
        x_label="LLM tokens spent in training (prompt + completion)",
        y_label="score",
        title="against tokens",
        marks=token_marks,
        y_range=y_range,
    )
    explain = (
        "Train: the mean score of each step's minibatch under the program it started from. Validation: the kept "
        "program's score after each step. Test: measured before and after"
        + (" each phase" if view.kind == "joint" else " training")
        + ". Crosses: every candidate that was validated, kept or not."
    )
    return (
        '<section id="curve"><h2>Learning curve</h2>'
        f'<div class="charts">{by_step}{by_tokens}</div><p class="meta">{escape(explain)}</p></section>'
    )


def _all_scores(view: RunView) -> list[float]:
    values = [v for p in view.points for v in (p.train, p.val, p.test) if v is not None]
    return values + [y for _, y, _ in view.candidate_points]


def _tokens_at(view: RunView, x: int) -> int:
    before = [p.tokens for p in view.points if p.x <= x]
    return max(before) if before else 0


def _phases(view: RunView) -> str:
    if view.kind != "joint":
        return ""
    rows = [
        "<tr><th>phase</th><th>val</th><th>test</th><th>kept</th><th>calls (+cached)</th><th>tokens</th>"
        "<th>seconds</th><th>notes</th></tr>",
        f"<tr><td>start</td><td class='num'>{_score(view.val_before)}</td><td class='num'>{_score(view.test_before)}"
        "</td><td></td><td></td><td></td><td></td><td></td></tr>",
    ]
    for p in view.phases:
        kind = {"p": "prompts", "w": "weights"}.get(p.kind, p.kind)
        rows.append(
            f"<tr><td>{escape(p.label)} ({escape(kind)})</td><td class='num'>{_score(p.val)}</td>"
            f"<td class='num'>{_score(p.test)}</td><td>{_badge('kept') if p.kept else _badge('not kept')}</td>"
            f"<td class='num'>{p.calls} (+{p.cache_hits})</td><td class='num'>{p.tokens:,}</td>"
            f"<td class='num'>{p.seconds:.0f}</td><td>{escape(p.skipped or p.notes)}</td></tr>"
        )
    return '<section id="phases"><h2>Phases</h2><table>' + "".join(rows) + "</table></section>"


def _candidate(c: CandidateView) -> str:
    val = "" if c.val_score is None else f" · validation {c.val_score:.3f}"
    gate = f" · {escape(c.gate)}" if c.gate else ""
    diffs = "".join(_diff_html(d) for d in c.diffs.values()) or _note("This candidate changed no parameter.")
    reasoning = f'<div class="reasoning">{escape(c.reasoning)}</div>' if c.reasoning else ""
    return (
        f'<div class="candidate c-{escape(c.status.replace(" ", "-"))}">'
        f'<div class="meta">candidate {c.index} {_badge(c.status)}{val}{gate} — {escape(c.reason)}</div>'
        f"{reasoning}{diffs}</div>"
    )


def _step(s: StepView, open_: bool) -> str:
    where = f"phase {s.phase}, " if s.phase else ""
    verdict = _badge("kept") if s.accepted else _badge("not kept")
    head = (
        f"<summary><b>{escape(where)}step {s.step}</b> {verdict} train {_score(s.train_score)} · validation "
        f"{_score(s.val_previous)} → {_score(s.val_score)} · {s.calls} calls, {s.tokens:,} tokens, {s.seconds:.0f} s"
        f" — {escape(s.reason)}</summary>"
    )
    body = [f'<p class="meta">Diffs are against {escape(s.base)}.</p>']
    body += [_candidate(c) for c in s.candidates] or [_note("The optimizer proposed no candidate in this step.")]
    if s.refused:
        body.append("<p class='meta'>Suggestions the optimizer refused before validation:</p><ul>")
        body += [f"<li class='meta'>{escape(r)}</li>" for r in s.refused]
        body.append("</ul>")
    return f'<details class="step"{" open" if open_ else ""}>{head}{"".join(body)}</details>'


def _steps(view: RunView) -> str:
    out = ['<section id="steps"><h2>Steps and candidates</h2>']
    if not view.steps:
        out.append(_note(view.notes.get("steps", "No optimizer step was completed in this run.")))
    else:
        if "steps" in view.notes:
            out.append(_note(view.notes["steps"]))
        out.append("<p class='meta'>Steps that changed the kept program are open; click any other to see it.</p>")
        out += [_step(s, s.accepted) for s in view.steps]
    if view.kind == "joint":
        weights = [p for p in view.phases if p.kind == "w"]
        for p in weights:
            verdict = "kept" if p.kept else "not kept"
            text = p.skipped or f"{p.notes}; validation {_score(p.val)}, test {_score(p.test)}"
            out.append(f"<p class='meta'><b>phase {escape(p.label)} (weights)</b> {_badge(verdict)} {escape(text)}</p>")
    out.append("</section>")
    return "".join(out)


def _items(view: RunView) -> str:
    out = ['<section id="items"><h2>Items before and after</h2>']
    if not view.items:
        out.append(_note(view.notes.get("items", "No per-item outcomes were recorded.")) + "</section>")
        return "".join(out)
    gained = sum(r.flip == "gained" for r in view.items)
    lost = sum(r.flip == "lost" for r in view.items)
    right = sum(r.flip == "" and (r.after or 0) > 0 for r in view.items)
    out.append(
        f"<p class='meta'>{escape(view.items_caption)}: {len(view.items)} items, <b>{gained} gained</b>, "
        f"<b>{lost} lost</b>, {right} scored above 0 both times, {len(view.items) - gained - lost - right} scored 0 "
        "both times. Flipped items first.</p>"
    )
    out.append(
        '<table class="items"><tr><th>item</th><th>before</th><th>after</th><th>flip</th><th>output before</th>'
        "<th>output after</th><th>feedback after</th></tr>"
    )
    for r in view.items:
        flip = _badge(r.flip) if r.flip else ""
        out.append(
            f'<tr class="{r.flip or "same"}"><td class="num">{r.index}</td><td class="num">{_score(r.before)}</td>'
            f'<td class="num">{_score(r.after)}</td><td>{flip}</td><td class="out">{escape(r.output_before)}</td>'
            f'<td class="out">{escape(r.output_after)}</td><td class="out">{escape(r.feedback_after)}</td></tr>'
        )
    out.append("</table></section>")
    return "".join(out)


def _usage(view: RunView) -> str:
    out = ['<section id="usage"><h2>LLM usage</h2><h3>By phase</h3>']
    if view.usage:
        out.append(
            "<table><tr><th>phase</th><th>calls</th><th>cache hits</th><th>prompt tokens</th>"
            "<th>completion tokens</th><th>model seconds</th></tr>"
        )
        for phase in sorted(view.usage, key=lambda p: (p == "total", p)):
            u = view.usage[phase]
            out.append(
                f"<tr><td>{escape(phase)}</td><td class='num'>{int(u.get('calls', 0)):,}</td>"
                f"<td class='num'>{int(u.get('cache_hits', 0)):,}</td>"
                f"<td class='num'>{int(u.get('prompt_tokens', 0)):,}</td>"
                f"<td class='num'>{int(u.get('completion_tokens', 0)):,}</td>"
                f"<td class='num'>{u.get('seconds', 0.0):.1f}</td></tr>"
            )
        out.append("</table>")
        out.append(
            "<p class='meta'>evaluation: training-time scoring (minibatches, screening, validation"
            + (", collecting examples in weight phases" if view.kind == "joint" else "")
            + "); optimizer: the optimizer's own calls; test: scoring the test set, outside any budget.</p>"
        )
    else:
        out.append(_note("No usage was recorded."))
    out.append('<h3 id="usage-by-model">By model</h3>')
    if view.models:
        out.append(
            '<table class="by-model"><tr><th>model</th><th>phases (calls)</th><th>calls</th><th>cache hits</th>'
            "<th>prompt tokens</th><th>completion tokens</th><th>model seconds</th></tr>"
        )
        for m in view.models:
            out.append(
                f"<tr><td>{escape(m.model)}</td><td>{escape(m.phases)}</td><td class='num'>{m.calls:,}</td>"
                f"<td class='num'>{m.cache_hits:,}</td><td class='num'>{m.prompt_tokens:,}</td>"
                f"<td class='num'>{m.completion_tokens:,}</td><td class='num'>{m.seconds:.1f}</td></tr>"
            )
        out.append("</table>")
        out.append(
            "<p class='meta'>A model is named as its LLM object reports it; one serving several roles (the workflow "
            "and the optimizer, say) has one row, its calls split in the phases column.</p>"
        )
    elif "models" in view.notes or view.roles:
        out.append(_note(view.notes.get("models", "Usage by model was not recorded.")))
    else:
        out.append(_note("No model was called."))
    if view.roles:
        out.append("<table><tr><th>role</th><th>model</th><th>usage phases</th><th>calls</th><th>tokens</th></tr>")
        for r in view.roles:
            numbers = (
                f"<td class='num'>{r.calls:,}</td><td class='num'>{r.tokens:,}</td>"
                if r.calls or r.tokens
                else "<td></td><td></td>"
            )
            out.append(
                f"<tr><td>{escape(r.role)}</td><td>{escape(r.model)}</td><td>{escape(r.phases)}</td>{numbers}</tr>"
            )
        out.append("</table>")
        out.append(
            _note(
                "Each row gives the phases a role's calls are counted in (an LLM judge in the guide would be "
                "counted in evaluation too). The optimizer is named by its class."
            )
        )
    out.append("</section>")
    return "".join(out)


def _graph(view: RunView) -> str:
    out = ['<section id="graph"><h2>Workflow graph</h2>']
    if view.graph is None:
        out.append(_note(view.notes.get("graph", "No graph was recorded.")))
    else:
        params = sum(n["role"] == "parameter" for n in view.graph["nodes"])
        out.append(
            f"<p class='meta'>The graph of one item's run ({len(view.graph['nodes'])} nodes, {params} parameters, "
            "highlighted in blue). Hover over a box for its value.</p>"
        )
        out.append(f'<div class="graph-wrap">{to_svg(view.graph)}</div>')
    out.append("</section>")
    return "".join(out)


def _parameters(view: RunView) -> str:
    out = ['<section id="parameters"><h2>Parameters: start → kept</h2>']
    if view.best is None:
        out.append(_note("The kept parameters were not recorded (no best.json or joint.json state)."))
    elif view.initial is None:
        out.append(_note("The starting parameters were not recorded; the kept values follow."))
        out += [_diff_html(parameter_diff(name, None, value)) for name, value in sorted(view.best.items())]
    else:
        for name in sorted(set(view.initial) | set(view.best)):
            diff = parameter_diff(name, view.initial.get(name), view.best.get(name))
            state = "changed" if diff else "unchanged"
            out.append(f"<h3>{escape(name)} — {state}</h3>")
            if diff:
                out.append(_diff_html(diff))
    out.append("</section>")
    return "".join(out)


def render_run_page(run: RunView | str | os.PathLike[str]) -> str:
    """The run page's HTML for a :class:`~feedprop.run_record.RunView` or a run directory."""
    view = run if isinstance(run, RunView) else load_run(run)
    sections = [
        _summary(view),
        _curve(view),
        _phases(view),
        _steps(view),
        _items(view),
        _usage(view),
        _graph(view),
        _parameters(view),
    ]
    nav = [("summary", "Summary"), ("curve", "Curve")]
    nav += [("phases", "Phases")] if view.kind == "joint" else []
    nav += [
        ("steps", "Steps"),
        ("items", "Items"),
        ("usage", "Usage"),
        ("graph", "Graph"),
        ("parameters", "Parameters"),
    ]
    links = "".join(f'<a href="#{key}">{label}</a>' for key, label in nav)
    files = ", ".join(sorted(p.name for p in view.path.iterdir())) if view.path.is_dir() else ""
    extra = _note("Some files could not be read: " + view.notes["files"]) if "files" in view.notes else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(view.title)}</title><link rel="icon" href="data:,"><style>{_CSS}</style></head>'
        f"<body><header><h1>{escape(view.title)}</h1><p>{escape(str(view.path))}</p></header><main>"
        f"<nav>{links}</nav>{extra}{''.join(sections)}"
        f"<footer>Written by <code>feedprop view</code> from the files of the run directory ({escape(files)}).</footer>"
        "</main></body></html>\n"
    )


def write_run_page(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the run page of ``run_dir`` to ``out`` (default ``run_dir/run.html``); returns its path.

    Raises :class:`~feedprop.errors.ConfigurationError` if ``run_dir`` holds no run.

    Example:
        >>> import tempfile
        >>> from feedprop.training.events import EventLog
        >>> run = Path(tempfile.mkdtemp())
        >>> log = EventLog(run / "events.jsonl")
        >>> log.emit("evaluate", step=0, val_score=0.25, test_score=None)
        >>> log.close()
        >>> page = write_run_page(run)
        >>> page.name, "0.250" in page.read_text(encoding="utf-8")
        ('run.html', True)
    """
    html = render_run_page(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / PAGE_FILE
    atomic_write(target, html)
    return target


class _Handler(BaseHTTPRequestHandler):
    run_dir: Path

    def do_GET(self) -> None:  # the page is rendered afresh on each request: a live run shows its latest step
        if self.path.split("?")[0] not in ("/", f"/{PAGE_FILE}"):
            self.send_error(404, "only the run page is served here: /")
            return
        body = render_run_page(self.run_dir).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the command prints its own line
        return


def serve_run_page(run_dir: str | os.PathLike[str], *, port: int = 0) -> ThreadingHTTPServer:
    """Serve the run page of ``run_dir`` on ``http://127.0.0.1:<port>/`` (loopback only), in a background thread.

    ``port=0`` picks a free port (``server.server_address[1]``). Stop it with ``server.shutdown()``
    and ``server.server_close()``. Raises :class:`~feedprop.errors.ConfigurationError` if ``run_dir``
    holds no run.

    Example:
        >>> import tempfile, urllib.request
        >>> from feedprop.training.events import EventLog
        >>> run = Path(tempfile.mkdtemp())
        >>> log = EventLog(run / "events.jsonl")
        >>> log.emit("evaluate", step=0, val_score=0.5)
        >>> log.close()
        >>> server = serve_run_page(run)
        >>> url = f"http://127.0.0.1:{server.server_address[1]}/"
        >>> b"<!DOCTYPE html>" in urllib.request.urlopen(url).read()
        True
        >>> server.shutdown(); server.server_close()
    """
    directory = Path(run_dir)
    load_run(directory)  # a bad directory fails here, not on the first request

    class Handler(_Handler):
        run_dir = directory

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="feedprop-view", daemon=True).start()
    return server
