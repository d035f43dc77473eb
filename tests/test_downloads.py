"""Download links (core.storage.downloads) and the app's GET /download/<token> route on a real server.

The registry is tested directly; the route through a real `streamlit run streamlit_app.py`, with the token
taken from the real Export page in headless Chromium (so the test also proves the page issues it).
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.storage import downloads, owners
from core.storage import workspace

ISSUER = "https://idp.example"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret", "client_id": "c",
        "client_secret": "s", "server_metadata_url": f"{ISSUER}/.well-known/openid-configuration"}


@pytest.fixture()
def model_file() -> Path:
    """A small file inside the session's workspace."""
    folder = workspace.sub("downloads-test")
    path = folder / f"model-{os.urandom(4).hex()}.safetensors"
    path.write_bytes(os.urandom(1000))
    return path


# --- the registry --------------------------------------------------------------------------------------

def test_tokens_are_128_random_bits_and_only_issued_tokens_resolve(model_file):
    tokens = {downloads.issue(model_file, f"m{i}.safetensors") for i in range(200)}
    assert len(tokens) == 200  # a new name is a new grant, and no two tokens collide
    for t in tokens:
        assert len(base64.urlsafe_b64decode(t + "==")) == 16  # 16 bytes = 128 bits
        assert downloads.resolve(t) == model_file.resolve()
    # a token of the same shape that was never issued names nothing
    forged = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    assert forged not in tokens and downloads.resolve(forged) is None
    assert downloads.resolve("") is None and downloads.resolve("../../etc/passwd") is None


def test_tokens_expire(model_file):
    t0 = 1_000_000.0
    token = downloads.issue(model_file, "m.safetensors", ttl=60, now=t0)
    assert downloads.resolve(token, now=t0 + 59) == model_file.resolve()
    assert downloads.resolve(token, now=t0 + 61) is None
    assert downloads.resolve(token, now=t0 + 1) is None  # an expired token is forgotten, not revived


def test_default_lifetime_is_an_hour(model_file):
    now = time.time()
    token = downloads.issue(model_file, "m.safetensors", now=now)
    assert downloads.grant(token, now=now).expires == pytest.approx(now + 3600)
    assert downloads.resolve(token, now=now + 3599) is not None
    assert downloads.resolve(token, now=now + 3601) is None


def test_files_outside_the_workspace_are_refused(tmp_path, model_file):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    with pytest.raises(ValueError, match="outside the workspace"):
        downloads.issue(outside, "secret.bin")
    # a path that looks inside but climbs out, and a link inside that points out, are refused too
    with pytest.raises(ValueError, match="outside the workspace"):
        downloads.issue(workspace.home() / ".." / outside.relative_to(outside.anchor), "secret.bin")
    link = model_file.parent / "link-out.bin"
    link.symlink_to(outside)
    with pytest.raises(ValueError, match="outside the workspace"):
        downloads.issue(link, "secret.bin")
    with pytest.raises(ValueError, match="not a file"):
        downloads.issue(model_file.parent, "folder.bin")
    with pytest.raises(ValueError, match="plain file name"):
        downloads.issue(model_file, "../evil.sh")


def test_a_file_swapped_or_deleted_after_issuing_is_not_served(tmp_path, model_file):
    token = downloads.issue(model_file, "m.safetensors")
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    model_file.unlink()
    assert downloads.resolve(token) is None  # deleted
    model_file.symlink_to(outside)
    assert downloads.resolve(token) is None  # now a link that leads out of the workspace


def test_issuance_is_per_owner_and_reuses_a_fresh_token(model_file):
    t0 = 2_000_000.0
    alice_key, bob_key = owners.key(ISSUER, "alice"), owners.key(ISSUER, "bob")
    alice = downloads.issue(model_file, "m.safetensors", alice_key, ttl=100, now=t0)
    # the Export page reruns often: the same owner gets the same link while it has over half its life left
    assert downloads.issue(model_file, "m.safetensors", alice_key, ttl=100, now=t0 + 40) == alice
    bob = downloads.issue(model_file, "m.safetensors", bob_key, ttl=100, now=t0 + 40)
    assert bob != alice
    assert downloads.grant(bob, now=t0 + 40, owner=bob_key).owner == bob_key
    assert downloads.grant(alice, now=t0 + 40, owner=alice_key).owner == alice_key
    # a signed-in owner's link is not a bearer token: nobody else, and nobody signed out, gets the file
    assert downloads.grant(alice, now=t0 + 40, owner=bob_key) is None
    assert downloads.resolve(alice, now=t0 + 40) is None
    single = downloads.issue(model_file, "m.safetensors", None, ttl=100, now=t0 + 40)
    assert single not in (alice, bob) and downloads.resolve(single, now=t0 + 40) == model_file.resolve()
    # with under half its life left, a fresh token is issued; the old one still works until it expires
    later = downloads.issue(model_file, "m.safetensors", alice_key, ttl=100, now=t0 + 60)
    assert later != alice
    assert downloads.resolve(alice, now=t0 + 60, owner=alice_key)
    assert downloads.resolve(later, now=t0 + 150, owner=alice_key)
    downloads.revoke(later)
    assert downloads.resolve(later, now=t0 + 61, owner=alice_key) is None


# (The route's binding of a link to its signed-in owner: tests/security/test_ownership.py.)


def test_urls_follow_the_base_path():
    assert downloads.url("abc") == "/download/abc"
    assert downloads.url("abc", "/studio/") == "/studio/download/abc"


# --- the route on a real server ---------------------------------------------------------------------------

BIG_MB = 300


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class _PeakRss(threading.Thread):
    """Samples a process's resident memory every 5 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop_event = pid, _rss_kib(pid), threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


@pytest.fixture(scope="module")
def run_with_big_export(shapes_dir, tiny_config):
    """A real one-epoch run in the session workspace, whose ONNX export is a 300 MB stand-in.

    The page lists a run's current ONNX export by its path; random bytes in its place make a VGG-size
    file that the server must stream (random, so no compression or sparse-file shortcut can hide a copy).
    """
    from core.results import formats
    from core.techniques import fit

    result = fit(tiny_config(shapes_dir, epochs=1))  # no owner: the single-user app's run
    assert result["status"] == "finished"
    run_dir = Path(result["run_dir"])
    big = formats.default_path(run_dir, "onnx")
    big.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(BIG_MB):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    yield run_dir, big, digest.hexdigest()
    big.unlink(missing_ok=True)


def _export_page(run_id: str, subject: str | None):
    """The Export page of ``run_id`` for a user signed in as ``subject`` (None: the single-user app)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=120)
    if subject:
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "iss": ISSUER, "sub": subject, "email": f"{subject}@example.com"}
    at.query_params["job"] = run_id
    at.run().switch_page("pages/6_export.py").run()
    assert not at.exception, at.exception
    return at


def test_the_export_page_issues_links_for_the_signed_in_owner_only(run_with_big_export):
    run_dir, big, _ = run_with_big_export
    alice_key = owners.key(ISSUER, "alice")
    owners.record(run_dir, alice_key)  # alice's run, as if she had trained it with sign-in on
    try:
        alice = _export_page(run_dir.name, "alice")
        tokens = {}
        for key, path in (("export_safetensors", run_dir / "best.safetensors"), ("export_fmt_onnx", big)):
            url = alice.get_by_key(key).proto.url
            assert url.startswith("/download/")
            tokens[key] = url.rsplit("/", 1)[-1]
            grant = downloads.grant(tokens[key], owner=alice_key)
            assert grant.owner == alice_key and grant.path == path.resolve()
            assert downloads.grant(tokens[key]) is None  # not a bearer token once sign-in is on
        assert downloads.grant(tokens["export_safetensors"], owner=alice_key).filename.endswith(".safetensors")
        assert len(alice.link_button) >= 3
        # bob, signed in, and the single-user app do not see alice's run: no link of theirs names her files
        for subject, key in (("bob-downloads", owners.key(ISSUER, "bob-downloads")), (None, None)):
            other = _export_page(run_dir.name, subject)
            assert all(run_dir.name not in (s.options or []) for s in other.selectbox)
            linked = [downloads.grant(b.proto.url.rsplit("/", 1)[-1], owner=key).path for b in other.link_button]
            assert not any(run_dir.resolve() in path.parents for path in linked)
    finally:
        (run_dir / owners.FILE).unlink()  # the browser test below serves it in single-user mode
    # single-user mode (no st.login): a link without an owner, never alice's token
    anyone = _export_page(run_dir.name, None)
    token = anyone.get_by_key("export_safetensors").proto.url.rsplit("/", 1)[-1]
    assert downloads.grant(token).owner is None and token != tokens["export_safetensors"]


@pytest.mark.browser
def test_a_300_mb_export_streams_from_disk_without_the_server_holding_it(run_with_big_export, tmp_path):
    from browserkit import CHROMIUM, serving
    from playwright.sync_api import sync_playwright

    run_dir, big, expected_sha = run_with_big_export
    size = big.stat().st_size
    with serving(tmp_path, home=workspace.home(), with_process=True) as (url, _home, proc):
        # the real Export page issues the link
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{url}/export?job={run_dir.name}")
            page.get_by_role("heading", name="6 · Export").first.wait_for()
            href = page.locator(".st-key-export_fmt_onnx a").get_attribute("href")
            page.get_by_text("Use it in Python").first.wait_for()  # the page's script has run to its end
            browser.close()
        time.sleep(1)
        assert href.startswith("/download/")

        # download it as a browser would (asking for gzip), stalling once halfway: the server must wait
        # for the client, not read ahead into memory
        sampler = _PeakRss(proc.pid)
        before = sampler.peak
        sampler.start()
        request = urllib.request.Request(url + href, headers={"Accept-Encoding": "gzip, deflate"})
        got, digest = 0, hashlib.sha256()
        with urllib.request.urlopen(request, timeout=60) as r:
            headers = r.headers
            while chunk := r.read(1 << 20):
                digest.update(chunk)
                got += len(chunk)
                if got == size // 2 // (1 << 20) * (1 << 20):
                    time.sleep(2)
        peak = sampler.stop()

        assert headers.get("Content-Encoding") in (None, "identity")  # bytes as on disk, not recompressed
        assert int(headers["Content-Length"]) == size
        assert headers["Content-Disposition"] == f'attachment; filename="{big.name}"'
        assert got == size and digest.hexdigest() == expected_sha
        grew = (peak - before) * 1024
        assert grew < size / 3, f"the server grew by {grew / 1e6:.0f} MB while serving a {size / 1e6:.0f} MB file"

        # an unknown token, and the same link once the file is gone, get a 404 that says what to do
        for bad in ("/download/" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="), href):
            if bad == href:
                big.unlink()
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + bad, timeout=30)
            assert e.value.code == 404
            assert "Open the Export step again" in e.value.read().decode()
        assert urllib.request.urlopen(url + "/_stcore/health", timeout=10).read() == b"ok"
