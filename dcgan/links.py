"""Links that carry a set-up: query parameters <-> the Train form's values (issue 26).

A teacher hands out one link (``http://127.0.0.1:7860/?dataset=digits&lr_d=0.002&hide=lr_d&lesson=strong-d``)
and every student's page opens with those settings, the named controls hidden and the lesson chosen, as
TensorFlow Playground keeps its whole state in the URL. The parameter names are TrainConfig's field names (the
form's fields, dcgan.studio.FORM_FIELDS) plus ``preset``, ``tab``, ``hide`` and ``lesson``. Each value is checked
by the app's own form rules (Studio.build_config), so a link can set nothing the form could not; what is wrong
(an unknown name, a value out of range, text in a number field) is named in one message and the rest applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .config import NATIVE_CHANNELS, PRESETS, ConfigError, TrainConfig, recipe_of
from .studio import FORM_FIELDS, TEXT_FIELDS

SETUP = ("preset", *FORM_FIELDS)  # what a link sets in the form, in the form's order
PAGE = ("tab", "hide", "lesson")  # what a link says about the page
HIDABLE = SETUP  # the controls a link may hide (a lesson hides what would distract)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_BOOLS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.type == "bool")

Build = Callable[[dict[str, Any]], TrainConfig]  # form values -> a validated TrainConfig (Studio.build_config)


@dataclass
class Link:
    """What one link asks for, checked: the form values to set, the page's tab, hidden controls and lesson,
    and one line per thing that could not apply."""

    form: dict[str, Any] = field(default_factory=dict)  # form field -> value as the form shows it
    tab: str | None = None
    hide: tuple[str, ...] = ()
    lesson: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One message for the page ("" when everything applied)."""
        if not self.problems:
            return ""
        applied = "the rest of the link was applied" if self.form or self.tab or self.hide or self.lesson \
            else "nothing else was in it"
        return (f"This link has {len(self.problems)} problem{'s' if len(self.problems) > 1 else ''} "
                f"({applied}): " + "; ".join(self.problems) + ".")


def form_value(cfg: TrainConfig, name: str) -> Any:
    """A setting as the form shows it: choices and names as text, numbers and switches as themselves."""
    value = getattr(cfg, name)
    return str(value) if name in TEXT_FIELDS else value


def default_form() -> dict[str, Any]:
    """The form as a page opens without a link: TrainConfig's defaults and the default recipe."""
    cfg = TrainConfig()
    return {"preset": "default", **{name: form_value(cfg, name) for name in FORM_FIELDS}}


def _as_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise ConfigError(name, f"must be true or false, got {text!r}")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def parse(query: Mapping[str, Any], build: Build, tabs: Iterable[str] = (), lessons: Iterable[str] = ()) -> Link:
    """Check a link's query parameters. Each setting is tried alone on the default form with `build` (the app's
    form rules), then all the good ones together; a value that fails either way is left out and named."""
    link, tabs, lessons = Link(), tuple(tabs), tuple(lessons)
    known = (*SETUP, *PAGE)
    for name in query:
        if name not in known:
            link.problems.append(f"`{name}` is not a setting this app knows (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    preset = str(query.get("preset", "")).strip()
    if "preset" in query:
        if preset in PRESETS:
            values.update(PRESETS[preset])  # the recipe first; settings the link names override it
        elif preset != "custom":
            link.problems.append(f"`preset={preset}`: choose one of {', '.join([*PRESETS, 'custom'])}")
    given: dict[str, Any] = {}
    for name in FORM_FIELDS:
        if name not in query:
            continue
        text = str(query[name])
        try:
            value = _as_bool(name, text) if name in _BOOLS else text
            cfg = build({name: value})
        except ConfigError as exc:
            link.problems.append(_problem(name, text, exc))
            continue
        given[name] = form_value(cfg, name)
    values = {name: value for name, value in values.items() if name in FORM_FIELDS}
    values.update(given)
    if "dataset" in given and "channels" not in given and given["dataset"] in NATIVE_CHANNELS:
        values["channels"] = str(NATIVE_CHANNELS[given["dataset"]])  # as choosing it in the form does
    while values:  # settings that are fine alone may clash together: leave out the one named
        try:
            build(dict(values))
            break
        except ConfigError as exc:
            culprit = exc.field if exc.field in values else next(reversed(values))
            link.problems.append(_problem(culprit, str(query.get(culprit, values[culprit])), exc))
            del values[culprit]
    if values or ("preset" in query and preset in (*PRESETS, "custom")):
        link.form = {**values, "preset": recipe_of({**default_form(), **values})}
    _page(query, link, tabs, lessons)
    return link


def _page(query: Mapping[str, Any], link: Link, tabs: tuple[str, ...], lessons: tuple[str, ...]) -> None:
    if "lesson" in query:
        lesson = str(query["lesson"]).strip()
        if lesson in lessons:
            link.lesson = lesson
        else:
            link.problems.append(f"`lesson={lesson}`: no such lesson (choose one of {', '.join(lessons)})")
    if "tab" in query:
        tab = str(query["tab"]).strip().lower()
        if tab in tabs:
            link.tab = tab
        else:
            link.problems.append(f"`tab={query['tab']}`: no such tab (choose one of {', '.join(tabs)})")
    if "hide" in query:
        names = _names(str(query["hide"]))
        unknown = [n for n in names if n not in HIDABLE]
        if unknown:
            link.problems.append(f"`hide`: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a "
                                 f"control (hidable: {', '.join(HIDABLE)})")
        link.hide = tuple(dict.fromkeys(n for n in names if n in HIDABLE))


def _problem(name: str, text: str, exc: ConfigError) -> str:
    where = f" ({exc.field})" if exc.field != name else ""
    return f"`{name}={text}`: {exc.reason}{where}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def query_of(form: Mapping[str, Any], build: Build, hide: Iterable[str] = (), tab: str | None = None,
             lesson: str | None = None) -> str:
    """The query string ("?..." or "") that opens a page with this form: only what differs from a page opened
    without a link, so a link stays short and readable. Raises ConfigError for a form the app would refuse (a
    link that cannot open as it was copied)."""
    cfg = build({n: form[n] for n in FORM_FIELDS if n in form})
    shown = {name: form_value(cfg, name) for name in FORM_FIELDS if name in form}
    defaults = default_form()
    params = {name: _text(value) for name, value in shown.items() if value != defaults[name]}
    preset = form.get("preset")
    if preset is not None and preset != recipe_of({**defaults, **shown}):
        params = {"preset": str(preset), **params}  # the Recipe radio says something the values do not
    if "dataset" in params and "channels" not in params and cfg.dataset in NATIVE_CHANNELS \
            and str(cfg.channels) != str(NATIVE_CHANNELS[cfg.dataset]):
        params["channels"] = _text(cfg.channels)  # opening the link would otherwise take the data set's own
    hidden = [n for n in dict.fromkeys(hide) if n in HIDABLE]
    if hidden:
        params["hide"] = ",".join(hidden)
    if tab:
        params["tab"] = tab
    if lesson:
        params["lesson"] = lesson
    return "?" + urlencode(params, safe=",") if params else ""


__all__ = ["Link", "parse", "query_of", "default_form", "form_value", "SETUP", "PAGE", "HIDABLE"]
