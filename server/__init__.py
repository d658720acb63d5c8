"""Authoritative collaborative-state server for Immer apps."""

from .app import create_app
from .config import Limits, Settings
from .document import Document
from .errors import ErrorCode, ServerError

__all__ = ["Document", "ErrorCode", "Limits", "ServerError", "Settings", "create_app"]
