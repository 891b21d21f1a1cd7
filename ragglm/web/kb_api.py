"""The document API under /v1/knowledge-bases and /v1/jobs, with the same key and error shape as
/v1/chat/completions (the gate and the error handlers of ragglm.server apply to it as they are)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ragglm.api_error import ApiError
from ragglm.web.documents import display_name, document_id, document_rows, find_source, page_text
from ragglm.web.jobs import FileTask, Job
from ragglm.web.page import install_page
from ragglm.web.uploads import UploadRejected, store_upload

__all__ = ["SearchRequest", "UrlRequest", "install_web"]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=50)


class UrlRequest(BaseModel):
    url: str = Field(min_length=1)


def install_web(app: FastAPI, knowledge_bases, max_upload_bytes: int) -> None:
    """The document API and the page, on an app made by ragglm.server.create_app."""
    board = knowledge_bases.jobs
    install_page(app)

    def library(name: str):
        found = knowledge_bases.get(name)
        if found is None:
            raise ApiError(404, f"no knowledge base {name!r}; use one of: {', '.join(knowledge_bases.names())}",
                           "not_found_error", param="kb", code="knowledge_base_not_found")
        return found

    def source_of(lib, doc_id: str) -> str:
        source = find_source(lib, doc_id)
        if source is None:
            raise ApiError(404, f"no document {doc_id!r} in {lib.name!r}", "not_found_error",
                           param="doc_id", code="document_not_found")
        return source

    @app.get("/v1/knowledge-bases")
    async def list_knowledge_bases() -> dict:
        data = []
        for name in knowledge_bases.names():
            lib = knowledge_bases.get(name)
            with lib.kb.lock:
                documents, chunks = len(lib.kb.sources), len(lib.kb)
            data.append({"id": name, "object": "knowledge_base", "model": f"ragglm:{name}",
                         "documents": documents, "chunks": chunks, "indexing": bool(board.active(name))})
        # the page refuses a file over the limit before sending it
        return {"object": "list", "data": data, "max_upload_bytes": max_upload_bytes}

    @app.get("/v1/knowledge-bases/{kb}/documents")
    async def list_documents(kb: str) -> dict:
        lib = library(kb)
        rows = await run_in_threadpool(document_rows, lib, board.active(kb), board.last_read(kb))
        return {"object": "list", "data": rows}

    @app.post("/v1/knowledge-bases/{kb}/documents", status_code=202)
    async def add_documents(kb: str, request: Request) -> dict:
        lib = library(kb)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            tasks = await _stored_uploads(lib, request)
        elif kind == "application/json":
            try:
                body = UrlRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ApiError(400, "send JSON {\"url\": \"https://...\"}", param="url") from exc
            tasks = [FileTask(body.url, body.url)]
        else:
            raise ApiError(415, "send files as multipart/form-data, or JSON {\"url\": ...}",
                           param="content-type", code="unsupported_media_type")
        return lib.indexer.submit(Job(kb, tasks)).to_dict()

    @app.post("/v1/knowledge-bases/{kb}/documents/{doc_id}/reindex", status_code=202)
    async def reindex_document(kb: str, doc_id: str) -> dict:
        lib = library(kb)
        source = source_of(lib, doc_id)
        task = FileTask(display_name(source, lib.files), source)
        return lib.indexer.submit(Job(kb, [task], force=True)).to_dict()

    @app.delete("/v1/knowledge-bases/{kb}/documents/{doc_id}")
    async def delete_document(kb: str, doc_id: str) -> dict:
        lib = library(kb)
        source = source_of(lib, doc_id)
        await run_in_threadpool(_delete, lib, source)
        return {"id": doc_id, "object": "document", "deleted": True}

    @app.get("/v1/knowledge-bases/{kb}/documents/{doc_id}/text")
    async def document_text(kb: str, doc_id: str, page: int | None = None) -> dict:
        lib = library(kb)
        source = source_of(lib, doc_id)
        text = await run_in_threadpool(page_text, lib.kb, source, page)
        if text is None:
            raise ApiError(404, f"no page {page} in {display_name(source, lib.files)!r}", "not_found_error",
                           param="page")
        return {"id": doc_id, "name": display_name(source, lib.files), "page": page, "text": text}

    @app.post("/v1/knowledge-bases/{kb}/search")
    async def search(kb: str, body: SearchRequest) -> dict:
        lib = library(kb)
        hits = await run_in_threadpool(_search, lib.kb, body.query, body.k)
        return {"object": "list", "data": [
            {"score": round(hit.score, 4), "document": document_id(hit.source),
             "name": display_name(hit.source, lib.files), "source": hit.source, "page": hit.page,
             "text": hit.text} for hit in hits]}

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict:
        job = board.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}", "not_found_error", param="job_id", code="job_not_found")
        return job.to_dict()


async def _stored_uploads(lib, request: Request) -> list[FileTask]:
    """Every file part of the form, kept in the files folder; a refused file becomes a failed task."""
    form = await request.form()
    tasks = []
    for _, part in form.multi_items():
        if isinstance(part, str):
            continue
        data = await part.read()
        try:
            stored = await run_in_threadpool(store_upload, lib.files, part.filename or "", data)
        except UploadRejected as exc:
            tasks.append(FileTask(part.filename or "", None, "failed", str(exc)))
            continue
        tasks.append(FileTask(stored.path.name, str(stored.path), stored=stored))
    if not tasks:
        raise ApiError(400, "the form holds no file", param="files", code="no_file")
    return tasks


def _search(kb, query: str, k: int):
    with kb.lock:
        return kb.search(query, k)


def _delete(lib, source: str) -> None:
    with lib.kb.lock:
        lib.kb.remove(source)
    path = Path(source)
    if path.parent == lib.files.resolve():  # only originals this server keeps; never a user's own files
        path.unlink(missing_ok=True)
