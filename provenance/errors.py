"""Errors a user can act on; the CLI prints them as one line."""


class ProvenanceError(Exception):
    """A problem with input, settings or the database that the user can fix."""


class SettingsMismatch(ProvenanceError):
    """The database was signed with other settings than the ones requested."""


class InputError(ProvenanceError):
    """One input file cannot be ingested; the rest of the ingest goes on."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path_text(path)}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # survive the trip back from an ingest worker process
        return (type(self), (self.path, self.reason))


def path_text(path: str) -> str:
    """A file name as valid Unicode, fit to store and print.

    Linux names are bytes: one that is not UTF-8 reaches Python with surrogate escapes,
    which SQLite and a strict UTF-8 stdout refuse. Those bytes become ``\\xe9`` escapes
    (the same name always gives the same text); every other name is returned unchanged.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name decoding produces
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
