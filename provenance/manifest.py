"""The settings manifest: which settings signed a database, and refusing to mix them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.models import ManifestEntry
from .errors import SettingsMismatch
from .settings import Settings


def load(session: Session) -> Settings | None:
    value = session.scalar(select(ManifestEntry.value).where(ManifestEntry.key == "settings"))
    return Settings.from_json(value) if value else None


def ensure(session: Session, requested: Settings | None) -> Settings:
    """The database's settings, recording ``requested`` (or the defaults) on first use.

    Raises :class:`SettingsMismatch` when ``requested`` differs from what signed the database.
    """
    stored = load(session)
    if stored is None:
        settings = requested or Settings()
        session.add(ManifestEntry(key="settings", value=settings.to_json()))
        session.add(ManifestEntry(key="fingerprint", value=settings.fingerprint()))
        session.flush()
        return settings
    if requested is not None and requested.fingerprint() != stored.fingerprint():
        raise SettingsMismatch(
            "this database was signed with other settings ("
            + "; ".join(stored.differences(requested))
            + f"; stored fingerprint {stored.fingerprint()}, requested {requested.fingerprint()}). "
            "Use the stored settings (omit the options) or another --db."
        )
    return stored
