"""Translations (gettext, domain ``messages``) and locale-aware formatting; a leaf: imports nothing of core.

Mark text with ``_("...")``, ``ngettext(singular, plural, n)`` or ``pgettext(context, "...")`` where it is
shown, and with ``N_("...")`` where it is only stored (a module-level table) and translated later with
``_(value)``. The ``.po`` files in ``locale/`` are the only source: they are compiled in memory with Babel on first use in a process (no ``.mo`` files, no
build step, nothing to go stale, nothing written to disk — a read-only install works). README: "Translating".

The language is per thread / per Streamlit session (a ContextVar), never process-wide: one server process
serves several browser tabs at once. Threads that never called ``set_language`` (a Streamlit fragment rerun
runs in a fresh thread) ask the fallback that the app registers (``set_fallback``), else get English.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import functools
import gettext as _gettext
import io
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

DOMAIN = "messages"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
SOURCE = "en"  # the language of the msgids in the code
LANGUAGES = {"en": "English", "zh_CN": "简体中文"}  # code -> its name in itself (how a switch shows it)
_ENV_VARS = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")  # GNU gettext's order of precedence

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("transfer_studio_language", default=None)
_fallback: Callable[[], str | None] | None = None


def N_(message: str) -> str:
    """Mark a string for extraction without translating it now (translate the stored value with ``_``)."""
    return message


def normalize(code: str | None) -> str | None:
    """A supported language code for a locale name (zh-CN, zh_Hans, en-US, zh_CN.UTF-8 ...), or None."""
    if not code:
        return None
    base = code.split(".")[0].split("@")[0].replace("-", "_")
    lang = base.split("_")[0].lower()
    if lang == "zh":  # any Chinese: Simplified is the only Chinese catalog, and closer than English
        return "zh_CN"
    if lang == "en" or base.upper() in ("C", "POSIX"):
        return "en"
    return None


def _supported(code: str) -> str:
    lang = normalize(code)
    if lang is None:
        raise ValueError(f"unknown language {code!r}; choose one of {', '.join(LANGUAGES)} "
                         f"(locale names such as zh-CN or en_US.UTF-8 work too)")
    return lang


def set_language(code: str) -> str:
    """Make ``code`` the language of this thread / session; returns the supported code it resolved to."""
    lang = _supported(code)
    _current.set(lang)
    return lang


@contextlib.contextmanager
def language(code: str) -> Iterator[str]:
    """Use ``code`` inside a ``with`` block, then restore the language that was there before."""
    token = _current.set(_supported(code))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def set_fallback(resolver: Callable[[], str | None] | None) -> None:
    """Where ``current_language`` looks when this thread set none (the app: the session's choice)."""
    global _fallback
    _fallback = resolver


def current_language() -> str:
    """The language of this thread: set_language's, else the registered fallback's, else English."""
    lang = _current.get()
    if lang is None and _fallback is not None:
        lang = normalize(_fallback())
    return lang or SOURCE


def language_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The language the environment asks for (LANGUAGE, LC_ALL, LC_MESSAGES, LANG, as gettext reads them)."""
    env = os.environ if environ is None else environ
    for var in _ENV_VARS:
        value = env.get(var)
        if not value:
            continue
        for item in value.split(":"):  # LANGUAGE may list several, best first
            lang = normalize(item)
            if lang:
                return lang
        if var != "LANGUAGE":  # a locale is set but we have no catalog for it (de_DE): the source language
            return SOURCE
    return SOURCE


@functools.lru_cache(maxsize=None)
def translations(lang: str) -> _gettext.NullTranslations:
    """The compiled catalog of a language, built from its .po in memory once per process."""
    if lang == SOURCE:
        return _gettext.NullTranslations()
    from babel.messages import mofile, pofile

    po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        with po.open("rb") as f:
            catalog = pofile.read_po(f, locale=lang, domain=DOMAIN)
    except FileNotFoundError:
        warnings.warn(f"no catalog for {lang!r} at {po}; showing English — restore the locale/ folder of the "
                      f"repository", stacklevel=2)
        return _gettext.NullTranslations()
    buf = io.BytesIO()
    for message in list(catalog):  # Babel keeps a plural entry whose forms are all empty: drop it, so that
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.id and isinstance(message.id, tuple) and not any(forms):  # gettext picks singular/plural
            catalog.delete(message.id, message.context)
    mofile.write_mo(buf, catalog)  # untranslated and fuzzy entries are left out, so they show the English text
    buf.seek(0)
    return _gettext.GNUTranslations(buf)


def gettext(message: str) -> str:
    """``message`` in the current language (the English text itself where no translation exists)."""
    return translations(current_language()).gettext(message)


_ = gettext


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form for ``n`` in the current language, by the Plural-Forms rule in its catalog's header."""
    return translations(current_language()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    """``message`` in the current language, told apart by ``context`` ("Run" the noun vs "Run" the verb)."""
    return translations(current_language()).pgettext(context, message)


def babel_locale(lang: str | None = None) -> str:
    """The Babel / CLDR locale name of a language (default: the current one)."""
    return (normalize(lang) if lang else None) or current_language()


def format_number(value: float, decimals: int | None = None, compact: bool = False) -> str:
    """A number as the current locale writes it; ``compact`` abbreviates large ones (12K, 1.2万)."""
    from babel import numbers

    loc = babel_locale()
    if compact:
        return numbers.format_compact_decimal(value, locale=loc, fraction_digits=1 if decimals is None else decimals)
    if decimals is None:
        return numbers.format_decimal(value, locale=loc)
    return numbers.format_decimal(value, format=f"#,##0.{'0' * decimals}" if decimals else "#,##0", locale=loc,
                                  decimal_quantization=True)


def format_percent(fraction: float, decimals: int = 1) -> str:
    """A fraction (0.873) as a percentage in the current locale (87.3%)."""
    from babel import numbers

    pattern = f"#,##0.{'0' * decimals}%" if decimals else "#,##0%"
    return numbers.format_percent(fraction, format=pattern, locale=babel_locale())


def format_datetime(when: _dt.datetime | float, width: str = "medium") -> str:
    """A moment (datetime or Unix time, shown in local time) as the current locale writes it; width: short |
    medium | long."""
    from babel import dates

    if not isinstance(when, _dt.datetime):
        when = _dt.datetime.fromtimestamp(when)
    return dates.format_datetime(when, width, locale=babel_locale())
