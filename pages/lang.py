"""The language of a browser session: the URL's ``?lang=``, else the browser's language, else English.

A choice made in the sidebar switch (or arriving in a link) is pinned in the URL, so a reload or a shared link
keeps it; a language taken from the browser is not written there, so a shared link follows its reader's
browser. Switching touches only the keys of this module: dataset, drafts and the job id stay as they are.
"""
from __future__ import annotations

import streamlit as st

from core.app.engine import i18n

_ = i18n.gettext  # the name Babel's extractor looks for

PARAM = "lang"  # the query parameter and the session-state key holding the session's language
_PINNED = "lang_pinned"  # True once the language came from the URL or the switch, not from the browser
_SWITCH = "lang_switch"  # the widget's key


def _session_language() -> str | None:
    """The language of the session whose script is running on this thread, if any (fragment reruns)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:  # a worker thread: no session to ask
        return None
    return st.session_state.get(PARAM)


i18n.set_fallback(_session_language)


def resolve() -> str:
    """Decide this session's language, remember it, and keep a pinned choice in the URL (page switches
    drop the query string)."""
    ss, qp = st.session_state, st.query_params
    asked = i18n.normalize(qp.get(PARAM))
    if asked:
        ss[PARAM], ss[_PINNED] = asked, True
    elif PARAM not in ss:  # first visit: the browser's language (navigator.language)
        ss[PARAM], ss[_PINNED] = i18n.normalize(st.context.locale) or i18n.SOURCE, False
    lang = ss[PARAM]
    if ss.get(_PINNED) and qp.get(PARAM) != lang:
        qp[PARAM] = lang
    elif not ss.get(_PINNED) and PARAM in qp:  # ?lang=fr: nothing we can show; drop it from the URL
        del qp[PARAM]
    return i18n.set_language(lang)


def _switched() -> None:
    choice = st.session_state.get(_SWITCH)
    if choice:
        st.session_state[PARAM], st.session_state[_PINNED] = choice, True
        st.query_params[PARAM] = choice


def sidebar_switch() -> str:
    """Apply the session's language to this script run and draw the English / 简体中文 switch in the sidebar."""
    lang = resolve()
    if st.session_state.get(_SWITCH) != lang:  # before the widget exists in this run, so this is allowed
        st.session_state[_SWITCH] = lang
    st.sidebar.segmented_control(_("Language"), list(i18n.LANGUAGES), required=True,
                                 format_func=i18n.LANGUAGES.get, key=_SWITCH, on_change=_switched)
    return lang
