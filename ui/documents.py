"""Knowledge documents for content owners: the REST API under /api/v1/documents and the page."""

from fastapi import APIRouter

from chatbot.service import ChatService
from chatbot.users import UserDirectory


def documents_router(service: ChatService, users: UserDirectory) -> APIRouter:
    return APIRouter()
