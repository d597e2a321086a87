"""The error every endpoint answers with: a status code and JSON ``{"error": ..., "detail": ...}``."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers
