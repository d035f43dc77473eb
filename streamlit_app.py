"""Transfer Studio: a guided flow for transfer learning on image classification.

Run with ``streamlit run streamlit_app.py``. Torch-free at import: the engine loads on first use.
"""
from __future__ import annotations

import streamlit as st

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
