"""Links that carry a set-up (dcgan/links.py): query parameters <-> the Train form, checked by the form's rules."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from dcgan import links
from dcgan.config import ConfigError
from dcgan.studio import FORM_FIELDS, Studio

TABS = ("train", "explore", "runs", "hub", "lessons")
LESSONS = ("who-wins", "collapse")


@pytest.fixture
def build(tmp_path):
    return Studio(tmp_path / "checkpoints").build_config


def parse(query: dict, build) -> links.Link:
    return links.parse(query, build, TABS, LESSONS)


def test_a_good_link_sets_the_form_the_tab_the_hidden_controls_and_the_lesson(build):
    link = parse({"dataset": "stacked-digits", "lr_d": "2e-3", "steps": "300", "spectral_norm": "yes",
                  "hide": "lr_d,loss", "tab": "Train", "lesson": "collapse"}, build)
    assert link.problems == [] and link.message == ""
    assert link.form["dataset"] == "stacked-digits" and link.form["channels"] == "3"  # as choosing it in the form
    assert link.form["lr_d"] == 0.002 and link.form["steps"] == 300 and link.form["spectral_norm"] is True
    assert link.form["preset"] == "custom"  # lr_d and spectral norm leave every recipe
    assert (link.tab, link.hide, link.lesson) == ("train", ("lr_d", "loss"), "collapse")
    assert set(link.form) - {"preset"} == {"dataset", "channels", "lr_d", "steps", "spectral_norm"}


def test_a_preset_fills_its_recipe_and_named_settings_override_it(build):
    link = parse({"preset": "classic", "batch_size": "32"}, build)
    assert link.problems == []
    assert link.form["ngf"] == 64 and link.form["lr_g"] == 0.0002 and link.form["batch_size"] == 32
    assert link.form["preset"] == "custom"
    assert parse({"preset": "classic"}, build).form["preset"] == "classic"


def test_a_bad_link_names_every_problem_in_one_message_and_applies_the_rest(build):
    link = parse({"colour": "red", "lr_g": "fast", "steps": "0", "image_size": "30", "spectral_norm": "maybe",
                  "seed": "7", "hide": "lr_g,sliders", "tab": "settings", "lesson": "nope", "dataset": "folder"},
                 build)
    text = link.message
    assert text.count("This link has") == 1 and "9 problems" in text and "rest of the link was applied" in text
    for expected in ("`colour` is not a setting", "`lr_g=fast`: must be a number", "`steps=0`: must be at least 1",
                     "`image_size=30`: 30 is not supported", "`spectral_norm=maybe`: must be true or false",
                     "sliders is not a control", "`tab=settings`: no such tab", "`lesson=nope`: no such lesson",
                     "`dataset=folder`"):
        assert expected in text, expected
    assert link.form == {"seed": 7, "preset": "default"}  # the valid part
    assert link.hide == ("lr_g",) and link.tab is None and link.lesson is None


def test_a_value_beyond_the_apps_limit_is_named_and_the_rest_applies(build):
    link = parse({"steps": "5000000", "batch_size": "16"}, build)
    assert "`steps=5000000`: 5,000,000 is more than" in link.message and link.form["batch_size"] == 16
    assert "steps" not in link.form


def test_settings_fine_alone_that_clash_together_leave_out_the_one_named(build):
    def strict(values: dict):  # a rule across two settings, as a future form rule might be
        if values.get("ngf") == 8 and values.get("ndf") == 8:
            raise ConfigError("ndf", "cannot be 8 when ngf is 8")
        return build(values)

    link = links.parse({"ngf": "8", "ndf": "8", "seed": "3"}, strict, TABS, LESSONS)
    assert link.problems == ["`ndf=8`: cannot be 8 when ngf is 8"]
    assert link.form["ngf"] == 8 and link.form["seed"] == 3 and "ndf" not in link.form


def test_copy_link_round_trips_the_form_exactly(build):
    form = {**links.default_form(), "dataset": "stacked-digits", "channels": "1", "lr_g": 0.0002, "steps": 750,
            "spectral_norm": True, "diffaug": "translation,cutout", "run_name": "class 3", "preset": "custom"}
    query = links.query_of(form, build, hide=["lr_g", "bogus"], tab="train")
    params = dict(parse_qsl(query[1:]))
    assert params["hide"] == "lr_g" and params["tab"] == "train" and "bogus" not in query
    assert "nz" not in params and "seed" not in params  # only what differs from a fresh page
    link = parse(params, build)
    assert link.problems == []
    assert {**links.default_form(), **link.form} == form  # channels 1 kept although stacked digits are colour


def test_a_fresh_form_makes_an_empty_link_and_a_refused_form_no_link(build):
    assert links.query_of(links.default_form(), build) == ""
    with pytest.raises(ConfigError, match="learning rate"):
        links.query_of({**links.default_form(), "lr_g": 0}, build)


def test_the_form_a_link_fills_is_the_train_tabs_form():
    from ui import train_tab

    laid_out = {name for rows in (train_tab.BASIC, train_tab.ADVANCED) for row in rows for name in row}
    assert set(links.SETUP) == laid_out and set(links.default_form()) == laid_out
    defaults = {**links.default_form(), **{k: v for k, v in train_tab.DEFAULTS.items()}}
    assert defaults == links.default_form()  # a page without a link opens with these values
    assert set(FORM_FIELDS) < set(links.HIDABLE)
