"""Who may steer training on a public Space.

Off a Space (no SPACE_ID) everyone who can open the page runs the machine, so everything is
allowed. On a Space, sampling and exploring stay open to every visitor, while training controls
(start, pause, step, stop, reset, push) are only for the owner: a visitor who is logged in with
Hugging Face OAuth as the Space's owner, or who typed the owner password (env
DCGAN_STUDIO_PASSWORD, set as a Space secret) in this browser session. A page load gets a new
session hash, so the password is asked again after a reload; the password itself is never stored,
only the session hashes it unlocked.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from typing import Any

import gradio as gr

PASSWORD_ENV = "DCGAN_STUDIO_PASSWORD"
OWNER_ENV = "DCGAN_STUDIO_OWNER"  # optional: HF user names (comma list) allowed besides the Space's author
MAX_UNLOCKED = 10_000  # bounded so a flood of sessions cannot grow memory forever


class AccessDenied(gr.Error, PermissionError):
    """A training control was used by a visitor who is not the Space's owner (shown as a Gradio error)."""

    def __str__(self) -> str:  # gr.Error shows repr(message); pages print str(exc) directly
        return str(self.message)


def on_space() -> bool:
    """True on a Hugging Face Space: the Spaces runtime always sets SPACE_ID."""
    return bool(os.environ.get("SPACE_ID"))


def owners() -> set[str]:
    """HF user names that own this Space: the Space's namespace plus DCGAN_STUDIO_OWNER."""
    names = {n.strip().lower() for n in os.environ.get(OWNER_ENV, "").split(",") if n.strip()}
    author = os.environ.get("SPACE_AUTHOR_NAME") or os.environ.get("SPACE_ID", "").partition("/")[0]
    if author:
        names.add(author.lower())
    return names


def visitor_name(request: Any, profile: Any = None) -> str | None:
    """The visitor's user name from a gr.OAuthProfile, Gradio auth, or the OAuth session cookie."""
    if profile is not None:
        name = getattr(profile, "username", None) or (profile.get("preferred_username")
                                                      if isinstance(profile, dict) else None)
        if name:
            return str(name)
    if request is None:
        return None
    if getattr(request, "username", None):
        return str(request.username)
    # the OAuth session cookie, read the way Gradio reads it (scope first; a queued request may carry .session)
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else getattr(underlying, "session", None)
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict) or (info.get("expires_at") or float("inf")) < time.time():
        return None
    return (info.get("userinfo") or {}).get("preferred_username")


def _session(request: Any) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def password_configured() -> bool:
    return bool(os.environ.get(PASSWORD_ENV))


class Access:
    """Who may steer training in one app (its Studio holds one): the owner's login, and the browser sessions
    the owner password unlocked."""

    def __init__(self) -> None:
        self._unlocked: set[str] = set()
        self._lock = threading.Lock()

    def unlock(self, request: Any, password: str) -> bool:
        """Unlock this browser session when the owner password is right (constant-time compare)."""
        expected = os.environ.get(PASSWORD_ENV, "")
        session = _session(request)
        if not expected or not session or not password:
            return False
        if not hmac.compare_digest(password.encode(), expected.encode()):
            return False
        with self._lock:
            if len(self._unlocked) >= MAX_UNLOCKED:
                self._unlocked.clear()
            self._unlocked.add(session)
        return True

    def lock(self, request: Any) -> None:
        session = _session(request)
        with self._lock:
            self._unlocked.discard(session)

    def is_owner(self, request: Any, profile: Any = None) -> bool:
        """May this visitor use training controls? Always yes off a Space."""
        if not on_space():
            return True
        name = visitor_name(request, profile)
        if name and name.lower() in owners():
            return True
        session = _session(request)
        with self._lock:
            return session is not None and session in self._unlocked

    def require_owner(self, request: Any, profile: Any = None) -> None:
        """Raise AccessDenied (a gr.Error and a PermissionError) unless is_owner."""
        if self.is_owner(request, profile):
            return
        how = "log in with Hugging Face as the Space's owner"
        if password_configured():
            how += " or enter the owner password (Hub tab, 'Owner access')"
        raise AccessDenied(f"On this public Space only the owner can control training: {how}. "
                           f"Sampling and exploring stay open to everyone.", title="Owner only")

    def describe(self, request: Any, profile: Any = None) -> str:
        """One line for the UI saying whether this session may train."""
        if not on_space():
            return "Running locally: every control is available."
        if self.is_owner(request, profile):
            return "Owner access: training controls are unlocked for this session."
        how = "log in with Hugging Face as the owner"
        if password_configured():
            how += " or enter the owner password"
        return f"Public Space: sampling and exploring are open; to train, {how}."
