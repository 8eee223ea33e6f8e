"""The `chatbot` command: serve, ingest, ask, eval."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from chatbot.redact import redact_logs
from chatbot.settings import Settings, SettingsError, UnknownCollection, load_settings

log = logging.getLogger("chatbot")


def _disable_telemetry() -> None:
    # Read at import time by Gradio, Chroma and the Hugging Face libraries: set before importing.
    for name, value in {
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ANONYMIZED_TELEMETRY": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(name, value)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.profile)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Per-request lines from the HTTP client and model loaders drown the service's own log.
    # (The OpenAI client's "Retrying request" notes too: a call that fails in the end is
    # reported once, with its reason.)
    for noisy in ("httpx", "httpx2", "sentence_transformers", "chromadb", "urllib3", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # A damaged PDF is reported once, as the file's own failure; pypdf's warnings about its
    # header and trailer say the same thing less clearly.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    redact_logs(settings.secret_env_names())
    return settings


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    updates = {}
    if args.host is not None:
        updates["host"] = args.host
    if args.port is not None:
        updates["port"] = args.port
    if updates:
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update=updates)}
        )
    from chatbot.service import create_service, ensure_sample_knowledge

    # The port is taken before anything slow is loaded: a port in use is said at once, and the
    # address printed later is this server's, not another program's.
    host, port = settings.server.host, settings.server.port
    try:
        listening = listen(host, port)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            return _fail(
                f"cannot listen on {host}: {exc.strerror or exc}. Give an address of this "
                "machine with --host (or CHATBOT_SERVER__HOST), such as 127.0.0.1 or 0.0.0.0."
            )
        return _fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Stop the program using "
            "it, or choose another port with --port N (or CHATBOT_SERVER__PORT=N make run)."
        )
    # SIGTERM (docker stop, systemd) must clean up like Ctrl-C: the local model server runs in
    # its own process group and would otherwise outlive the app.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print("Loading the knowledge store and the model…", flush=True)
    service = None
    try:
        service = create_service(settings)
        report = ensure_sample_knowledge(service)
        if report is not None:
            print(f"Ingested the sample help center: {_counts(report)}", flush=True)
        service.prepare_search()
        service.keep_search_ready(settings.retrieval.index_check_s)
        from ui.web import serve

        serve(service, settings, listening)
    finally:
        listening.close()
        if service is not None:
            service.close()
    return 0


# Connections waiting to be accepted (uvicorn's default).
LISTEN_BACKLOG = 2048


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` for the server to accept connections on."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening holds the port: a bound socket alone would let another server that also
        # reuses addresses take it while the model loads.
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _counts(report) -> str:
    counts = report.counts()
    if report.removed:
        counts["removed"] = len(report.removed)
    return ", ".join(f"{count} {name}" for name, count in counts.items())


# The audit log's "who" for documents changed by `chatbot ingest`.
INGEST_ACTOR = "chatbot ingest"
# Seconds between the lines that say how far a large file's embedding has got.
PROGRESS_EVERY_S = 10.0


def cmd_ingest(args: argparse.Namespace) -> int:
    from knowledge.ingest import UNSUPPORTED, not_a_document
    from knowledge.loaders import SUPPORTED_SUFFIXES
    from knowledge.store import EMBED_BATCH

    settings = _settings(args)
    if any(not p.strip() for p in args.paths):
        # Path("") is the current folder: an unset variable would ingest (or, with --prune,
        # empty the store against) wherever the command happens to run.
        return _fail("an empty path was given (an unset variable?): name a file or folder", 2)
    missing = [p for p in args.paths if not Path(p).exists()]
    if args.prune and missing:
        # Pruning against a mistyped folder would empty the store.
        return _fail(f"--prune needs every path to exist: no such file or folder: {missing[0]}", 2)
    if not args.verbose:
        # The counts and each failure are the output; the service's progress notes are not.
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    from chatbot.service import create_service

    # Nothing else runs in this process: the embeddings may use every core.
    update: dict = {"embedding_threads": 0}
    if args.collection:
        try:
            update["collection"] = settings.known_collection(args.collection)
        except UnknownCollection as exc:
            return _fail(
                f"there is no knowledge collection '{exc.name}'; the config names "
                f"{', '.join(exc.known)} (retrieval.collection and the sites' collection settings)",
                2,
            )
    retrieval = settings.retrieval.model_copy(update=update)
    settings = settings.model_copy(update={"retrieval": retrieval})

    service = create_service(settings, with_model=False)

    talk = sys.stderr.isatty() or args.verbose
    said_at = 0.0

    def progress(number: int, total: int, source: str) -> None:
        if talk:
            print(f"[{number}/{total}] {source}", file=sys.stderr, flush=True)

    def file_progress(source: str, stage: str, done: int, total: int) -> None:
        # Only a file embedded in several batches takes long enough to need more than its name:
        # its size first, then how far it has got, every PROGRESS_EVERY_S at most.
        nonlocal said_at
        if not talk or stage != "embedding" or total <= EMBED_BATCH:
            return
        now = time.monotonic()
        if done == 0:
            print(f"  embedding {total:,} passages…", file=sys.stderr, flush=True)
        elif done < total and now - said_at >= PROGRESS_EVERY_S:
            print(f"  {done:,} of {total:,} embedded", file=sys.stderr, flush=True)
        else:
            return
        said_at = now

    report = service.ingest(
        [Path(p) for p in args.paths],
        progress=progress,
        prune=args.prune,
        file_progress=file_progress,
    )
    if report.added or report.updated or report.removed:
        _record_ingest(service, settings, report)
    for source, reason in report.failed:
        print(f"failed: {source}: {reason}", file=sys.stderr)
    if args.verbose:
        for source, reason in report.skipped:
            print(f"skipped: {source}: {reason}", file=sys.stderr)
        for source in report.removed:
            print(f"removed: {source}", file=sys.stderr)
    print(_counts(report))
    if report.ok and not (report.added or report.updated or report.unchanged):
        # Skipped as documents (a duplicate, a page of links only), not for their file type.
        passed_over = [s for s, reason in report.skipped if not not_a_document(reason)]
        if not passed_over:
            # Nothing that is a document: other file types, links to folders, pipes.
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            links = [s for s, reason in report.skipped if not reason.startswith(UNSUPPORTED)]
            hint = (
                f"; {len(links)} {'link or special file' if len(links) == 1 else 'links or special files'}"
                " passed over (-v says why)"
                if links and not args.verbose
                else ""
            )
            return _fail(
                f"no documents to ingest in {', '.join(args.paths)} (supported: {kinds}){hint}"
            )
        if not args.verbose:
            print(f"nothing ingested: {len(passed_over)} skipped (-v says why)", file=sys.stderr)
    return 0 if report.ok else 1


def _record_ingest(service, settings, report) -> None:
    """Audit what the command line added or replaced, as the documents page does; those
    documents no longer show the uploader of an earlier version."""
    from chatbot.documents import DocumentLibrary
    from chatbot.users import UserDirectory

    users = UserDirectory(settings.data_dir / settings.memory.database, settings.auth)
    DocumentLibrary(service, users).record_outside_changes(
        report.added, report.updated, INGEST_ACTOR, removed=report.removed
    )


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from chatbot.errors import InputRejected
    from chatbot.history import load_history_file
    from chatbot.service import (
        DoneEvent,
        TokenEvent,
        create_service,
        ensure_sample_knowledge,
        validate_message,
    )

    try:
        history = load_history_file(Path(args.history)) if args.history else []
        validate_message(args.question, settings.chat.max_message_chars)
    except InputRejected as exc:
        return _fail(exc.message, 2)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"--history: {_cannot_read(args.history, exc)}", 2)
    except ValueError as exc:
        return _fail(f"--history: {exc}", 2)
    service = create_service(settings)
    try:
        ensure_sample_knowledge(service)
        result = None
        for event in service.stream(args.question, history):
            if isinstance(event, TokenEvent) and not args.json:
                print(event.text, end="", flush=True)
            elif isinstance(event, DoneEvent):
                result = event.result
    except InputRejected as exc:
        return _fail(exc.message, 2)
    finally:
        service.close()
    assert result is not None
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print()
        for number, source in enumerate(result.sources, start=1):
            # Listed by rank; the figure is the best passage's similarity, which the threshold sees.
            print(f"[{number}] {source.title} ({source.source}, similarity {source.score:.2f})")
    if result.error:
        return _fail(
            f"the model call failed ({result.error}); check the llm settings and that the model "
            "endpoint is reachable (the warning above has the details)",
            3,
        )
    return 0


def _cannot_read(path: str, exc: OSError | UnicodeDecodeError) -> str:
    """Why a file named on the command line could not be read, in words, without an errno."""
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot read {path}: it is not UTF-8 text"
    return f"cannot read {path}: {(exc.strerror or str(exc)).lower()}"


def cmd_eval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.out:
        # Checked before the questions are answered, which can take a while.
        out = Path(args.out)
        if out.is_dir():
            return _fail(f"cannot write {out}: it is a folder", 2)
        if not out.parent.is_dir():
            return _fail(f"cannot write {out}: there is no folder {out.parent}", 2)
    if args.k is not None:
        settings = settings.model_copy(
            update={"retrieval": settings.retrieval.model_copy(update={"top_k": args.k})}
        )
    from chatbot.errors import InputRejected
    from chatbot.evaluation import format_summary, load_questions, run_eval, unknown_gold
    from chatbot.service import create_service

    doubts: list[str] = []
    try:
        questions = load_questions(Path(args.questions), warnings=doubts)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(_cannot_read(args.questions, exc), 2)
    except ValueError as exc:
        return _fail(str(exc), 2)
    service = create_service(settings, with_model=not args.retrieval_only)
    try:
        # A question a customer could not send would stop the run half-way: refused first.
        for q in questions:
            try:
                service.check_message(q.question)
            except InputRejected as exc:
                return _fail(
                    f"{args.questions}:{q.line}: the question cannot be asked: {exc.message}", 2
                )
        stored = [d.source for d in service.retriever.store.documents()]
        doubts += unknown_gold(questions, stored, args.questions)
        for doubt in doubts:
            print(f"warning: {doubt}", file=sys.stderr)
        if args.retrieval_only:
            answer = lambda q, h: service.retrieval_only(q, h).to_dict()  # noqa: E731
        else:
            answer = lambda q, h: service.ask(q, h).to_dict()  # noqa: E731

        def progress(number: int, total: int) -> None:
            if sys.stderr.isatty():
                print(f"\r{number}/{total}", end="", file=sys.stderr, flush=True)

        _, summary = run_eval(
            questions,
            answer,
            k=settings.retrieval.top_k,
            with_answers=not args.retrieval_only,
            out=Path(args.out) if args.out else None,
            progress=progress,
        )
    finally:
        service.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(format_summary(summary, settings.retrieval.top_k))
    if args.json:
        print(json.dumps(summary))
    return 0


def _password(args: argparse.Namespace) -> str:
    """From --password-env, else piped stdin, else an interactive prompt typed twice."""
    if args.password_env:
        if not os.environ.get(args.password_env):
            raise ValueError(f"the environment variable {args.password_env} is empty")
        return os.environ[args.password_env]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise ValueError("the two passwords differ")
    return first


def _login_name() -> str:
    """Who runs the command, for the audit log: $USER, else the account's name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such variable, and a user id with no account
        return "unknown"


def cmd_users(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from chatbot.users import AccountError, UserDirectory

    users = UserDirectory(settings.data_dir / settings.memory.database, settings.auth)
    actor = f"cli:{_login_name()}"
    try:
        if args.users == "list":
            for user in users.users():
                print(f"{user.username}\t{user.role.value}")
        elif args.users == "add":
            user = users.add_user(args.username, _password(args), args.role, actor=actor)
            print(f"added {user.username} ({user.role.value})")
        elif args.users == "set-role":
            user = users.set_role(args.username, args.role, actor=actor)
            print(f"{user.username} is now {user.role.value}")
        elif args.users == "set-password":
            users.set_password(args.username, _password(args), actor=actor)
            print(f"password of {args.username} changed; its sign-ins were ended")
        elif args.users == "remove":
            users.remove(args.username, actor=actor)
            print(f"removed {args.username}")
    except AccountError as exc:
        return _fail(exc.message, 2)
    except ValueError as exc:
        return _fail(str(exc), 2)
    return 0


def _bench_progress(number: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{number}/{total}", end="", file=sys.stderr, flush=True)


def _print_bench(summary: dict, as_json: bool) -> None:
    from chatbot.bench import format_table

    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(summary) if as_json else format_table(summary))


def cmd_bench_memory(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from chatbot.bench import memory_benchmark, scratch_data_dir
    from chatbot.evaluation import OUT_OF_SCOPE, load_questions
    from chatbot.service import SAMPLE_KNOWLEDGE_DIR, create_service

    # The server gets exactly the window under test, so an oversized prompt would fail for real.
    llm = settings.llm.model_copy(
        update={
            "context_window": args.window,
            "local": settings.llm.local.model_copy(update={"n_ctx": args.window}),
        }
    )
    settings = settings.model_copy(update={"llm": llm, "data_dir": scratch_data_dir()})
    questions = [
        q.question
        for q in load_questions(SAMPLE_KNOWLEDGE_DIR.parent / "sample_questions.jsonl")
        if q.kind != OUT_OF_SCOPE and not q.history
    ]
    service = None
    try:
        service = create_service(settings)
        service.ingest([SAMPLE_KNOWLEDGE_DIR])
        summary = memory_benchmark(
            service,
            turns=args.turns,
            window=args.window,
            questions=questions,
            progress=_bench_progress,
        )
    finally:
        if service is not None:
            service.close()
        shutil.rmtree(settings.data_dir, ignore_errors=True)  # the scratch store
    _print_bench(summary, args.json)
    return 0


def cmd_bench_verbosity(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from chatbot.bench import verbosity_benchmark
    from chatbot.service import create_service

    service = create_service(settings)
    try:
        if not service.store.documents():
            return _fail("the knowledge store is empty; run `chatbot ingest PATH` first", 2)
        summary = verbosity_benchmark(
            service,
            Path(args.questions),
            channel=args.channel,
            progress=_bench_progress,
            answers_path=Path(args.out) if args.out else None,
        )
    finally:
        service.close()
    _print_bench(summary, args.json)
    return 0


def _whole_number(text: str, low: int, high: int | None = None) -> int:
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        where = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number {where}")
    return number


def _port_number(text: str) -> int:
    return _whole_number(text, 1, 65535)


def _address(text: str) -> str:
    if not text.strip():
        # An empty address would listen on every interface.
        raise argparse.ArgumentTypeError("give an address, such as 127.0.0.1 or 0.0.0.0")
    return text.strip()


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatbot", description=__doc__)
    parser.add_argument("--profile", help="configs/<PROFILE>.yaml over configs/default.yaml")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the chat web app")
    serve.add_argument("--host", type=_address)
    serve.add_argument("--port", type=_port_number)
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser("ingest", help="add or update documents in the knowledge store")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("-v", "--verbose", action="store_true", help="list every file")
    ingest.add_argument(
        "--collection",
        metavar="NAME",
        help="a site's knowledge collection (default: retrieval.collection)",
    )
    ingest.add_argument(
        "--prune",
        action="store_true",
        help="then remove the collection's documents that no file under PATH provided "
        "(deleted or renamed files, and uploads from the Documents page)",
    )
    ingest.set_defaults(func=cmd_ingest)

    ask = sub.add_parser("ask", help="ask one question")
    ask.add_argument("question")
    ask.add_argument("--history", metavar="FILE", help='JSON list of {"role","content"} turns')
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.set_defaults(func=cmd_ask)

    evaluate = sub.add_parser("eval", help="score a question set (JSONL)")
    evaluate.add_argument("questions", metavar="QUESTIONS.jsonl")
    evaluate.add_argument("--out", metavar="ANSWERS.jsonl")
    evaluate.add_argument("--retrieval-only", action="store_true", help="skip writing answers")
    evaluate.add_argument(
        "--k", type=_positive, help="documents per question (default retrieval.top_k)"
    )
    evaluate.add_argument("--json", action="store_true", help="also print the summary as JSON")
    evaluate.set_defaults(func=cmd_eval)
    users = sub.add_parser(
        "users", help="staff accounts: add, list, set-role, set-password, remove"
    )
    users_sub = users.add_subparsers(dest="users", required=True)
    users_sub.add_parser("list", help="user names and roles").set_defaults(func=cmd_users)
    roles = ["staff", "content_owner", "admin"]
    for name, needs_role, needs_password in (
        ("add", True, True),
        ("set-role", True, False),
        ("set-password", False, True),
        ("remove", False, False),
    ):
        command = users_sub.add_parser(name)
        command.add_argument("username")
        if needs_role:
            command.add_argument("--role", choices=roles, required=True)
        if needs_password:
            command.add_argument(
                "--password-env",
                metavar="VAR",
                help="read the password from this environment variable (else stdin or a prompt)",
            )
        command.set_defaults(func=cmd_users)
    bench = sub.add_parser("bench", help="benchmarks that print numbers")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    memory = bench_sub.add_parser("memory", help="a long scripted conversation in a small window")
    memory.add_argument("--turns", type=int, default=100)
    memory.add_argument("--window", type=int, default=2048, help="context window in tokens")
    memory.add_argument("--json", action="store_true")
    memory.set_defaults(func=cmd_bench_memory)
    verbosity = bench_sub.add_parser("verbosity", help="answer length with the policy off and on")
    verbosity.add_argument("questions", metavar="QUESTIONS.jsonl")
    verbosity.add_argument("--channel", default="widget", choices=["widget", "staff", "api"])
    verbosity.add_argument("--json", action="store_true")
    verbosity.add_argument(
        "--out", metavar="ANSWERS.jsonl", help="write every answer, both ways, one JSON per line"
    )
    verbosity.set_defaults(func=cmd_bench_verbosity)
    return parser


def main(argv: list[str] | None = None) -> int:
    # --profile is accepted after the subcommand too: `chatbot serve --profile azure`.
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--profile" in argv[1:]:
        i = argv.index("--profile")
        if i + 1 < len(argv):
            argv = argv[i : i + 2] + argv[:i] + argv[i + 2 :]
    args = build_parser().parse_args(argv)
    _disable_telemetry()
    try:
        return args.func(args)
    except SettingsError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, the trace in the log
        log.debug("command failed", exc_info=True)
        # This project's own errors are written for the user; others say what kind they are.
        ours = type(exc).__module__.partition(".")[0] in ("chatbot", "knowledge", "ui")
        return _fail(str(exc) if ours else f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
