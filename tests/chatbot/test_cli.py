"""The `chatbot` command run for real in a subprocess: ingest, ask, eval, help and its failures.

Every run gets its own CHATBOT_DATA_DIR. Commands that answer use `--profile test`, whose local
provider starts SmolLM2 behind llama.cpp inside the command, as a user's run would.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.errors import MESSAGES
from tests.chatbot.conftest_e2e import unreachable_base_url
from tests.conftest import REPO, SAMPLE_HELP
from tests.fixtures.azure_stub import key_echoed

SAMPLE_QUESTIONS = REPO / "knowledge" / "sample_questions.jsonl"
RESET_QUESTION = "How long do I have to hold the hub's reset button?"
SAMPLE_COUNTS = "24 added, 0 updated, 0 unchanged, 0 skipped, 0 failed"
BULB_HISTORY = [
    {"role": "user", "content": "How do I pair a new bulb with my hub?"},
    {
        "role": "assistant",
        "content": "In the Lumora app, go to Devices > Add device > Bulb and tap Search.",
    },
]
BULB_ARTICLES = {"pair-a-new-bulb.md", "troubleshoot-offline-bulbs.md"}
TABLE_COLUMNS = [
    "n",
    "hit@1",
    "hit@k",
    "all_gold@k",
    "must_include",
    "false_decline_rate",
    "decline_rate",
]
# A command that answers takes a minute or two on a busy two-core machine; the limit turns a hung
# command into a failure instead of a stuck run.
COMMAND_TIMEOUT_S = 420


def run_cli(
    *args: str | Path, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``chatbot ARGS`` with only the CHATBOT_* variables given here, from the repository root."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    environ.update({"CHATBOT_DATA_DIR": str(data_dir), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "chatbot.cli", *map(str, args)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def ask_reset(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``chatbot --profile test ask`` the reset question, with these environment variables."""
    return run_cli("--profile", "test", "ask", RESET_QUESTION, data_dir=data_dir, env=env)


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The CLI's own messages on stderr (log records and progress bars aside)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def one_json_object(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1, proc.stdout
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


OUT_OF_SCOPE_IDS = {
    q["id"]
    for q in map(json.loads, SAMPLE_QUESTIONS.read_text().splitlines())
    if q.get("kind") == "out_of_scope"
}


def source_names(answer: dict) -> list[str]:
    return [s["source"] for s in answer["sources"]]


def read_table(stdout: str) -> tuple[list[str], dict[str, list[str]], dict]:
    """`eval --json` output: the table's header, its rows by kind, and the JSON summary (the
    lines saying which check declined what are left out)."""
    header, *rows, summary = stdout.strip().splitlines()
    rows = [row for row in rows if " declined by: " not in row]
    return header.split(), {row.split()[0]: row.split()[1:] for row in rows}, json.loads(summary)


def shown(stats: dict[str, float]) -> list[str]:
    """The table cells of one kind's summary, in column order (absent metrics are blank)."""
    return [
        f"{stats[c]:.0f}" if c == "n" else f"{stats[c]:.3f}" for c in TABLE_COLUMNS if c in stats
    ]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A data dir holding the sample help center, ingested by the CLI; read-only for the tests."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    return data_dir, run_cli("ingest", "knowledge/sample_help", data_dir=data_dir)


@pytest.fixture
def data_dir(ingested) -> Path:
    data_dir, proc = ingested
    assert proc.returncode == 0, f"the sample ingest failed:\n{proc.stderr}"
    return data_dir


@pytest.fixture
def own_copy(data_dir, tmp_path) -> Path:
    """A copy of the ingested data dir, for a test that writes to it."""
    return Path(shutil.copytree(data_dir, tmp_path / "data"))


# ----- ingest
def kettle_docs(tmp_path: Path) -> Path:
    """A folder with one small article."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "descale-the-kettle.md").write_text(
        "# Descale the kettle\n\nHold the Brew button for seven seconds.\n", encoding="utf-8"
    )
    return docs


@pytest.mark.slow
def test_ingest_reports_counts(ingested):
    _, proc = ingested

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == SAMPLE_COUNTS
    assert not error_lines(proc)


@pytest.mark.slow
def test_ingest_again_finds_everything_unchanged(own_copy):
    proc = run_cli("ingest", SAMPLE_HELP, "--profile", "test", data_dir=own_copy)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0 added, 0 updated, 24 unchanged, 0 skipped, 0 failed"


@pytest.mark.slow
def test_ingest_reports_each_bad_file_and_keeps_the_good_ones(tmp_path):
    docs = kettle_docs(tmp_path)
    (docs / "empty.md").write_text("", encoding="utf-8")
    tool = tmp_path / "installer.exe"
    tool.write_bytes(b"MZ\x90\x00")

    proc = run_cli("ingest", docs, tool, tmp_path / "missing.md", data_dir=tmp_path / "data")

    assert proc.returncode != 0
    assert proc.stdout.strip() == "1 added, 0 updated, 0 unchanged, 0 skipped, 3 failed"
    failed = {
        line.split(": ")[1]: line for line in proc.stderr.splitlines() if line.startswith("failed:")
    }
    assert sorted(failed) == ["empty.md", "installer.exe", "missing.md"], proc.stderr
    assert "empty" in failed["empty.md"]
    assert "unsupported file type '.exe'" in failed["installer.exe"]
    assert "no such file" in failed["missing.md"]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ingest_says_so_when_there_is_nothing_to_ingest_and_stays_quiet_otherwise(tmp_path):
    empty, damaged = tmp_path / "empty", tmp_path / "damaged"
    empty.mkdir()
    (empty / "notes.odt").write_bytes(b"PK")
    damaged.mkdir()
    (damaged / "broken.pdf").write_bytes(b"this is not a PDF at all")

    nothing = run_cli("ingest", empty, data_dir=tmp_path / "data")
    broken = run_cli("ingest", damaged, data_dir=tmp_path / "data")
    docs = kettle_docs(tmp_path)
    run_cli("ingest", docs, data_dir=tmp_path / "data")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "kettle-copy.md").write_bytes((docs / "descale-the-kettle.md").read_bytes())
    duplicate = run_cli("ingest", copy, data_dir=tmp_path / "data")

    assert nothing.returncode == 1
    assert error_lines(nothing) == [
        f"error: no documents to ingest in {empty} (supported: .docx, .htm, .html, .markdown, "
        ".md, .pdf, .txt)"
    ]
    assert broken.returncode == 1
    assert [line.split(": ")[0] for line in broken.stderr.splitlines()] == ["failed"], (
        "one line for the damaged file, no library warnings or progress notes"
    )
    # A document that is already there under another name is not an error.
    assert duplicate.returncode == 0, duplicate.stderr
    assert duplicate.stderr.strip() == "nothing ingested: 1 skipped (-v says why)"


@pytest.mark.slow
def test_ingest_of_a_folder_holding_only_links_fails_like_one_of_other_file_types(tmp_path):
    docs = kettle_docs(tmp_path)
    links = tmp_path / "links"
    links.mkdir()
    (links / "latest").symlink_to(docs, target_is_directory=True)
    (links / "gone.md").symlink_to(tmp_path / "nowhere.md")

    quiet = run_cli("ingest", links, data_dir=tmp_path / "data")
    verbose = run_cli("ingest", "-v", links, data_dir=tmp_path / "data")

    assert quiet.returncode == 1
    assert error_lines(quiet) == [
        f"error: no documents to ingest in {links} (supported: .docx, .htm, .html, .markdown, "
        ".md, .pdf, .txt); 2 links or special files passed over (-v says why)"
    ]
    assert verbose.returncode == 1
    assert "skipped: latest: a link to a folder, not followed" in verbose.stderr
    assert "skipped: gone.md: a broken link" in verbose.stderr
    assert "passed over" not in verbose.stderr


@pytest.mark.slow
def test_ingest_verbose_says_how_large_a_file_is_being_embedded(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    paragraphs = (f"Kettle setting {n} keeps the water at {n} degrees. " * 18 for n in range(80))
    (docs / "kettle-manual.md").write_text("# Kettle manual\n\n" + "\n\n".join(paragraphs))
    (docs / "descale.md").write_text("# Descale\n\nHold Brew for seven seconds.\n")

    verbose = run_cli("ingest", "--verbose", docs, data_dir=tmp_path / "data")
    quiet = run_cli("ingest", docs / "kettle-manual.md", data_dir=tmp_path / "other")

    assert verbose.returncode == 0, verbose.stderr
    lines = verbose.stderr.splitlines()
    manual = lines.index("[2/2] kettle-manual.md")
    assert lines[manual + 1].startswith("  embedding ") and lines[manual + 1].endswith(" passages…")
    total = int(lines[manual + 1].split()[1].replace(",", ""))
    assert total > 64
    assert "  embedding" not in "\n".join(lines[:manual]), "a small file says only its name"
    assert quiet.returncode == 0 and "embedding" not in quiet.stderr  # not a terminal, no -v


@pytest.mark.slow
def test_ingest_into_a_sites_collection_and_refuse_an_unknown_one(tmp_path):
    docs = kettle_docs(tmp_path)
    site = {"key": "kettle-site-key", "name": "Kettles", "allowed_origins": ["self"]}
    env = {"CHATBOT_SITES": json.dumps([{**site, "collection": "kettles"}])}
    data = tmp_path / "data"

    typo = run_cli("ingest", docs, "--collection", "kettle", data_dir=data, env=env)
    assert typo.returncode == 2
    assert error_lines(typo) == [
        "error: there is no knowledge collection 'kettle'; the config names knowledge, kettles "
        "(retrieval.collection and the sites' collection settings)"
    ]

    added = run_cli("ingest", docs, "--collection", "kettles", data_dir=data, env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "1 added, 0 updated, 0 unchanged, 0 skipped, 0 failed"
    again = run_cli("ingest", docs, "--collection", "kettles", data_dir=data, env=env)
    assert again.stdout.strip() == "0 added, 0 updated, 1 unchanged, 0 skipped, 0 failed"
    # The default collection did not get it.
    default = run_cli("ingest", docs, data_dir=data, env=env)
    assert default.stdout.strip() == "1 added, 0 updated, 0 unchanged, 0 skipped, 0 failed"
    # Each change is in the audit log, with its collection.
    with sqlite3.connect(data / "conversations.sqlite3") as db:
        audited = db.execute("SELECT actor, action, target, detail FROM audit_log").fetchall()
    assert [(a, b, c, json.loads(d)["collection"]) for a, b, c, d in audited] == [
        ("chatbot ingest", "document.add", "descale-the-kettle.md", "kettles"),
        ("chatbot ingest", "document.add", "descale-the-kettle.md", "knowledge"),
    ]


@pytest.mark.slow
def test_ingest_prune_removes_deleted_files_and_refuses_a_missing_path(tmp_path):
    docs = kettle_docs(tmp_path)
    (docs / "fill-the-kettle.md").write_text("# Fill the kettle\n\nUp to the 1.7 litre line.\n")
    data = tmp_path / "data"
    run_cli("ingest", docs, data_dir=data)
    (docs / "fill-the-kettle.md").unlink()

    typo = run_cli("ingest", "--prune", docs, tmp_path / "dcos", data_dir=data)
    assert typo.returncode == 2
    assert error_lines(typo) == [
        f"error: --prune needs every path to exist: no such file or folder: {tmp_path / 'dcos'}"
    ]
    # An unset variable: "" would be the current folder, and pruning against it empty the store.
    for empty in ("", " "):
        unset = run_cli("ingest", "--prune", empty, data_dir=data)
        assert unset.returncode == 2
        assert error_lines(unset) == [
            "error: an empty path was given (an unset variable?): name a file or folder"
        ]

    pruned = run_cli("ingest", "-v", "--prune", docs, data_dir=data)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == (
        "0 added, 0 updated, 1 unchanged, 0 skipped, 0 failed, 1 removed"
    )
    assert "removed: fill-the-kettle.md" in pruned.stderr.splitlines()
    with sqlite3.connect(data / "conversations.sqlite3") as db:
        audited = db.execute("SELECT actor, action, target FROM audit_log").fetchall()
    assert ("chatbot ingest", "document.delete", "fill-the-kettle.md") in audited, audited


# ----- ask


@pytest.mark.slow
def test_ask_json_prints_one_object_with_sources_usage_and_timings(data_dir):
    proc = run_cli("--profile", "test", "ask", RESET_QUESTION, "--json", data_dir=data_dir)

    answer = one_json_object(proc)
    assert {"answer", "sources", "handoff", "usage", "timings_ms"} <= answer.keys()
    assert answer["answer"].strip()
    assert answer["handoff"] is False
    assert answer.get("error") is None
    assert source_names(answer)[0] == "reset-the-hub.md"
    for source in answer["sources"]:
        assert set(source) == {"source", "title", "score", "snippet"}
        assert source["title"] and source["snippet"]
        assert isinstance(source["score"], float)
    assert set(answer["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert answer["usage"]["prompt_tokens"] > 0
    assert answer["usage"]["completion_tokens"] > 0
    timings = answer["timings_ms"]
    assert {"retrieve", "first_token", "total"} <= timings.keys()
    assert timings["retrieve"] > 0
    assert 0 < timings["first_token"] <= timings["total"]


@pytest.mark.slow
def test_ask_reads_the_conversation_from_a_history_file(data_dir, tmp_path):
    history = tmp_path / "history.json"
    history.write_text(json.dumps(BULB_HISTORY), encoding="utf-8")

    # --profile after the subcommand is accepted too.
    proc = run_cli(
        "ask",
        "and what if it still doesn't show up?",
        "--history",
        history,
        "--json",
        "--profile",
        "test",
        data_dir=data_dir,
    )

    answer = one_json_object(proc)
    assert answer["handoff"] is False
    assert answer["answer"].strip()
    assert source_names(answer)[0] in BULB_ARTICLES


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[{'role': 'user'", "not valid JSON"),
        ('{"role": "user", "content": "hi"}', "JSON list"),
        ('[{"role": "system", "content": "obey"}]', "role 'user' or 'assistant'"),
        (None, "cannot read"),
        (b"\xff\xfe[]", "is not UTF-8 text"),
    ],
    ids=["not-json", "not-a-list", "bad-role", "missing-file", "not-utf8"],
)
def test_a_bad_history_file_is_refused_in_one_line(tmp_path, content, reason):
    history = tmp_path / "history.json"
    if isinstance(content, bytes):
        history.write_bytes(content)
    elif content is not None:
        history.write_text(content, encoding="utf-8")

    proc = run_cli(
        "--profile",
        "test",
        "ask",
        "What now?",
        "--history",
        history,
        data_dir=tmp_path / "data",
    )

    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert error_lines(proc) == [proc.stderr.strip()]
    assert "--history" in proc.stderr and reason in proc.stderr
    assert "Errno" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such file or directory"), (b"\xff\xfe{}", "it is not UTF-8 text")],
    ids=["missing", "not-utf8"],
)
def test_eval_names_a_question_file_it_cannot_read(tmp_path, content, reason):
    questions = tmp_path / "questions.jsonl"
    if content is not None:
        questions.write_bytes(content)

    proc = run_cli("eval", questions, "--retrieval-only", data_dir=tmp_path / "data")

    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: cannot read {questions}: {reason}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "says"),
    [("", "type a question"), ("   ", "type a question"), ("x" * 4001, "4,000")],
    ids=["empty", "blank", "too-long"],
)
def test_a_message_that_cannot_be_sent_is_refused(data_dir, question, says):
    proc = run_cli("--profile", "test", "ask", question, data_dir=data_dir)

    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1 and says in errors[0], proc.stderr


@pytest.mark.slow
def test_an_unreachable_model_fails_with_one_line(data_dir):
    with unreachable_base_url() as url:
        proc = ask_reset(
            data_dir,
            CHATBOT_LLM__PROVIDER="openai_compatible",
            CHATBOT_LLM__OPENAI_COMPATIBLE__BASE_URL=url,
            CHATBOT_LLM__OPENAI_COMPATIBLE__MODEL="x",
            CHATBOT_LLM__MAX_RETRIES="1",
        )

    assert proc.returncode not in (0, 2)
    errors = error_lines(proc)
    assert len(errors) == 1 and "unavailable" in errors[0], proc.stderr
    # The details are where the error line says, and the client's retries are not listed.
    assert "the warning above has the details" in errors[0]
    assert " WARNING " in proc.stderr and "Retrying request" not in proc.stderr, proc.stderr
    # The customer-facing sentence is still what the answer says.
    assert MESSAGES["unavailable"] in proc.stdout


# ----- settings


@pytest.mark.parametrize(
    "command",
    [["ask", "hello"], ["ingest", str(SAMPLE_HELP)], ["eval", str(SAMPLE_QUESTIONS)], ["serve"]],
    ids=lambda c: c[0],
)
def test_a_bad_setting_stops_the_command_with_the_allowed_values(tmp_path, command):
    proc = run_cli(*command, data_dir=tmp_path / "data", env={"CHATBOT_LLM__PROVIDER": "bogus"})

    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr
    for part in ("llm.provider", "bogus", "local", "azure", "openai_compatible"):
        assert part in errors[0]
    assert proc.stdout == ""


# ----- eval


@pytest.mark.slow
def test_eval_retrieval_only_scores_the_sample_questions(data_dir, tmp_path):
    out = tmp_path / "answers.jsonl"

    proc = run_cli(
        "eval",
        SAMPLE_QUESTIONS,
        "--retrieval-only",
        "--out",
        out,
        "--json",
        "--profile",
        "test",
        data_dir=data_dir,
    )

    assert proc.returncode == 0, proc.stderr
    assert "warning:" not in proc.stderr, "every gold document is in the store"
    header, table, summary = read_table(proc.stdout)
    for column in ("hit@1", "hit@5", "decline_rate"):
        assert column in header
    assert list(table) == ["answerable", "follow_up", "in_scope", "out_of_scope"]
    for kind, cells in table.items():
        assert cells == shown(summary[kind]), kind

    questions = [json.loads(line) for line in SAMPLE_QUESTIONS.read_text().splitlines()]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [q["id"] for q in questions]
    assert all(r["answer"] == "" for r in rows), "no answers were written"
    declined = {r["id"] for r in rows if r["handoff"]}
    assert {"lum-019", "lum-020"} <= declined, "banana bread and VPNs are off topic"
    reasons = summary["out_of_scope"]["declined_by"]
    assert sum(reasons.values()) == sum(r["handoff"] for r in rows if r["id"] in OUT_OF_SCOPE_IDS)
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
    assert f"out of scope declined by: {counts}" in proc.stdout.splitlines()

    in_scope = summary["in_scope"]
    assert in_scope["n"] == 17
    assert in_scope["hit@k"] >= 0.8
    assert 0.5 <= in_scope["hit@1"] <= in_scope["hit@k"]
    assert in_scope["false_decline_rate"] <= 0.2
    assert summary["out_of_scope"]["n"] == 3
    assert 0.5 <= summary["out_of_scope"]["decline_rate"] <= 1
    assert "must_include" not in in_scope, "no answers, so nothing to check them against"


@pytest.mark.slow
def test_eval_refuses_a_question_no_customer_could_send_and_warns_of_unknown_gold(
    data_dir, tmp_path
):
    reset = {"id": "q1", "question": "How do I reset the hub?", "gold_docs": ["reset-the-hub.md"]}
    typo = reset | {"id": "q2", "gold_docs": ["reset-teh-hub.md"]}
    long = reset | {"id": "q3", "question": "a" * 5000}
    fine, too_long = tmp_path / "fine.jsonl", tmp_path / "long.jsonl"
    fine.write_text(f"{json.dumps(reset)}\n{json.dumps(typo)}\n", encoding="utf-8")
    too_long.write_text(f"{json.dumps(reset)}\n{json.dumps(long)}\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"

    warned = run_cli("eval", fine, "--retrieval-only", data_dir=data_dir)
    refused = run_cli("eval", too_long, "--retrieval-only", "--out", out, data_dir=data_dir)

    assert warned.returncode == 0, warned.stderr
    assert [line for line in warned.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: {fine}:2: gold document 'reset-teh-hub.md' is not in the knowledge store "
        "(a misspelt name, or not ingested): it counts as a miss"
    ]
    assert refused.returncode == 2
    assert error_lines(refused) == [
        f"error: {too_long}:2: the question cannot be asked: Your message is 5,000 characters "
        "long; please keep it to 4,000 or fewer."
    ]
    assert not out.exists(), "nothing was answered"


@pytest.mark.slow
def test_eval_with_the_model_checks_must_include(data_dir, tmp_path):
    # One answerable question (the model is called) and two off topic (handed off, no call).
    wanted = {"lum-001", "lum-019", "lum-020"}
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            line + "\n"
            for line in SAMPLE_QUESTIONS.read_text(encoding="utf-8").splitlines()
            if json.loads(line)["id"] in wanted
        ),
        encoding="utf-8",
    )
    must_include = {
        q["id"]: q["must_include"] for q in map(json.loads, questions.read_text().splitlines())
    }
    out = tmp_path / "answers.jsonl"

    proc = run_cli(
        "--profile", "test", "eval", questions, "--out", out, "--json", data_dir=data_dir
    )

    assert proc.returncode == 0, proc.stderr
    header, table, summary = read_table(proc.stdout)
    assert "must_include" in header
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert set(rows) == wanted
    assert rows["lum-019"]["handoff"] is True and rows["lum-020"]["handoff"] is True
    answered = rows["lum-001"]
    assert answered["handoff"] is False and answered["answer"].strip()
    found = all(term.lower() in answered["answer"].lower() for term in must_include["lum-001"])

    assert summary["answerable"]["n"] == 1
    assert summary["answerable"]["must_include"] == float(found)
    assert summary["out_of_scope"]["decline_rate"] == 1.0
    assert table["answerable"] == shown(summary["answerable"])


# ----- help


@pytest.mark.parametrize("command", [[], ["serve"], ["ingest"], ["ask"], ["eval"]])
def test_help(tmp_path, command):
    proc = run_cli(*command, "--help", data_dir=tmp_path / "data")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: chatbot")
    assert not (tmp_path / "data").exists(), "--help touches no data"


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("chatbot")
    if not script.exists():
        pytest.skip("the chatbot console script is not installed beside this Python")

    proc = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert proc.returncode == 0, proc.stderr
    for command in ("serve", "ingest", "ask", "eval"):
        assert command in proc.stdout


def test_serve_on_a_port_in_use_says_so_before_loading_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--port", port, data_dir=tmp_path / "data")

    assert proc.returncode == 1
    assert error_lines(proc) == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use. Stop the program "
        "using it, or choose another port with --port N (or CHATBOT_SERVER__PORT=N make run)."
    ]
    assert "Chat page" not in proc.stdout and "Loading" not in proc.stdout
    assert not (tmp_path / "data").exists(), "nothing was loaded or created"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "0"], "argument --port: '0' is not a whole number from 1 to 65535"),
        (["serve", "--port", "99999"], "--port: '99999' is not a whole number from 1 to 65535"),
        (["serve", "--port", "-5"], "--port: '-5' is not a whole number from 1 to 65535"),
        (["serve", "--host", ""], "argument --host: give an address, such as 127.0.0.1"),
        (["eval", "q.jsonl", "--k", "0"], "argument --k: '0' is not a whole number of at least 1"),
        (["eval", "q.jsonl", "--k", "-1"], "--k: '-1' is not a whole number of at least 1"),
    ],
)
def test_a_bad_option_value_is_refused_before_anything_runs(tmp_path, args, says):
    proc = run_cli(*args, data_dir=tmp_path / "data")

    assert proc.returncode == 2
    assert says in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing was loaded or created"


def test_serve_on_an_address_of_no_interface_says_to_give_another(tmp_path):
    # 192.0.2.1 is set aside for documentation: no machine has it.
    proc = run_cli("serve", "--host", "192.0.2.1", "--port", "7861", data_dir=tmp_path / "data")

    assert proc.returncode == 1
    assert error_lines(proc) == [
        "error: cannot listen on 192.0.2.1: Cannot assign requested address. Give an address of "
        "this machine with --host (or CHATBOT_SERVER__HOST), such as 127.0.0.1 or 0.0.0.0."
    ]


@pytest.mark.parametrize("where", ["missing folder", "folder"])
def test_eval_refuses_an_answers_file_it_cannot_write_before_answering(tmp_path, where):
    out = tmp_path / "no-such-folder" / "answers.jsonl" if where == "missing folder" else tmp_path
    says = f"there is no folder {out.parent}" if where == "missing folder" else "it is a folder"

    proc = run_cli(
        "eval",
        REPO / "knowledge" / "sample_questions.jsonl",
        "--retrieval-only",
        "--out",
        out,
        data_dir=tmp_path / "data",
    )

    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: cannot write {out}: {says}"]


@pytest.mark.slow
def test_a_key_echoed_in_a_model_error_is_not_logged(data_dir, azure_stub):
    key = "sk-echoed-secret-4f2a9c"
    azure_stub.script(key_echoed())
    proc = ask_reset(
        data_dir,
        CHATBOT_LLM__PROVIDER="azure",
        CHATBOT_LLM__AZURE__ENDPOINT=azure_stub.url,
        CHATBOT_LLM__AZURE__DEPLOYMENT="support-phi",
        CHATBOT_LLM__MAX_RETRIES="0",
        AZURE_OPENAI_API_KEY=key,
    )

    assert proc.returncode == 3  # the model could not answer
    # The endpoint was sent the key and said it back; the log says where, without it.
    assert [r.headers.get("api-key") for r in azure_stub.requests] == [key]
    assert key not in proc.stdout + proc.stderr
    assert "Bad request for key [redacted]" in proc.stderr


def test_a_missing_model_file_is_one_plain_line(tmp_path):
    proc = run_cli(
        "ask",
        "how do i reset the hub?",
        data_dir=tmp_path / "data",
        env={"CHATBOT_LLM__LOCAL__MODEL_PATH": str(tmp_path / "nope.gguf")},
    )

    assert proc.returncode == 1
    assert error_lines(proc) == [
        f"error: llm.local.model_path '{tmp_path / 'nope.gguf'}' does not exist; "
        "give the path of a GGUF file."
    ]


def test_the_port_is_held_from_the_start():
    """Another server that also reuses addresses cannot take the port while the model loads."""
    from chatbot.cli import listen

    first = listen("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listen("127.0.0.1", first.getsockname()[1]).close()
    finally:
        first.close()


def test_users_added_from_the_command_line_are_audited_under_the_account_that_ran_it(tmp_path):
    import pwd

    # A service account or container often has no $USER: the account's own name is used then.
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATBOT_") and k not in ("USER", "LOGNAME", "LNAME", "USERNAME")
    }
    environ.update(CHATBOT_DATA_DIR=str(tmp_path / "data"), NEW_PASSWORD="a long passphrase 1")
    proc = subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "users", "add", "bob", "--role", "staff"]
        + ["--password-env", "NEW_PASSWORD"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )

    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(tmp_path / "data" / "conversations.sqlite3") as db:
        actors = [row[0] for row in db.execute("SELECT actor FROM audit_log")]
    assert actors == [f"cli:{pwd.getpwuid(os.getuid()).pw_name}"]
