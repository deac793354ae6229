"""The one exception hierarchy of klaviyo-sync.

Every error the engine raises on purpose derives from :class:`KlaviyoSyncError`.
Each carries a stable ``code`` (golden files and docs name it), a one-line
``message``, and the parts that say *where* (``file``, ``line``, ``column``,
``row``, ``record_id``) as attributes.  Layers add their part on the way up
with :meth:`KlaviyoSyncError.at`.  CLI-facing errors carry an ``exit_code``.

Tree::

    KlaviyoSyncError
    ├── CollectionError           a collection file is unusable (YAML, schema, references)  C0xx
    │   ├── CollectionReadError   the file cannot be read or does not exist            C000
    │   ├── YamlSyntaxError       not YAML, or a value YAML cannot read                 C001
    │   ├── CollectionSchemaError a schema violation (missing/unknown key, type, enum)  C002
    │   ├── YamlDuplicateKeyError a mapping repeats a key                               C003
    │   ├── CollectionReferenceError  parents and titles across files
    │   │   ├── UnknownParentError    the parent is not a loaded collection             C004
    │   │   ├── ParentCycleError      parent references form a cycle                    C005
    │   │   ├── DuplicateTitleError   two collections share a title                     C006
    │   │   └── ParentDirectionError  child and parent run in different directions      C013
    │   ├── DuplicateDestinationError a destination is written by two rows              C008
    │   ├── UnsupportedSourceError    a direction/resource pair that cannot be a source C009
    │   ├── CollectionNameError       a name the source or the target does not have
    │   │   ├── UnknownNameError      a formula or field row reads an unknown name      C010
    │   │   └── UnknownDestinationError  a destination the target does not accept       C011
    │   ├── EachWithoutParentError    ``each`` in a collection without ``parent``       C012
    │   ├── NotADestinationError      duplicate_check / requires_one_of names no destination  C014
    │   ├── LetHidesNameError         a ``let`` name hides a source field or scope name C015
    │   ├── StaticTooLongError        a static value longer than its ``max_length``     C016
    │   ├── YamlLimitError        too large, too deep, too many values once aliases expand  C017
    │   ├── YamlTagError          a tag other than YAML's plain types, or a merge key   C018
    │   ├── YamlEncodingError     the file is not UTF-8 text                            C019
    │   ├── UnknownCollectionError  no loaded collection has that title or file name    C020
    │   ├── NoCollectionFilesError  the paths hold no collection file                   C021
    │   └── CollectionSetError    several collection problems, reported together         C999
    ├── CollectionWarning         not an error: something to review before go-live     W0xx
    │   ├── SubscribeProfileUnmappedWarning  every profile sent would be unsubscribed   W001
    │   ├── PlaceholderWarning    a placeholder value the specification says to replace W002
    │   ├── ScopeNotGrantedWarning  the stored OAuth connection lacks a needed scope    W020
    │   └── RevisionPastSupportWarning  api_revision is past Klaviyo's support window   W021
    ├── PayloadError              a mapped event payload Klaviyo cannot take            O008
    ├── FormulaError              a formula/filter                                        F0xx
    │   ├── FormulaSyntaxError    refused when the collection loads (syntax, forbidden node/name)
    │   └── FormulaRuntimeError   raised while evaluating (exception, limit exceeded)
    │       └── FormulaLimitError time / size / loop limit exceeded
    ├── MappingError              a record could not be mapped (missing source, required row)  M0xx
    │   └── PathNotFoundError     get(obj, "a.b[0]") found nothing at the path           M010
    ├── SettingsError             the subscription settings file is invalid          S0xx
    │   └── SettingsErrors        several settings problems, reported together
    ├── HubError                  the hub store refused a write or read              H0xx
    │   ├── HubRecordError        a record is malformed (missing required field, wrong type)  H001
    │   ├── EmailExistsError      "Email address already exists"; ``existing_id`` names it    H002
    │   ├── HubNotFoundError      no record with that id                                      H003
    │   ├── HubLockedError        another process holds the hub file's write lock past the wait  H007
    │   ├── HubVersionError       the hub file was written by a newer release                 H004
    │   ├── HubFileError          the hub path is a folder or not a SQLite database           H005
    │   └── ExportTargetError     an export would overwrite a database, or its folder is missing  H006
    ├── KlaviyoError              talking to Klaviyo                                 K0xx
    │   ├── KlaviyoApiError       Klaviyo answered with an error ("Error calling Klaviyo")
    │   │   └── KlaviyoAuthError  401/403 or a failed OAuth refresh: credentials, not the record  K003
    │   └── KlaviyoConnectionError transport failure ("An error occurred while contacting Klaviyo")
    ├── InboundError              the inbound flows (poll, Manual Sync)               I0xx
    │   └── ProfileNotFoundError  Manual Sync of a profile id Klaviyo does not have   I003
    ├── AuthError                 OAuth connection problems                          A0xx
    │   ├── AuthConfigError       Client ID / Client Secret / Redirect URL missing      A001-A004
    │   ├── AuthorizationError    authorisation data/code missing, token exchange failed A010-A012
    │   └── ReauthorizationRequired  the refresh token was rejected: authorise again   A020
    ├── DemoFolderError           ``demo --dir`` names a folder holding files the demo did not write  D001
    ├── DocsTargetError           ``docs --out`` would replace files it did not write, or two pages collide  G001-G002
    └── ServiceError              the ``serve`` process or one request to it (``status`` = HTTP)  V0xx
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self


@dataclass(frozen=True)
class Location:
    """Where something happened. Every part is optional; ``str()`` joins what is known."""

    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    row: str | None = None  # e.g. "rows[2] EmailAddress"
    record_id: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            pos = self.file
            if self.line is not None:
                pos += f":{self.line}"
                if self.column is not None:
                    pos += f":{self.column}"
            parts.append(pos)
        if self.row:
            parts.append(self.row)
        if self.record_id is not None:
            parts.append(f"record {self.record_id}")
        return " ".join(parts)


class KlaviyoSyncError(Exception):
    """Base of every deliberate klaviyo-sync error.

    Attributes:
        code: stable error code, e.g. ``"F001"``.
        message: one-line diagnosis.
        location: where (file, line, column, row, record id), filled in by each layer.
        detail: optional longer text (the offending value, shortened).
        exit_code: what the CLI exits with when this error ends a command.
    """

    code: str = "E000"
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        location: Location | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.location = location or Location()
        self.detail = detail

    def at(self, **parts: Any) -> Self:
        """Fill in location parts that are not known yet (inner layers win) and return self."""
        current = self.location
        updates = {k: v for k, v in parts.items() if v is not None and getattr(current, k) is None}
        if updates:
            self.location = replace(current, **updates)
        return self

    def __str__(self) -> str:
        loc = self.location
        pos = str(Location(file=loc.file, line=loc.line, column=loc.column))
        text = f"{pos}: {self.code} {self.message}" if pos else f"{self.code} {self.message}"
        context = [p for p in (f"in {loc.row}" if loc.row else "",
                               f"record {loc.record_id}" if loc.record_id is not None else "") if p]
        if context:
            text += f" ({', '.join(context)})"
        if self.detail:
            text += f"\n  {self.detail}"
        return text

    def to_dict(self) -> dict[str, Any]:
        loc = self.location
        return {
            "code": self.code,
            "message": self.message,
            "detail": self.detail,
            "file": loc.file,
            "line": loc.line,
            "column": loc.column,
            "row": loc.row,
            "record_id": loc.record_id,
        }


# -- collections (engine/collection/, engine/_yaml.py) -----------------------------------------
# One class a code; the families (references, names) share a base so callers can catch them together.


class CollectionError(KlaviyoSyncError):
    """A collection file is unusable; each subclass is one code (docs/collections.md lists them)."""

    code = "C000"


class CollectionReadError(CollectionError):
    """The collection file cannot be read, or does not exist."""

    code = "C000"


class YamlSyntaxError(CollectionError):
    """The text is not YAML, or holds a value YAML cannot read (with the parser's line and column)."""

    code = "C001"


class CollectionSchemaError(CollectionError):
    """The file breaks ``schemas/collection.schema.json`` (missing or unknown key, wrong type, bad enum value)."""

    code = "C002"


class YamlDuplicateKeyError(CollectionError):
    """A YAML mapping repeats a key (the later value would silently win)."""

    code = "C003"


class CollectionReferenceError(CollectionError):
    """Parent/title problems across collections (C004, C005, C006, C013: the subclasses)."""

    code = "C004"


class UnknownParentError(CollectionReferenceError):
    """``parent`` names no loaded collection."""

    code = "C004"


class ParentCycleError(CollectionReferenceError):
    """Parent references form a cycle."""

    code = "C005"


class DuplicateTitleError(CollectionReferenceError):
    """Two collections share a title."""

    code = "C006"


class ParentDirectionError(CollectionReferenceError):
    """A child runs in another direction than its parent."""

    code = "C013"


class DuplicateDestinationError(CollectionError):
    """Two rows write the same destination."""

    code = "C008"


class UnsupportedSourceError(CollectionError):
    """A direction / ``klaviyo_resource`` pair that cannot be a source (``to_hub`` reads profiles only)."""

    code = "C009"


class CollectionNameError(CollectionError):
    """A row reads a name the source record does not have (C010), or writes a destination the
    target does not accept (C011): the subclasses."""

    code = "C010"


class UnknownNameError(CollectionNameError):
    """A formula, filter, ``let`` or field row reads a name the source record does not have."""

    code = "C010"


class UnknownDestinationError(CollectionNameError):
    """A destination the target does not accept (the message lists the valid ones)."""

    code = "C011"


class EachWithoutParentError(CollectionError):
    """``each`` in a collection without ``parent`` (only a child iterates its parent's items)."""

    code = "C012"


class NotADestinationError(CollectionError):
    """``duplicate_check`` or ``requires_one_of`` names a field that is not a destination of the collection."""

    code = "C014"


class LetHidesNameError(CollectionError):
    """A ``let`` name hides a source field or a scope name."""

    code = "C015"


class StaticTooLongError(CollectionError):
    """A static value longer than its row's ``max_length``."""

    code = "C016"


class YamlLimitError(CollectionError):
    """The document is too large, too deep, or expands too far through aliases."""

    code = "C017"


class YamlTagError(CollectionError):
    """A tag other than YAML's plain types (``!!python/object``, ``!foo``, ``!!binary``...)."""

    code = "C018"


class YamlEncodingError(CollectionError):
    """The file is not UTF-8 text."""

    code = "C019"


class UnknownCollectionError(CollectionError):
    """No loaded collection has the title or file name asked for (the message lists the known ones)."""

    code = "C020"


class NoCollectionFilesError(CollectionError):
    """The paths given hold no collection file."""

    code = "C021"


class CollectionSetError(CollectionError):
    """Several problems found at once; ``errors`` holds each of them."""

    code = "C999"

    def __init__(self, errors: list[KlaviyoSyncError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s) in collections")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class CollectionWarning(KlaviyoSyncError):
    """Not an error: something to review before go-live (``validate --strict`` fails on it)."""

    code = "W000"


class SubscribeProfileUnmappedWarning(CollectionWarning):
    """An enabled outbound profile collection does not map ``SubscribeProfile``: every profile it
    sends is unsubscribed."""

    code = "W001"


class PlaceholderWarning(CollectionWarning):
    """A placeholder the specification says to replace before go-live ("Example values", a
    template list flag, a fixed ``SubscribeProfile: true``)."""

    code = "W002"


class ScopeNotGrantedWarning(CollectionWarning):
    """``validate --config``: the OAuth connection stored in the hub lacks a scope a collection needs."""

    code = "W020"


class RevisionPastSupportWarning(CollectionWarning):
    """``validate --config``: the settings' ``api_revision`` is past Klaviyo's support window."""

    code = "W021"


class PayloadError(KlaviyoSyncError):
    """A mapped event payload lacks a value Klaviyo needs, or holds one of the wrong type
    (engine/payloads.py); the order flow logs it as O008."""

    code = "O008"


class FormulaError(KlaviyoSyncError):
    """A formula or filter failed. ``formula_line``/``formula_column`` (1-based) point inside
    the formula's own source; the YAML layer maps them to file positions."""

    code = "F000"
    formula_line: int | None = None
    formula_column: int | None = None


class FormulaSyntaxError(FormulaError):
    code = "F001"


class FormulaRuntimeError(FormulaError):
    code = "F100"


class FormulaLimitError(FormulaRuntimeError):
    code = "F200"


class MappingError(KlaviyoSyncError):
    code = "M000"


class PathNotFoundError(MappingError):
    """``get(obj, path)`` found no value at ``path``; ``step`` names the first missing part."""

    code = "M010"

    def __init__(self, message: str, *, path: str, step: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.path = path
        self.step = step


class SettingsError(KlaviyoSyncError):
    code = "S000"
    exit_code = 2


class SettingsErrors(SettingsError):
    """Several settings problems found at once; ``errors`` holds each, ``str()`` lists them all."""

    code = "S999"

    def __init__(self, errors: list[SettingsError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s) in settings")

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


# One class a code (docstring, ``code``, at times ``exit_code``): the families below are alike in shape only.
class HubError(KlaviyoSyncError):
    code = "H000"


class HubRecordError(HubError):
    """A record handed to the hub is malformed (missing required field, wrong type, unknown key)."""

    code = "H001"


class EmailExistsError(HubError):
    """Another Customer already has this email; ``existing_id`` is its hub Id, so callers can link."""

    code = "H002"

    def __init__(self, message: str, *, existing_id: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.existing_id = existing_id


class HubNotFoundError(HubError):
    code = "H003"


class HubLockedError(HubError):
    """Another process kept the hub file locked longer than the hub's busy timeout; nothing was written."""

    code = "H007"


class HubVersionError(HubError):
    """The hub file's schema is newer than this release knows; it is left untouched."""

    code = "H004"


class HubFileError(HubError):
    """The hub path cannot be a hub: a folder, or a file that is not a SQLite database; left untouched."""

    code = "H005"
    exit_code = 2


class ExportTargetError(HubError):
    """``hub export`` refused its FILE: a SQLite file (a hub) would be overwritten, or its folder is missing."""

    code = "H006"
    exit_code = 2


class KlaviyoError(KlaviyoSyncError):
    code = "K000"


class KlaviyoApiError(KlaviyoError):
    """Klaviyo answered with an error status, or with an answer that is not Klaviyo's for the call
    (wrong status, wrong body shape, a redirect). ``message`` starts with "Error calling Klaviyo".

    ``transient`` says whether the same request may succeed later (429, 5xx, a malformed 2xx
    answer from a proxy); by default it follows ``status``.
    """

    code = "K001"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        klaviyo_code: str | None = None,
        pointer: str | None = None,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        transient: bool | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.transient = (status == 429 or status >= 500) if transient is None else transient
        self.klaviyo_code = klaviyo_code
        self.pointer = pointer
        self.retry_after = retry_after
        self.errors = errors or []


class KlaviyoAuthError(KlaviyoApiError):
    """Klaviyo refused the credentials (401/403) or the OAuth connection could not be refreshed: no
    record's fault; the run stops."""

    code = "K003"


class KlaviyoConnectionError(KlaviyoError):
    """Transport failure. ``message`` starts with "An error occurred while contacting Klaviyo"."""

    code = "K002"


class AuthError(KlaviyoSyncError):
    code = "A000"


class AuthConfigError(AuthError):
    """OAuth settings are missing or unusable (Client ID A001, Client Secret A002, Redirect URL A003/A004)."""

    code = "A001"
    exit_code = 2


class AuthorizationError(AuthError):
    """The browser authorisation or the code exchange failed (data A010, code/state A011, exchange A012)."""

    code = "A010"


class ReauthorizationRequired(AuthError):
    """The stored refresh token was rejected (revoked, expired, uninstalled): run ``auth login`` again."""

    code = "A020"


class DemoFolderError(KlaviyoSyncError):
    """``demo --dir`` names a folder that holds files the demo did not write; nothing is touched."""

    code = "D001"
    exit_code = 2


class DocsTargetError(KlaviyoSyncError):
    """``docs --out`` cannot write its pages; nothing is written.  G001: the folder is a file, cannot
    be made or written, or holds a file of a page's name that the command did not generate.
    G002: two collection files have the same name, so their pages would too."""

    code = "G001"
    exit_code = 2


# -- inbound flows (engine/flows/inbound.py) ------------------------------------------------


class InboundError(KlaviyoSyncError):
    """An inbound poll or Manual Sync problem: I001 a profile could not be written (unexpected
    failure), I002 not a profile id, I004 a bad ``--since``."""

    code = "I000"


class ProfileNotFoundError(InboundError):
    """Manual Sync of a profile id Klaviyo answers 404 for."""

    code = "I003"


class ServiceError(KlaviyoSyncError):
    """A problem of the ``serve`` process or of one request to it.

    Codes: ``V001`` another ``serve`` holds the hub (the lock file beside it names its pid);
    ``V002`` a non-loopback host without ``service.token``; ``V003`` the address cannot be bound;
    ``V400`` the request body is not JSON (line and column given) or not the expected shape;
    ``V401`` no token, a wrong token, or the API is disabled because ``service.token`` is not set;
    ``V403`` a form without a valid CSRF token, or a state-changing page while no token is set;
    ``V404`` unknown route or record; ``V405`` method not allowed; ``V413`` the request body is
    larger than ``service.max_body_bytes``; ``V422`` well-formed but cannot be carried out.

    Attributes:
        status: the HTTP status the API answers with (requests only).
    """

    code = "V000"
    exit_code = 2

    def __init__(self, message: str, *, code: str | None = None, status: int = 400, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        self.status = status


__all__ = [
    "Location",
    "KlaviyoSyncError",
    "CollectionError",
    "CollectionReadError",
    "YamlSyntaxError",
    "CollectionSchemaError",
    "YamlDuplicateKeyError",
    "CollectionReferenceError",
    "UnknownParentError",
    "ParentCycleError",
    "DuplicateTitleError",
    "ParentDirectionError",
    "DuplicateDestinationError",
    "UnsupportedSourceError",
    "CollectionNameError",
    "UnknownNameError",
    "UnknownDestinationError",
    "EachWithoutParentError",
    "NotADestinationError",
    "LetHidesNameError",
    "StaticTooLongError",
    "YamlLimitError",
    "YamlTagError",
    "YamlEncodingError",
    "UnknownCollectionError",
    "NoCollectionFilesError",
    "CollectionSetError",
    "CollectionWarning",
    "SubscribeProfileUnmappedWarning",
    "PlaceholderWarning",
    "ScopeNotGrantedWarning",
    "RevisionPastSupportWarning",
    "PayloadError",
    "FormulaError",
    "FormulaSyntaxError",
    "FormulaRuntimeError",
    "FormulaLimitError",
    "MappingError",
    "PathNotFoundError",
    "SettingsError",
    "SettingsErrors",
    "HubError",
    "HubRecordError",
    "EmailExistsError",
    "HubNotFoundError",
    "HubVersionError",
    "HubLockedError",
    "HubFileError",
    "ExportTargetError",
    "DemoFolderError",
    "DocsTargetError",
    "KlaviyoError",
    "KlaviyoApiError",
    "KlaviyoAuthError",
    "KlaviyoConnectionError",
    "AuthError",
    "InboundError",
    "ProfileNotFoundError",
    "AuthConfigError",
    "AuthorizationError",
    "ReauthorizationRequired",
    "ServiceError",
]

