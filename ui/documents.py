"""Knowledge documents for content owners: the REST API under /api/v1/documents and the page.

Every route works on one knowledge collection: ``?collection=NAME`` names one of those the
config uses (``retrieval.collection``, the default, and the sites' own).
Uploads are streamed into a temporary folder within the configured limits and only then handed
to the document library (chatbot.documents), which ingests them one file at a time.
"""

import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Annotated, BinaryIO
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from chatbot.documents import (
    DocumentLibraries,
    DocumentLibrary,
    DocumentPreview,
    IndexProgress,
    LibraryDocument,
    ReceivedFile,
    UploadResult,
    UploadStatus,
)
from chatbot.service import ChatService
from chatbot.settings import UnknownCollection
from chatbot.users import Role, User, UserDirectory
from knowledge.ingest import source_name
from knowledge.loaders import SUPPORTED_SUFFIXES, suffixes_of_kind
from knowledge.macros import INCLUDE_DIR_NAMES
from knowledge.store import DocumentRecord
from ui.api import ERRORS, PREFIX, ErrorResponse, error_response
from ui.staff import TEMPLATES, PageNotices, render, require, wants_html

# Room for the part headers and boundaries around the files of one multipart request.
MULTIPART_OVERHEAD_BYTES = 1 << 20
# Long enough for any real article name, short enough for every file system.
MAX_NAME_BYTES = 200
STATIC = Path(__file__).resolve().parent / "static"
TAGS: list[str | Enum] = ["documents"]
# The header an upload may carry to have its indexing followed (GET .../documents/uploads/ID).
UPLOAD_ID_HEADER = "X-Upload-Id"
UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
# Uploads followed at once; past this, more are indexed as usual but not followed.
MAX_FOLLOWED_UPLOADS = 1000
# An ended upload still answers for this long, so that a page's question sent as it ended is
# answered "done" rather than "not found".
ENDED_UPLOAD_KEPT_S = 60.0


# ----- response bodies (they make the OpenAPI schema)
class DocumentOut(BaseModel):
    id: str = Field(description="Stable id of the document, derived from its source name.")
    title: str
    source: str = Field(description="The file name the document was uploaded or ingested as.")
    chunk_count: int
    size_bytes: int
    format: str
    uploader: str | None = Field(
        description="Who added or last replaced it here; null if it came by the command line."
    )
    updated_at: float = Field(description="When its live version was indexed (Unix time).")


class ChunkOut(BaseModel):
    heading: str
    text: str


class DocumentDetail(DocumentOut):
    chunks: list[ChunkOut] = Field(description="The live version's chunks, in document order.")


class FileResult(BaseModel):
    file: str = Field(
        description="For an upload, the name the document is stored under (as cleaned from "
        "the name sent; a name that cannot be used, as sent); for a new version, the new file's "
        "own name (the document keeps its name)."
    )
    status: UploadStatus
    reason: str | None = Field(None, description="Why a file was refused or not indexed.")
    document: DocumentOut | None = Field(
        None,
        description="The document now live under this name; for a duplicate, the document "
        "that already has this content.",
    )


class UploadResults(BaseModel):
    results: list[FileResult]


class UploadProgress(BaseModel):
    file: str | None = Field(
        None, description="The file being indexed (null while the request is being received)."
    )
    stage: str = Field(
        description="receiving (the request), reading (the file), embedding (its passages), "
        "saving (to the store), done (the upload has ended; its answer says how each file "
        "went)."
    )
    done: int = Field(0, description="While embedding: the passages embedded so far.")
    total: int = Field(0, description="While embedding: the file's passages (chunks).")


class FollowedUploads:
    """How each upload that gave an id is getting on, for the person who sent it.

    Ids are per person: one content owner's id never touches another's upload. Kept in this
    process's memory while the upload runs, and for ``ended_kept_s`` after it ends (as "done",
    so that a question sent just as it ended is not answered "not found"); safe to use from
    several threads.
    """

    def __init__(
        self,
        most: int = MAX_FOLLOWED_UPLOADS,
        ended_kept_s: float = ENDED_UPLOAD_KEPT_S,
        clock=time.monotonic,
    ):
        self.most = most
        self.ended_kept_s = ended_kept_s
        self._clock = clock
        self._lock = threading.Lock()
        self._uploads: dict[tuple[str, str], UploadProgress] = {}
        # Ended uploads, oldest first: when each ended and its last state.
        self._ended: dict[tuple[str, str], tuple[float, UploadProgress]] = {}

    def start(self, username: str, upload_id: str) -> bool | None:
        """Follow a new upload: True; False if this person has a running upload with this id;
        None if too many uploads are followed (it is indexed all the same, unfollowed)."""
        key = (username, upload_id)
        with self._lock:
            if key in self._uploads:
                return False
            if len(self._uploads) >= self.most:
                return None
            self._ended.pop(key, None)
            self._uploads[key] = UploadProgress(stage="receiving")
            return True

    def reporter(self, username: str, upload_id: str) -> IndexProgress:
        key = (username, upload_id)

        def report(name: str, stage: str, done: int, total: int) -> None:
            with self._lock:
                if key in self._uploads:
                    self._uploads[key] = UploadProgress(
                        file=name, stage=stage, done=done, total=total
                    )

        return report

    def get(self, username: str, upload_id: str) -> UploadProgress | None:
        """The progress of ``username``'s upload with this id, running or lately ended."""
        key = (username, upload_id)
        with self._lock:
            self._forget_ended()
            running = self._uploads.get(key)
            if running is not None:
                return running
            ended = self._ended.get(key)
            return ended[1] if ended is not None else None

    def finish(self, username: str, upload_id: str) -> None:
        key = (username, upload_id)
        with self._lock:
            last = self._uploads.pop(key, None)
            if last is None:
                return
            self._forget_ended()
            while len(self._ended) >= self.most:
                self._ended.pop(next(iter(self._ended)))
            self._ended[key] = (
                self._clock(),
                UploadProgress(file=last.file, stage="done", done=last.done, total=last.total),
            )

    def _forget_ended(self) -> None:
        """Drop the uploads that ended more than ``ended_kept_s`` ago (the lock is held)."""
        cutoff = self._clock() - self.ended_kept_s
        while self._ended:
            key, (ended_at, _) = next(iter(self._ended.items()))
            if ended_at > cutoff:
                break
            del self._ended[key]


# ----- receiving an upload
class UploadRefused(Exception):
    """A whole request refused (not multipart, no files, too large) before any file is used."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# A file name sent as the sender's own full path ("C:\\docs\\faq.md", "/home/ann/faq.md", as
# some old browsers send it), of which only the last part names the document.
FULL_PATH_RE = re.compile(r"^(?:/|[A-Za-z]:/)")


def upload_name(filename: str) -> str | None:
    """The name an upload is stored under, printable, with no hidden part: a relative path as
    sent ("billing/faq.md", as ``chatbot ingest`` names a folder's files, so that a sync
    from a CMS or a git repository can keep two articles called faq.md apart); the last part
    only of a full path or of one that climbs out with "..". None if nothing usable is left."""
    text = "".join(ch for ch in filename.replace("\\", "/") if ch.isprintable()).strip()
    parts = [part.strip() for part in text.split("/")]
    parts = [part for part in parts if part and part != "."]
    if FULL_PATH_RE.match(text) or ".." in parts:
        parts = parts[-1:]
    name = source_name("/".join(parts))
    if not parts or any(p.startswith(".") for p in parts) or len(name.encode()) > MAX_NAME_BYTES:
        return None
    return name


class _FileParts:
    """Callbacks of the streaming multipart parser: file parts of one field go to ``folder``.

    A file over ``max_file_bytes`` is dropped as it streams (never held whole) and the rest
    of the request still read, so that the files after it arrive.
    """

    def __init__(self, folder: Path, field: str, max_files: int, max_file_bytes: int):
        self.folder = folder
        self.field = field
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.files: list[ReceivedFile] = []
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._current: ReceivedFile | None = None
        self._handle: BinaryIO | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._add_header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add_header(1, data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._current = None

    def _add_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def on_header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name", b"").decode("utf-8", "replace") != self.field:
            return
        if b"filename" not in options:
            return
        sent = options[b"filename"].decode("utf-8", "replace")
        name = upload_name(sent)
        received = ReceivedFile(name or sent)
        self.files.append(received)
        self._current = received
        if len(self.files) > self.max_files:
            received.refusal = f"over the limit of {self.max_files} files per upload"
        elif name is None:
            received.refusal = "the file name is empty, hidden or too long; rename the file"
        elif any(f.path is not None and f.name == name for f in self.files):
            received.refusal = "another file in this upload has the same name"
        else:
            # Each file in a folder of its own, under its last name part: "a/faq.md" and
            # "b/faq.md" are two files, and no name sent can reach outside ``folder``.
            place = self.folder / str(len(self.files))
            place.mkdir()
            received.path = place / PurePosixPath(name).name
            self._handle = received.path.open("xb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        received = self._current
        if received is None:
            return
        received.size += end - start
        if self._handle is None:
            return
        if received.size > self.max_file_bytes:
            self.close()
            assert received.path is not None
            received.path.unlink()
            received.path = None
            received.refusal = "over the size limit"
            return
        self._handle.write(data[start:end])

    def on_part_end(self) -> None:
        received = self._current
        if received is not None and received.size > self.max_file_bytes:
            # The same wording as the loader's, now that the whole size is known.
            received.refusal = (
                f"the file is {received.size:,} bytes, over the limit of {self.max_file_bytes:,}"
            )
        self.close()
        self._current = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_files(
    request: Request, folder: Path, field: str, *, max_files: int, max_file_bytes: int
) -> list[ReceivedFile]:
    """Stream the files of multipart ``field`` into ``folder``; UploadRefused if unusable."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadRefused(
            "invalid_upload", f"Send the files as multipart/form-data in the field '{field}'."
        )
    max_body = max_files * max_file_bytes + MULTIPART_OVERHEAD_BYTES
    too_large = UploadRefused(
        "request_too_large",
        f"The upload is over {max_body:,} bytes. Send at most {max_files} files of at most "
        f"{max_file_bytes:,} bytes each.",
    )
    if int(request.headers.get("content-length") or 0) > max_body:
        raise too_large
    parts = _FileParts(folder, field, max_files, max_file_bytes)
    parser = MultipartParser(boundary, parts.callbacks())
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise too_large
            # Files are written by the callbacks: off the event loop.
            await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except FormParserError as exc:
        raise UploadRefused("invalid_upload", "The multipart body could not be read.") from exc
    finally:
        parts.close()
    if not parts.files:
        raise UploadRefused("invalid_upload", f"No file was sent in the field '{field}'.")
    return parts.files


# ----- from the library's results to the response bodies
def _document_out(document: LibraryDocument) -> DocumentOut:
    record = document.record
    return DocumentOut(
        id=record.doc_id,
        title=record.title,
        source=record.source,
        chunk_count=record.chunk_count,
        size_bytes=record.size_bytes,
        format=record.format,
        uploader=document.uploader,
        updated_at=record.updated_at,
    )


def _document_detail(preview: DocumentPreview) -> DocumentDetail:
    chunks = [ChunkOut(heading=c.heading, text=c.text) for c in preview.chunks]
    return DocumentDetail(**_document_out(preview.document).model_dump(), chunks=chunks)


def _file_result(result: UploadResult) -> FileResult:
    document = None if result.document is None else _document_out(result.document)
    return FileResult(
        file=result.file, status=result.status, reason=result.reason, document=document
    )


def human_size(size: int) -> str:
    if size < 1000:
        return f"{size:,} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


# ----- HTTP
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more Markdown, text, HTML, PDF or DOCX files.",
                        }
                    },
                    "required": ["files"],
                }
            }
        },
    }
}
REPLACE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}
UPLOAD_DOC = """Upload one or many files in the multipart field `files`.

Each file is indexed under the name it is sent with, folders included (`billing/faq.md`, the
name `chatbot ingest` gives that file of a folder; a full path such as `C:\\docs\\faq.md`, or
a name with a `..` part, keeps only its last part, and a name with a hidden part such as
`.git/x.md` is refused): a new name is
**added**, new content for a known name **updated** atomically, the same content **unchanged**,
and content that another document already has is reported as a **duplicate** of it and not
indexed twice (a document of the same name keeps its version). A refused file (unsupported type, empty, corrupt, over
`retrieval.max_file_bytes`, a PDF over `retrieval.max_pdf_pages` pages, past the first
`retrieval.max_files_per_upload` files) is **failed** with its reason; the other files go on.

Status: 200 with a result per file when at least one file did not fail; 400 with the same body
when every file failed; 413 when the request is larger than any acceptable upload.

To follow a long upload, give it an id of your choosing (8 to 64 letters, digits, `-` or `_`)
in the `X-Upload-Id` header and ask `GET /api/v1/documents/uploads/{id}` meanwhile. An id is
yours alone; reusing one while its upload still runs is a 409 (`upload_id_in_use`).
"""
PROGRESS_DOC = """How an upload sent with this id in its `X-Upload-Id` header is getting on: the file
being indexed and its stage, and while its passages are embedded, how many of how many.

Only the person who sent the upload sees it, while it runs and for a minute after it ends
(stage `done`): 404 before it starts, after that minute and for anyone else.
"""
REPLACE_DOC = """A new version of the document, in the multipart field `file`, of the same file type.

It keeps the document's source name and becomes live atomically: retrieval sees either the old
version or the new one, never a mix. 200 if updated or unchanged; 409 if another document
already has this content (nothing changes); 400 if the file is refused (the reason says why).
"""


def documents_router(service: ChatService, users: UserDirectory) -> APIRouter:
    router = APIRouter()
    libraries = DocumentLibraries(service, users)
    libraries.get()  # the default collection's library (and its table) at start-up
    # "Deleted X." after a delete's redirect: a one-time notice, so that no crafted address can
    # show it and a reload does not repeat it.
    notices = PageNotices()
    owner = Annotated[User, Depends(require(Role.CONTENT_OWNER))]
    uploads = FollowedUploads()

    def collection_library(
        user: owner,
        collection: Annotated[
            str,
            Query(
                description="The knowledge collection: retrieval.collection (the default when "
                "empty) or a site's own collection."
            ),
        ] = "",
    ) -> DocumentLibrary:
        # After the role check: a caller without the role learns nothing about collections.
        return libraries.get(collection)

    chosen = Annotated[DocumentLibrary, Depends(collection_library)]

    def max_file_bytes() -> int:
        return service.settings.retrieval.max_file_bytes

    def documents(library: DocumentLibrary) -> list[DocumentOut]:
        return [_document_out(d) for d in library.documents()]

    def detail(library: DocumentLibrary, record: DocumentRecord) -> DocumentDetail:
        return _document_detail(library.preview(record))

    @contextmanager
    def followed(request: Request, user: User) -> Iterator[IndexProgress | None]:
        """The reporter of an upload that gave an id in its X-Upload-Id header (else None)."""
        upload_id = request.headers.get(UPLOAD_ID_HEADER)
        if upload_id is None:
            yield None
            return
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise UploadRefused(
                "invalid_upload_id",
                f"The {UPLOAD_ID_HEADER} header must be 8 to 64 letters, digits, '-' or '_'.",
            )
        started = uploads.start(user.username, upload_id)
        if started is False:
            raise UploadRefused(
                "upload_id_in_use",
                f"Another upload of yours with this {UPLOAD_ID_HEADER} is still running; "
                "give each upload its own id.",
            )
        if started is None:
            yield None  # indexed all the same, without progress
            return
        try:
            yield uploads.reporter(user.username, upload_id)
        finally:
            uploads.finish(user.username, upload_id)

    async def upload(request: Request, library: DocumentLibrary, user: User) -> list[FileResult]:
        with (
            followed(request, user) as progress,
            tempfile.TemporaryDirectory(prefix="chatbot-upload-") as folder,
        ):
            files = await receive_files(
                request,
                Path(folder),
                "files",
                max_files=service.settings.retrieval.max_files_per_upload,
                max_file_bytes=max_file_bytes(),
            )
            results = await run_in_threadpool(library.add, files, user.username, progress)
        return [_file_result(r) for r in results]

    async def replace(
        request: Request, library: DocumentLibrary, doc_id: str, user: User
    ) -> FileResult | None:
        if library.find(doc_id) is None:
            return None
        with (
            followed(request, user) as progress,
            tempfile.TemporaryDirectory(prefix="chatbot-upload-") as folder,
        ):
            files = await receive_files(
                request, Path(folder), "file", max_files=1, max_file_bytes=max_file_bytes()
            )
            if len(files) > 1:
                raise UploadRefused("invalid_upload", "Send exactly one file in the field 'file'.")
            result = await run_in_threadpool(
                library.replace, doc_id, files[0], user.username, progress
            )
        return None if result is None else _file_result(result)

    # ----- API
    @router.post(
        f"{PREFIX}/documents",
        response_model=UploadResults,
        tags=TAGS,
        summary="Upload documents",
        description=UPLOAD_DOC,
        openapi_extra=UPLOAD_BODY,
        responses={
            400: {"model": UploadResults, "description": "Every file was refused."},
            409: {"model": ErrorResponse, "description": "The X-Upload-Id is in use."},
            **{code: ERRORS[code] for code in (401, 403, 404, 413)},
        },
    )
    async def upload_documents(request: Request, user: owner, library: chosen) -> Response:
        try:
            results = await upload(request, library, user)
        except UploadRefused as exc:
            return error_response(exc.code, exc.message)
        body = UploadResults(results=results).model_dump()
        return JSONResponse(body, status_code=_batch_status(results))

    @router.get(
        f"{PREFIX}/documents/uploads/{{upload_id}}",
        response_model=UploadProgress,
        tags=TAGS,
        summary="Follow an upload's indexing",
        description=PROGRESS_DOC,
        responses={code: ERRORS[code] for code in (401, 403, 404)},
    )
    def upload_progress(upload_id: str, user: owner) -> Response | UploadProgress:
        found = uploads.get(user.username, upload_id)
        if found is None:
            return error_response(
                "unknown_upload", "No upload of yours with this id is running (it may have ended)."
            )
        return found

    @router.get(
        f"{PREFIX}/documents",
        response_model=list[DocumentOut],
        tags=TAGS,
        summary="List documents",
        responses={code: ERRORS[code] for code in (401, 403, 404)},
    )
    def list_documents(user: owner, library: chosen) -> list[DocumentOut]:
        return documents(library)

    @router.get(
        f"{PREFIX}/documents/{{doc_id}}",
        response_model=DocumentDetail,
        tags=TAGS,
        summary="A document and its chunks",
        responses={code: ERRORS[code] for code in (401, 403, 404)},
    )
    def get_document(doc_id: str, user: owner, library: chosen) -> Response | DocumentDetail:
        record = library.find(doc_id)
        if record is None:
            return _no_document()
        return detail(library, record)

    @router.put(
        f"{PREFIX}/documents/{{doc_id}}",
        response_model=FileResult,
        tags=TAGS,
        summary="Replace a document with a new version",
        description=REPLACE_DOC,
        openapi_extra=REPLACE_BODY,
        responses={
            400: {"model": FileResult, "description": "The file was refused."},
            409: {
                "model": FileResult | ErrorResponse,
                "description": "Another document has this content (a result), or the "
                "X-Upload-Id is in use (an error).",
            },
            **{code: ERRORS[code] for code in (401, 403, 404, 413)},
        },
    )
    async def replace_document(
        request: Request, doc_id: str, user: owner, library: chosen
    ) -> Response:
        try:
            result = await replace(request, library, doc_id, user)
        except UploadRefused as exc:
            return error_response(exc.code, exc.message)
        if result is None:
            return _no_document()
        return JSONResponse(result.model_dump(), status_code=_replace_status(result))

    @router.delete(
        f"{PREFIX}/documents/{{doc_id}}",
        status_code=204,
        tags=TAGS,
        summary="Delete a document",
        response_class=Response,
        responses={code: ERRORS[code] for code in (401, 403, 404)},
    )
    def delete_document(doc_id: str, user: owner, library: chosen) -> Response:
        if library.delete(doc_id, user.username) is None:
            return _no_document()
        return Response(status_code=204)

    # ----- pages
    def page(request: Request, library: DocumentLibrary, code: int, **context) -> HTMLResponse:
        using = libraries.sites_using()
        return render(
            request, "documents.html", code, collection=library.collection,
            collections=list(using.items()) if len(using) > 1 else [],
            query=_collection_query(library),
            limits=_limits(service), human_size=human_size, **context,
        )  # fmt: skip

    def list_page(
        request: Request,
        library: DocumentLibrary,
        code: int = 200,
        results=None,
        error=None,
        notice=None,
    ) -> HTMLResponse:
        return page(
            request, library, code, title="Documents", documents=documents(library),
            document=None, results=results, error=error, notice=notice,
        )  # fmt: skip

    def document_page(
        request: Request,
        library: DocumentLibrary,
        record: DocumentRecord,
        code: int = 200,
        results=None,
        error=None,
    ) -> HTMLResponse:
        return page(
            request, library, code, title=record.title or record.source,
            document=detail(library, record), results=results, error=error,
        )  # fmt: skip

    @router.get("/staff/documents", include_in_schema=False)
    def documents_page(
        request: Request, user: owner, library: chosen, done: str = ""
    ) -> HTMLResponse:
        notice = notices.pop(done, user.username) if done else {}
        if notice.get("deleted"):
            return list_page(request, library, notice=f"Deleted {notice['deleted']}.")
        return list_page(request, library, notice=ALREADY_GONE if notice.get("gone") else None)

    @router.post("/staff/documents", include_in_schema=False)
    async def upload_form(request: Request, user: owner, library: chosen) -> HTMLResponse:
        try:
            results = await upload(request, library, user)
        except UploadRefused as exc:
            return list_page(request, library, _refusal_status(exc), error=exc.message)
        return list_page(request, library, _batch_status(results), results=results)

    @router.get("/staff/documents/{doc_id}", include_in_schema=False)
    def document_preview(
        request: Request, doc_id: str, user: owner, library: chosen
    ) -> HTMLResponse:
        record = library.find(doc_id)
        if record is None:
            return _not_found_page(request, NO_DOCUMENT)
        return document_page(request, library, record)

    @router.post("/staff/documents/{doc_id}/replace", include_in_schema=False)
    async def replace_form(
        request: Request, doc_id: str, user: owner, library: chosen
    ) -> HTMLResponse:
        try:
            result = await replace(request, library, doc_id, user)
        except UploadRefused as exc:
            record = library.find(doc_id)
            if record is None:
                return _not_found_page(request, NO_DOCUMENT)
            return document_page(request, library, record, _refusal_status(exc), error=exc.message)
        record = library.find(doc_id)
        if result is None or record is None:
            return _not_found_page(request, NO_DOCUMENT)
        return document_page(request, library, record, _replace_status(result), results=[result])

    @router.post("/staff/documents/{doc_id}/delete", include_in_schema=False)
    def delete_form(request: Request, doc_id: str, user: owner, library: chosen) -> Response:
        record = library.delete(doc_id, user.username)
        # Deleted meanwhile (in another tab, through the API): back to the list all the same,
        # which says so, and where a reload sends nothing again.
        key = (
            notices.put(user.username, gone=True)
            if record is None
            else notices.put(user.username, deleted=record.source)
        )
        query = urlencode({**_collection_params(library), "done": key})
        return RedirectResponse(f"/staff/documents?{query}", status_code=303)

    @router.get("/static/documents.js", include_in_schema=False)
    def documents_js() -> FileResponse:
        return FileResponse(STATIC / "documents.js", media_type="text/javascript")

    @router.get("/static/staff.js", include_in_schema=False)
    def staff_js() -> FileResponse:
        return FileResponse(STATIC / "staff.js", media_type="text/javascript")

    return router


def install_collection_refusal(app: FastAPI) -> None:
    """An unknown ``?collection=``: 404 with the known names, as a page or as an API error."""

    @app.exception_handler(UnknownCollection)
    async def _unknown_collection(request: Request, exc: UnknownCollection) -> Response:
        if wants_html(request):
            return _not_found_page(request, str(exc))
        return error_response("unknown_collection", str(exc))


# The file types a new version of a document may be: "accept" of its file picker.
TEMPLATES.env.filters["same_kind"] = lambda source: ",".join(suffixes_of_kind(source))

NO_DOCUMENT = "No document has this id; it may have been deleted."
ALREADY_GONE = "That document was no longer here: it had been deleted already."


def _not_found_page(request: Request, message: str) -> HTMLResponse:
    return render(request, "refused.html", 404, title="Not found", message=message)


def _collection_params(library: DocumentLibrary) -> dict[str, str]:
    """The query parameters that keep a page on its collection (none for the default one)."""
    if library.collection == library.service.store.collection:
        return {}
    return {"collection": library.collection}


def _collection_query(library: DocumentLibrary) -> str:
    """``?collection=NAME`` for links and forms, or empty for the default collection."""
    params = _collection_params(library)
    return f"?{urlencode(params)}" if params else ""


def _batch_status(results: list[FileResult]) -> int:
    return 400 if all(r.status == "failed" for r in results) else 200


def _replace_status(result: FileResult) -> int:
    return {"failed": 400, "duplicate": 409}.get(result.status, 200)


def _refusal_status(exc: UploadRefused) -> int:
    return 413 if exc.code == "request_too_large" else 400


def _no_document() -> JSONResponse:
    return JSONResponse({"error": {"code": "unknown_document", "message": NO_DOCUMENT}}, 404)


def _limits(service: ChatService) -> dict:
    cfg = service.settings.retrieval
    return {
        "files": cfg.max_files_per_upload,
        "file_bytes": human_size(cfg.max_file_bytes),
        "max_bytes": cfg.max_file_bytes,
        "pdf_pages": cfg.max_pdf_pages,
        "accept": ",".join(sorted(SUPPORTED_SUFFIXES)),
        # Folders whose files chatbot ingest reads only through the articles that include them.
        "snippet_folders": ",".join(INCLUDE_DIR_NAMES),
    }
