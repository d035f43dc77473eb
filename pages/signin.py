"""Sign-in: with ``[auth]`` in the secrets, nothing but the sign-in screen until the visitor has signed in.

Everything a signed-in user stores belongs to ``owner()``, a key derived from the identity provider's
stable subject (``iss`` and ``sub``; core.storage.owners.key), never from the e-mail address or the
display name, which a provider account can often choose. Without ``[auth]`` the app is single-user:
owner None, which sees everything that has no owner, as before sign-in existed.
"""
from __future__ import annotations

import json

import streamlit as st

from core.app.engine import i18n, owners
from pages.markup import md

_ = i18n.gettext

USER_COOKIE = "_streamlit_user"  # the cookie Streamlit's OIDC callback sets (streamlit.web.server.server_util)


def auth_configured() -> bool:
    """Whether the secrets hold an ``[auth]`` section (st.login configured): the multi-user mode."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: the single-user app
        return False


def signed_in() -> bool:
    """Whether the visitor has signed in through the identity provider."""
    return st.user.get("is_logged_in") is True


def owner() -> str | None:
    """The owner key of the signed-in user (from the provider's ``iss`` and ``sub``), None in single-user mode.

    Never the e-mail or the display name: a provider account can often choose those, and one that looks
    like someone else's address must not become that person.
    """
    if not auth_configured():
        return None
    if not signed_in():
        raise RuntimeError("owner() asked before sign-in; pages call gate() (through entrypoint) first")
    issuer = st.user.get("iss") or f"streamlit-provider:{st.user.get('provider') or 'default'}"
    return owners.key(str(issuer), st.user.get("sub"))


def display_name() -> str:
    """What the sidebar calls the signed-in user (for people to read, never to decide anything)."""
    return str(st.user.get("name") or st.user.get("email") or _("signed in"))


def providers() -> list[str | None]:
    """The providers of the ``[auth]`` section: named ``[auth.NAME]`` tables, or [None] for the unnamed one."""
    try:
        section = st.secrets["auth"]
        named = [k for k, v in section.items() if hasattr(v, "keys") and "client_id" in v]
    except Exception:
        named = []
    return named or [None]


def sign_in_screen() -> None:
    """The only thing a visitor sees before signing in."""
    st.title("Transfer Studio")
    st.write(_("This Transfer Studio is shared. Sign in to see your own datasets, runs and models; "
               "nobody else sees them, and you do not see theirs."))
    for name in providers():
        label = _("Sign in with {provider}").format(provider=md(name)) if name else _("Sign in")
        if st.button(label, key=f"sign_in_{name or 'default'}", type="primary", icon=":material/login:"):
            try:
                st.login(name) if name else st.login()
            except Exception as e:  # Authlib missing, an incomplete [auth] section: the operator's to fix
                st.error(_("Sign-in is not set up correctly on this server: {problem} (see the README, "
                           "'Deploying for several people').").format(problem=md(e)))
            st.stop()


def gate() -> None:
    """With sign-in configured, show only the sign-in screen until the visitor has signed in, then stop."""
    if not auth_configured():
        return
    if not signed_in():
        sign_in_screen()
        st.stop()
    try:
        owner()
    except ValueError as e:  # signed in, but the provider sent no subject: no way to tell users apart
        st.error(md(str(e)))
        if st.button(_("Sign out"), key="sign_out_no_subject"):
            st.logout()
        st.stop()


def user_box() -> None:
    """Sidebar: who is signed in, and the sign-out button (nothing in single-user mode)."""
    if not auth_configured():
        return
    st.markdown("**" + _("Signed in:") + "** " + md(display_name()))
    st.caption(_("Account key {key}").format(key=f"`{owner()}`"))
    if st.button(_("Sign out"), key="sign_out", icon=":material/logout:"):
        st.logout()
        st.stop()  # the browser is on its way to the provider's sign-out; nothing below is for anyone


def request_owner(cookies) -> str | None:
    """The owner key of the user whose signed Streamlit auth cookie came with an HTTP request, else None.

    The download route (core.storage.downloads) serves a link issued to a signed-in user only to that user.
    This reads the cookie the way Streamlit's own server does; any failure answers None (no file).
    """
    try:
        from streamlit.auth_util import get_cookie_with_chunks
        from streamlit.web.server.server_util import get_cookie_secret
        from streamlit.web.server.starlette.starlette_app_utils import decode_signed_value

        secret = get_cookie_secret()

        def one(name: str) -> bytes | None:
            raw = cookies.get(name)
            return None if raw is None else decode_signed_value(secret, name, raw.encode("latin-1"))

        raw = get_cookie_with_chunks(one, USER_COOKIE)
        user = json.loads(raw.decode("utf-8")) if raw else {}
        if not isinstance(user, dict) or user.get("is_logged_in") is not True:
            return None
        issuer = user.get("iss") or f"streamlit-provider:{user.get('provider') or 'default'}"
        return owners.key(str(issuer), user.get("sub"))
    except Exception:
        return None
