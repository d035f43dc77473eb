"""Sign-in: with [auth] configured, nothing but the sign-in screen until a visitor signs in; the account is
the provider's subject, never a name or an e-mail a user can choose; without [auth] the app is as before."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from accounts import AUTH, ISSUER, ROOT, key, make_dataset, make_run, tab, texts, user
from core.storage import owners, runs
from pages import common


@pytest.fixture(scope="module")
def alice_things(shapes_dir):
    """Alice's dataset and finished run, made on disk."""
    ds = make_dataset("alice-shapes", shapes_dir, key("alice"))
    run = make_run(key("alice"), shapes_dir, name="alice's secret run")
    return ds, run


def _only_sign_in(at: AppTest, *secrets: str) -> None:
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Transfer Studio"]
    assert [b.key for b in at.button] == ["sign_in_default"]
    assert not list(at.sidebar.markdown) and not list(at.sidebar.button)
    shown = texts(at)
    for s in secrets:
        assert s not in shown
    assert not list(at.selectbox) and not list(at.dataframe) and not list(at.text_input)


def test_an_anonymous_visitor_sees_only_the_sign_in_screen_on_every_page_and_deep_link(alice_things):
    ds, run = alice_things
    # a deep link with alice's run, dataset and a draft id, opened by someone who has not signed in
    at = tab(None, job=run.id, ds=ds, sid="0" * 32)
    _only_sign_in(at, run.id[:15], ds)
    assert "draft" not in at.session_state  # nothing of the app ran: no draft was loaded or created
    with pytest.raises(ValueError, match="Known pages: \\['Sign in'\\]"):
        at.switch_page("pages/7_runs.py")  # the navigation holds the sign-in page and nothing else
    at.button(key="sign_in_default").click().run()  # here the redirect cannot happen: a message, no traceback
    assert not at.exception and run.id[:15] not in texts(at)
    # a visitor whose session carries no login flag at all (AppTest's default user) is anonymous too
    default = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    default.secrets["auth"] = AUTH
    default.query_params["job"] = run.id
    _only_sign_in(default.run(), run.id[:15])
    # every page file reached directly (a fresh server serves /train from the pages/ folder) stops at sign-in
    for path, _, _ in common.PAGES.values():
        page = AppTest.from_file(str(ROOT / path), default_timeout=60)
        page.secrets["auth"] = AUTH
        page.user = {"is_logged_in": False}
        page.query_params.update(job=run.id, ds=ds)
        _only_sign_in(page.run(), run.id[:15], ds)


def test_signing_in_shows_the_app_with_the_display_name_and_signing_out_returns_to_sign_in():
    at = tab("carol", who=user("carol", name="Carol <b>C</b>"))
    assert at.title[0].value == "1 · Data"
    sidebar = "\n".join(str(m.value) for m in at.sidebar.markdown)
    assert "**Signed in:** Carol &lt;b&gt;C&lt;/b&gt;" in sidebar  # the name is shown as text, never as HTML
    assert key("carol") in "\n".join(str(c.value) for c in at.sidebar.caption)
    at.button(key="sign_out").click().run()
    assert not at.exception and at.user == {"is_logged_in": False}
    _only_sign_in(at.run())


def test_an_account_without_a_subject_claim_gets_an_explanation_and_nothing_else():
    at = tab(None, who={"is_logged_in": True, "iss": ISSUER, "email": "alice@example.com", "name": "Alice"})
    assert "sent no subject" in texts(at)
    assert not list(at.title) and [b.key for b in at.button] == ["sign_out_no_subject"]
    assert "draft" not in at.session_state


def test_the_owner_key_comes_from_issuer_and_subject_only():
    assert key("alice") == owners.key(ISSUER, "alice") and len(key("alice")) == 32
    assert key("alice") != key("alice", issuer="https://other-idp.example")  # same sub, another provider
    assert key("alice") != key("bob")
    with pytest.raises(ValueError, match="no subject"):
        owners.key(ISSUER, "")


def test_a_display_name_that_imitates_another_users_email_gets_its_own_empty_space(alice_things):
    ds, run = alice_things
    alice = tab("alice", "7_runs")
    assert run.id in list(alice.dataframe[0].value["id"])
    # mallory's provider lets her choose her name and address: both copy alice's; her subject is her own
    mallory_claims = user("mallory", name="alice@example.com", email="alice@example.com", preferred_username="alice")
    mallory = tab(None, "7_runs", who=mallory_claims, job=run.id, ds=ds)
    assert "No runs yet." in texts(mallory)
    assert not list(mallory.dataframe) and run.id[:15] not in texts(mallory)
    data = tab(None, "1_data", who=mallory_claims)
    assert not any(s.key == "data_existing" for s in data.selectbox) and ds not in texts(data)
    assert "No dataset in the workspace yet." in texts(data)


def test_single_user_mode_without_auth_is_unchanged(shapes_dir):
    mine = make_run(None, shapes_dir)        # made without sign-in: no owner record
    theirs = make_run(key("alice"), shapes_dir)
    at = tab(page="7_runs", auth=False)
    ids = list(at.dataframe[0].value["id"])
    assert mine.id in ids and theirs.id not in ids  # an owned run is not the single-user app's
    assert not [b for b in at.button if b.key.startswith("sign_")]
    assert "Signed in" not in texts(at)
    assert not (mine.path / owners.FILE).exists()
    runs.delete(mine.id)  # the session's workspace is shared: leave no ownerless run for other tests
