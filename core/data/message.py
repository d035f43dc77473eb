"""A message that is stored in English (index caches, split.json, .skipped.json) and shown in the reader's
language: the English text itself, remembering its msgid and values (issue 15's stored-message decision)."""
from __future__ import annotations

from typing import Any

from core.i18n import _


class Message(str):
    """English text (the str itself: what is stored, logged and matched by tests) that keeps its msgid and
    values; ``shown()`` is the same message in the current language. A value may be a Message itself.

    Write ``Message(N_("{name} is empty"), name=name)`` so that extraction finds the msgid."""

    msgid: str
    params: dict[str, Any]

    def __new__(cls, msgid: str, **params: Any) -> "Message":
        self = super().__new__(cls, msgid.format(**params))
        self.msgid, self.params = msgid, params
        return self

    def __getnewargs_ex__(self) -> tuple[tuple, dict]:  # pickle / deepcopy rebuild it from msgid and values
        return (self.msgid,), dict(self.params)

    def shown(self) -> str:
        """The message in the current language (English where the catalog has no translation)."""
        return _(self.msgid).format(**{k: shown(v) for k, v in self.params.items()})

    def to_dict(self) -> dict[str, Any]:
        """{"msgid", "params"} for JSON (nested Messages as dicts too)."""
        return {"msgid": self.msgid,
                "params": {k: v.to_dict() if isinstance(v, Message) else v for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Message":
        """Inverse of to_dict."""
        params = {k: cls.from_dict(v) if isinstance(v, dict) and "msgid" in v else v
                  for k, v in data.get("params", {}).items()}
        return cls(str(data["msgid"]), **params)


def shown(text: object) -> str:
    """``text`` in the current language when it is a Message, else as it is (old records: English)."""
    return text.shown() if isinstance(text, Message) else str(text)


def stored(text: str, record: dict[str, Any] | None) -> Any:
    """The Message a record ({"msgid", "params"}) describes, else the plain ``text`` it was stored with."""
    if isinstance(record, dict) and record.get("msgid"):
        try:
            return Message.from_dict(record)
        except (KeyError, IndexError, ValueError, TypeError):
            return text  # a record from another version of the code: its English text still reads
    return text
