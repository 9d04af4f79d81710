"""Errors a user can act on; the CLI prints them as one line."""


class ProvenanceError(Exception):
    """A problem with input, settings or the database that the user can fix."""


class SettingsMismatch(ProvenanceError):
    """The database was signed with other settings than the ones requested."""


class InputError(ProvenanceError):
    """One input file cannot be ingested; the rest of the ingest goes on."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # survive the trip back from an ingest worker process
        return (type(self), (self.path, self.reason))
