"""Authoritative collaborative-state server for Immer apps."""

from .access import Handshake, Principal, Role
from .app import create_app, running
from .config import JwtSettings, Limits, Settings
from .document import Document
from .errors import ErrorCode, Forbidden, InvalidInput, ServerError, Unauthorized
from .hooks import Batch, HookContext, Hooks

__all__ = [
    "Batch",
    "Document",
    "ErrorCode",
    "Forbidden",
    "Handshake",
    "HookContext",
    "Hooks",
    "InvalidInput",
    "JwtSettings",
    "Limits",
    "Principal",
    "Role",
    "ServerError",
    "Settings",
    "Unauthorized",
    "create_app",
    "running",
]
