"""Transfer Studio: a guided flow for transfer learning on image classification.

Run with ``streamlit run streamlit_app.py``. Torch-free at import: the engine loads on first use.

This one file plays two parts. ``streamlit run`` finds the module-level ``app = st.App(...)`` below and
serves it (Streamlit's ASGI mode, the same Starlette server as always plus our routes): it imports this
file as the module ``streamlit_app``, so only the ``app`` branch runs then. Each browser session then
runs this same file as the app script, where Streamlit names the module ``__main__``: the UI branch.
The extra route is ``GET /download/<token>``, which streams large model files from disk (core.storage.downloads).
"""
from __future__ import annotations

import streamlit as st


def main() -> None:
    """The app: page setup, navigation over the steps, the shared sidebar."""
    from pages import common

    st.set_page_config(page_title="Transfer Studio", page_icon=":material/neurology:", layout="wide")
    common.init()

    pages = [st.Page(path, title=f"{i} · {title}", icon=icon, default=(i == 1))
             for i, (path, title, icon) in enumerate(common.PAGES.values(), start=1)]
    nav = st.navigation(pages)

    with st.sidebar:
        st.caption("Transfer Studio")
        st.markdown(f"**Dataset:** {common.dataset() or '—'}")
        job, run = common.current_job(), common.current_run()
        if job is not None:
            st.markdown(f"**Job:** `{job.id[:15]}` · {job.status()}")
        elif run is not None:
            st.markdown(f"**Run:** `{run.id[:15]}` · {run.status()}")
        else:
            st.markdown("**Job:** none yet")
        st.markdown(f"**Device:** {common.device()}")

    nav.run()


if __name__ == "__main__":  # a session's script run (Streamlit executes this file as __main__)
    main()
else:  # imported by `streamlit run` / uvicorn as the ASGI application
    from streamlit import config as _config

    from core.storage import downloads as _downloads

    _base = _config.get_option("server.baseUrlPath") or ""
    app = st.App(__file__, routes=_downloads.routes(_base), middleware=_downloads.middleware(_base))
