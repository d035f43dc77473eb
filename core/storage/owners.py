"""Who owns each stored thing: one small record inside its folder, and one rule for who may see it.

With sign-in configured every run, dataset and upload folder is created with ``record(folder, owner)``:
a hidden file ``.owner.json`` holding the owner key. Listing, opening, changing and deleting all ask
``visible(folder, owner)``, and that rule is the whole policy:

- the single-user app (owner None) sees everything that has no owner record;
- a signed-in user sees exactly the folders recorded with their key, nothing else;
- a record that cannot be read matches nobody (a damaged file never hands data to someone).

The key comes from the identity provider's stable subject (``key(issuer, subject)``), never from an
e-mail address or a display name, which a user can often choose. Things created before sign-in was
turned on have no record, so signed-in users do not see them until an operator runs ``record`` on them.
Pure Python; imports nothing of core but the workspace.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from core.i18n import N_, _

FILE = ".owner.json"  # hidden: dataset scanners skip it, and it goes wherever its folder goes
_NOBODY = "\0unreadable-owner-record"  # what a damaged record reads as: equal to no key and not None


def key(issuer: str, subject: str) -> str:
    """The owner key of an identity: 32 hex characters derived from the provider (``iss``) and its ``sub``."""
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(_("the identity provider sent no subject ('sub' claim); sign-in cannot tell users "
                           "apart without it — check the OIDC provider's configuration"))
    text = f"{issuer or ''}\n{subject}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def record(folder: str | Path, owner: str | None) -> None:
    """Write ``owner`` into ``folder`` (atomically); None, the single-user owner, writes nothing."""
    if owner is None:
        return
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"an owner key is a non-empty string from owners.key(); got {owner!r}")
    folder = Path(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"owner": owner}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / FILE)  # readers see no record or the whole record, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def owner_of(folder: str | Path) -> str | None:
    """The owner recorded in ``folder``; None when there is no record (made in single-user mode)."""
    path = Path(folder) / FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return _NOBODY
    value = data.get("owner") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else _NOBODY


def visible(folder: str | Path, owner: str | None) -> bool:
    """Whether ``owner`` (None: the single-user app) may list, open, change or delete ``folder``."""
    return owner_of(folder) == owner


def check(folder: str | Path, owner: str | None, what: str = "item") -> Path:
    """``folder`` when ``owner`` may use it, else ValueError saying it was not found (nothing more)."""
    folder = Path(folder)
    if not visible(folder, owner):
        # The same words as for a folder that does not exist: another user's things are not confirmed.
        raise ValueError(_("{what} {name} was not found in your workspace").format(
            what=_(_WHAT.get(what, what)), name=repr(folder.name)))
    return folder


# the words check()'s callers use for ``what``, marked for translation
_WHAT = {"item": N_("item"), "dataset": N_("dataset"), "run": N_("run"), "adapted backbone": N_("adapted backbone")}


def mine(folders, owner: str | None) -> list:
    """The folders (paths, or objects with a ``path``) that ``owner`` may see, in their order."""
    return [f for f in folders if visible(getattr(f, "path", f), owner)]
