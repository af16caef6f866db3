"""Admin JSON routes under /api/v1: users and their API tokens (the `admin` role only)."""

from __future__ import annotations

from fastapi import APIRouter

from web.errors import API_PREFIX

router = APIRouter(prefix=API_PREFIX)
