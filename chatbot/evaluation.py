"""Question-set evaluation: retrieval hits, must_include facts, declines, per kind and overall."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chatbot.history import turns_from_dicts

IN_SCOPE_KINDS = ("answerable", "follow_up", "multi_doc")
OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    gold_docs: list[str]
    must_include: list[str]
    kind: str
    history: list[dict]
    # Where it stands in its file (1-based), for messages about it.
    line: int = 0


FIELDS = ("id", "question", "kind", "gold_docs", "must_include", "history")


def load_questions(
    path: Path, name: str | None = None, warnings: list[str] | None = None
) -> list[Question]:
    """The questions of a JSONL file, each line checked before any is asked: a ValueError names
    the file (as ``name``, e.g. an upload's own name, else its path), the line and the field
    that is wrong.

    What is allowed but likely a mistake (a field of another name, which is ignored; an in-scope
    question without gold documents) is added to ``warnings``, one line each."""
    label = name or str(path)
    questions: list[Question] = []
    seen: dict[str, int] = {}
    # utf-8-sig: a byte-order mark, as spreadsheet exports write one, is not part of line 1.
    text = path.read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question = _question(item, number)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{label}:{number}: not valid JSON ({exc})") from exc
        except ValueError as exc:
            raise ValueError(f"{label}:{number}: {exc}") from exc
        if warnings is not None:
            warnings.extend(f"{label}:{number}: {w}" for w in _doubts(item, question))
        if question.id in seen:
            raise ValueError(
                f"{label}:{number}: the id '{question.id}' is already used on line "
                f"{seen[question.id]}"
            )
        seen[question.id] = number
        questions.append(question)
    if not questions:
        raise ValueError(f"{label}: the file holds no questions")
    return questions


def _question(item: object, line: int = 0) -> Question:
    if not isinstance(item, dict):
        raise ValueError("each line must be one JSON object")
    if not isinstance(item.get("id"), str | int) or isinstance(item.get("id"), bool):
        raise ValueError('"id" must be a string or a number')
    if not str(item["id"]).strip():
        raise ValueError('"id" must not be blank')
    if not isinstance(item.get("question"), str) or not item["question"].strip():
        raise ValueError('"question" must be a non-empty string')
    lists = {}
    for name in ("gold_docs", "must_include"):
        value = item.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f'"{name}" must be a list of strings')
        lists[name] = value
    kinds = (*IN_SCOPE_KINDS, OUT_OF_SCOPE)
    kind = item.get("kind") or ("answerable" if lists["gold_docs"] else OUT_OF_SCOPE)
    if kind not in kinds:
        raise ValueError(f'"kind" must be one of {", ".join(kinds)}')
    history = item.get("history") or []
    turns_from_dicts(history)  # raises ValueError naming the bad item
    return Question(
        id=str(item["id"]),
        question=item["question"],
        gold_docs=lists["gold_docs"],
        must_include=lists["must_include"],
        kind=kind,
        history=list(history),
        line=line,
    )


def _doubts(item: dict, question: Question) -> list[str]:
    """What in a valid line is likely a mistake."""
    doubts = [
        f"the field '{key}' is not one of {', '.join(FIELDS)} and is ignored"
        for key in item
        if key not in FIELDS
    ]
    if question.kind != OUT_OF_SCOPE and not question.gold_docs:
        doubts.append(f"this {question.kind} question has no gold_docs, so it can score no hit")
    if question.kind == OUT_OF_SCOPE and question.gold_docs:
        doubts.append("gold_docs of an out_of_scope question are not scored")
    return doubts


def same_document(source: str, gold: str) -> bool:
    """Whether ``source`` (a stored document's name) is the gold document: the same file name,
    in the same folders as far as both name any ("help/faq.md" and "faq.md" are one document;
    "billing/faq.md" and "setup/faq.md" are two)."""
    mine, theirs = _parts(source), _parts(gold)
    shared = min(len(mine), len(theirs))
    return shared > 0 and mine[-shared:] == theirs[-shared:]


def _parts(name: str) -> tuple[str, ...]:
    """A document name's folders and file name, "\\" read as "/" and "." and ".." left out."""
    return tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in (".", ".."))


def _file_name(name: str) -> str:
    return (_parts(name) or ("",))[-1]


def unknown_gold(questions: Iterable[Question], sources: Iterable[str], label: str) -> list[str]:
    """A warning for each gold document that none of ``sources`` (the store's) names."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for source in sources:
        by_name[_file_name(source)].append(source)
    return [
        f"{label}:{q.line}: gold document '{gold}' is not in the knowledge store "
        "(a misspelt name, or not ingested): it counts as a miss"
        for q in questions
        for gold in dict.fromkeys(q.gold_docs)
        if not any(same_document(s, gold) for s in by_name.get(_file_name(gold), []))
    ]


def score_one(question: Question, result: dict, k: int, with_answers: bool) -> dict:
    """Per-question verdicts from one result object (as ``ChatResult.to_dict`` makes it)."""
    sources = [s["source"] for s in result.get("sources", [])][:k]
    gold = list(dict.fromkeys(question.gold_docs))

    def found(document: str, among: list[str]) -> bool:
        return any(same_document(source, document) for source in among)

    row: dict = {"id": question.id, "kind": question.kind, "handoff": bool(result.get("handoff"))}
    if row["handoff"]:
        row["reason"] = result.get("handoff_reason") or "other"
    if question.kind != OUT_OF_SCOPE:
        row["hit@1"] = any(found(g, sources[:1]) for g in gold)
        row["hit@k"] = any(found(g, sources) for g in gold)
        row["all_gold@k"] = bool(gold) and all(found(g, sources) for g in gold)
        if with_answers and question.must_include:
            answer = (result.get("answer") or "").lower()
            row["must_include"] = all(term.lower() in answer for term in question.must_include)
    return row


def summarise(rows: Iterable[dict]) -> dict[str, dict]:
    """Rates per kind, over all in-scope questions, and the decline rates."""
    rows = list(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["kind"]].append(row)
        if row["kind"] != OUT_OF_SCOPE:
            groups["in_scope"].append(row)
    summary: dict[str, dict] = {}
    for name, members in groups.items():
        stats: dict[str, float] = {"n": len(members)}
        if name == OUT_OF_SCOPE:
            stats["decline_rate"] = _rate(m["handoff"] for m in members)
        else:
            for metric in ("hit@1", "hit@k", "all_gold@k", "must_include"):
                values = [m[metric] for m in members if metric in m]
                if values:
                    stats[metric] = _rate(values)
            stats["false_decline_rate"] = _rate(m["handoff"] for m in members)
        summary[name] = stats
    # Which check handed the out-of-scope questions off, and the in-scope ones it should not have.
    for name in (OUT_OF_SCOPE, "in_scope"):
        reasons = Counter(m["reason"] for m in groups.get(name, []) if m["handoff"])
        if reasons:
            summary[name]["declined_by"] = dict(sorted(reasons.items()))
    return summary


def _rate(values: Iterable[bool]) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


def run_eval(
    questions: list[Question],
    answer: Callable[[str, list], dict],
    *,
    k: int,
    with_answers: bool,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict]:
    rows = []
    handle = out.open("w", encoding="utf-8") if out else None
    try:
        for number, question in enumerate(questions, start=1):
            result = answer(question.question, turns_from_dicts(question.history))
            rows.append(score_one(question, result, k, with_answers))
            if handle:
                handle.write(json.dumps({"id": question.id, **result}, ensure_ascii=False) + "\n")
                handle.flush()
            if progress:
                progress(number, len(questions))
    finally:
        if handle:
            handle.close()
    return rows, summarise(rows)


def format_summary(summary: dict[str, dict], k: int) -> str:
    order = ["answerable", "follow_up", "multi_doc", "in_scope", OUT_OF_SCOPE]
    names = [n for n in order if n in summary] + [n for n in summary if n not in order]
    columns = [
        "n",
        "hit@1",
        "hit@k",
        "all_gold@k",
        "must_include",
        "false_decline_rate",
        "decline_rate",
    ]
    header = ["kind"] + [c.replace("@k", f"@{k}") for c in columns]
    lines = ["  ".join(f"{h:>18}" for h in header)]
    for name in names:
        stats = summary[name]
        cells = [name] + [
            ("" if c not in stats else (f"{stats[c]:.0f}" if c == "n" else f"{stats[c]:.3f}"))
            for c in columns
        ]
        lines.append("  ".join(f"{cell:>18}" for cell in cells))
    for name, label in ((OUT_OF_SCOPE, "out of scope"), ("in_scope", "in scope (false)")):
        reasons = summary.get(name, {}).get("declined_by")
        if reasons:
            lines.append(f"{label} declined by: {declined_text(reasons)}")
    return "\n".join(lines)


def declined_text(reasons: dict[str, int]) -> str:
    """A summary's ``declined_by`` as one line: "no_match 7, off_topic 11"."""
    return ", ".join(f"{reason} {n}" for reason, n in reasons.items())
