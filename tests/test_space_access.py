"""On a public Space only the owner may train; sampling and exploring stay open to everyone.

Unit checks of ui/access.py with stand-in requests, and one end-to-end run in Chromium against the
full app configured as a Space (SPACE_ID, owner password secret): Start is refused, a wrong
password keeps it locked, the right one unlocks that browser session only.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from tests.browser import browser, launch_app, page, studio_of, wait_for  # noqa: F401  (fixtures)
from ui import access
from ui.state import Studio

PASSWORD = "correct horse battery staple"


@pytest.fixture
def space(monkeypatch):
    """A public Space of user alice with an owner password secret."""
    monkeypatch.setenv("SPACE_ID", "alice/dcgan-studio")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "alice")
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    monkeypatch.delenv(access.OWNER_ENV, raising=False)


def visitor(session: str, username: str | None = None, oauth_user: str | None = None):
    """A stand-in for gr.Request: a session hash, Gradio auth user, and an OAuth session cookie."""
    scope = {"session": {"oauth_info": {"userinfo": {"preferred_username": oauth_user}}}} if oauth_user else {}
    return SimpleNamespace(session_hash=session, username=username, request=SimpleNamespace(scope=scope))


def test_off_a_space_everything_is_allowed(monkeypatch, tmp_path):
    monkeypatch.delenv("SPACE_ID", raising=False)
    Studio(tmp_path).require_owner(visitor("s0"))
    Studio(tmp_path).require_owner(None)


def test_public_space_refuses_training_without_password_or_login(space, tmp_path):
    studio = Studio(tmp_path)
    anonymous = visitor("s1")
    with pytest.raises(PermissionError) as info:
        studio.require_owner(anonymous)
    assert isinstance(info.value, gr.Error) and "only the owner" in str(info.value)
    assert "owner password" in str(info.value)

    assert not studio.access.unlock(anonymous, "wrong")
    assert not studio.access.unlock(anonymous, "")
    with pytest.raises(PermissionError):
        studio.require_owner(anonymous)
    with pytest.raises(PermissionError):  # someone else's login is not the owner's
        studio.require_owner(visitor("s2", oauth_user="bob"))
    with pytest.raises(PermissionError):
        studio.require_owner(None)


def test_on_a_space_only_the_owner_branches_or_steers_a_branch(space, tmp_path):
    """What-if, the Runs tab's Branch and each side-by-side run's buttons are training controls: refused to a
    visitor before anything is saved or started (issue 24); the checks come first, so no run is needed."""
    from ui import runs_tab
    from ui import train_actions as act

    studio = Studio(tmp_path, max_runs=2)
    guest = visitor("s1")
    for message in (act.what_if(studio, "D learns ×½", 0, guest), act.lane_control(studio, 0, "pause", guest),
                    runs_tab.branch(studio, "any-run", 4, "lr_d=1e-3", guest)):
        assert "Not allowed" in message and "only the owner" in message, message
    assert len(studio.lanes) == 1 and studio.trainer.status().state == "idle"


def test_password_unlocks_only_that_session_and_owner_login_always_works(space, tmp_path):
    studio = Studio(tmp_path)
    assert studio.access.unlock(visitor("s1"), PASSWORD)
    studio.require_owner(visitor("s1"))
    with pytest.raises(PermissionError):
        studio.require_owner(visitor("s2"))  # another browser is still locked
    studio.access.lock(visitor("s1"))
    with pytest.raises(PermissionError):
        studio.require_owner(visitor("s1"))
    studio.require_owner(visitor("s3", oauth_user="alice"))  # HF OAuth login as the owner
    studio.require_owner(visitor("s4", oauth_user="Alice"))  # user names are case-insensitive
    studio.require_owner(visitor("s5", username="alice"))  # Gradio auth user
    expired = visitor("s6", oauth_user="alice")
    expired.request.scope["session"]["oauth_info"]["expires_at"] = 1.0  # an expired login is no login
    with pytest.raises(PermissionError):
        studio.require_owner(expired)
    studio.require_owner(None, profile=gr.OAuthProfile({"preferred_username": "alice", "name": "Alice",
                                                        "profile": "", "picture": ""}))


def test_without_a_password_secret_only_the_owner_login_works(space, monkeypatch, tmp_path):
    monkeypatch.delenv(access.PASSWORD_ENV)
    studio = Studio(tmp_path)
    assert not studio.access.unlock(visitor("s1"), "")
    assert not studio.access.unlock(visitor("s1"), "anything")
    with pytest.raises(PermissionError) as info:
        studio.require_owner(visitor("s1"))
    assert "password" not in str(info.value)
    monkeypatch.setenv(access.OWNER_ENV, "carol")  # extra owners by name
    Studio(tmp_path).require_owner(visitor("s2", oauth_user="carol"))


@pytest.mark.browser
def test_space_in_chromium_train_needs_the_owner_password(space, browser, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    studio = studio_of(url)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    visitor_page, owner_page = context.new_page(), browser.new_context().new_page()
    try:
        for pg in (visitor_page, owner_page):
            pg.set_default_timeout(30_000)
            pg.goto(url)
        owner_page.get_by_role("tab", name="Hub").click()
        owner_page.fill("#hub-owner-password input", "not it")
        owner_page.click("#hub-unlock")
        owner_page.get_by_text("Wrong password").wait_for()
        owner_page.fill("#hub-owner-password input", PASSWORD)
        owner_page.click("#hub-unlock")
        owner_page.get_by_text("training controls are unlocked for this session").wait_for()
        assert owner_page.input_value("#hub-owner-password input") == ""  # not kept on the page

        # a visitor in another browser session is refused, and nothing starts
        visitor_page.click("#start-btn")
        visitor_page.locator("#train-message").get_by_text("only the owner").wait_for()
        assert studio.trainer.status().state == "idle"

        owner_page.get_by_role("tab", name="Train").click()
        owner_page.fill("#steps input[type=number]", "3")
        owner_page.press("#steps input[type=number]", "Tab")
        owner_page.click("#start-btn")
        wait_for(lambda: studio.trainer.status().state in ("running", "finished", "paused"), 60, "the owner's run")
        assert PASSWORD not in owner_page.content() and PASSWORD not in visitor_page.content()
    finally:
        studio.trainer.stop(wait=True, timeout=30)
        context.close()
        owner_page.context.close()


def test_readme_front_matter_makes_a_gradio_space():
    """The Space reads its config from README.md's first lines; versions must match what we pin."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text[4:text.index("\n---\n", 4)])
    pins = dict(line.split("==") for line in (root / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == pins["gradio"] == gr.__version__
    assert (root / meta["app_file"]).is_file() and str(meta["python_version"]) == "3.11"
    assert meta["suggested_hardware"] in ("t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large")
    assert len(meta["short_description"]) <= 60 and {"gan", "dcgan"} <= set(meta["tags"])
    assert meta["hf_oauth"] is True  # the owner's Hugging Face login unlocks training
