"""Transfer Studio: a guided flow for transfer learning on image classification.

Run with ``streamlit run streamlit_app.py``. Torch-free at import: the engine loads on first use.

This one file plays two parts. ``streamlit run`` finds the module-level ``app = st.App(...)`` below and
serves it (Streamlit's ASGI mode, the same Starlette server as always plus our routes): it imports this
file as the module ``streamlit_app``, so only the ``app`` branch runs then. Each browser session then
runs this same file as the app script, where Streamlit names the module ``__main__``: the UI branch.
The extra route is ``GET /download/<token>``, which streams large model files from disk (core.storage.downloads).

With ``[auth]`` in ``.streamlit/secrets.toml`` a visitor who has not signed in gets the sign-in screen
and nothing else, whatever page or deep link they asked for (README: "Deploying for several people").
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

# A local file works offline; a ":material/...:" page icon makes the browser fetch the favicon from Google.
ICON = str(Path(__file__).resolve().parent / "assets" / "icon.png")


def main() -> None:
    """The app: page setup, the sign-in gate, navigation over the steps, the shared sidebar."""
    from core.app.engine import i18n
    from pages import common, lang, signin

    _ = i18n.gettext

    st.set_page_config(page_title="Transfer Studio", page_icon=ICON, layout="wide")
    lang.sidebar_switch()  # the session's language for this run, and its switch: first, so all below is in it
    if signin.auth_configured() and not signin.signed_in():
        # One page only, so every URL (/train?job=...) lands on the sign-in screen.
        st.navigation([st.Page(signin.gate, title=_("Sign in"), url_path="sign-in", default=True)],
                      position="hidden").run()
        return
    signin.gate()  # signed in: stops only when the provider sent no subject to tell users apart
    common.init()

    # Quick start comes first, unnumbered: one screen beside the guided steps, which keep their numbers.
    path, title, icon = common.PAGES["quick"]
    pages = [st.Page(path, title=_(title), icon=icon)]
    steps = [page for key, page in common.PAGES.items() if key != "quick"]
    pages += [st.Page(path, title=f"{i} · {_(title)}", icon=icon, default=(i == 1))
              for i, (path, title, icon) in enumerate(steps, start=1)]
    nav = st.navigation(pages)

    with st.sidebar:
        st.caption("Transfer Studio")
        _field(_("Dataset:"), common.md(common.dataset() or "—"))
        job, run = common.current_job(), common.current_run()
        if job is not None:
            _field(_("Job:"), f"`{job.id[:15]}`")
            _field(_("Status:"), common.status_text(job.status()))  # a line of its own: it never wraps mid-word
        elif run is not None:
            _field(_("Run:"), f"`{run.id[:15]}`")
            _field(_("Status:"), common.status_text(run.status()))
        else:
            _field(_("Job:"), _("none yet"))
        _field(_("Device:"), common.device())
    not_found = st.session_state.pop("_not_found", None)
    if not_found:
        st.warning(common.md(not_found))

    nav.run()


def _field(label: str, value: str) -> None:
    """One "**label** value" line of the sidebar (labels are translated whole, without the markup)."""
    st.markdown(f"**{label}** {value}")


if __name__ == "__main__":  # a session's script run (Streamlit executes this file as __main__)
    main()
else:  # imported by `streamlit run` / uvicorn as the ASGI application
    from streamlit import config as _config

    from core.app.engine import downloads as _downloads
    from pages.signin import request_owner as _request_owner

    _base = _config.get_option("server.baseUrlPath") or ""
    # a link issued to a signed-in user is served only to a request carrying that user's auth cookie
    app = st.App(__file__, routes=_downloads.routes(_base, identify=lambda request: _request_owner(request.cookies)),
                 middleware=_downloads.middleware(_base))
