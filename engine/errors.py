"""The one exception hierarchy of klaviyo-sync.

Every error the engine raises on purpose derives from :class:`KlaviyoSyncError`.
Each carries a stable ``code`` (golden files and docs name it), a one-line
``message``, and the parts that say *where* (``file``, ``line``, ``column``,
``row``, ``destination``, ``source``, ``record_id``: one :class:`Location`).  Layers add their
part on the way up with :meth:`KlaviyoSyncError.at`.  CLI-facing errors carry an ``exit_code``.

It is also the one diagnostic type: a record's mapping problems and warnings are these errors,
returned rather than raised, and :meth:`KlaviyoSyncError.format` renders any of them for the
CLI and the hub error log (``to_dict`` for JSON).

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
    ├── FormulaError              a formula/filter                                      F0xx
    │   ├── FormulaSyntaxError    refused at load; raised itself: a syntax error        F001
    │   │   ├── FormulaTooLongError      the source is longer than ``max_source``       F002
    │   │   ├── ForbiddenConstructError  a construct outside the allow-list             F003
    │   │   ├── FormulaImportError       an import                                      F004
    │   │   ├── PrivateNameError         a name, attribute or keyword starting ``_``    F005
    │   │   ├── UnknownFunctionError     a call to a function not in the table          F006
    │   │   ├── ForbiddenAttributeError  attribute access, not a safe method call       F007
    │   │   ├── ForbiddenFormatError     ``.format()``, a nested or wide format spec    F008
    │   │   ├── UnpackingError           ``*args``, ``**kwargs``, ``{**d}``             F009
    │   │   ├── MissingReturnError       a statement block not ending in ``return``     F010
    │   │   ├── FormulaNestingError      nesting deeper than ``max_depth``              F011
    │   │   ├── FunctionAsValueError     a function used as a value or assigned to      F012
    │   │   └── EmptyFormulaError        an empty formula                               F013
    │   └── FormulaRuntimeError   raised while evaluating; itself: an exception         F100
    │       ├── DisallowedMethodError    a method not allowed for the value's type      F101
    │       ├── NoResolverError          a hub/Klaviyo helper without a resolver        F102
    │       └── FormulaLimitError time / size / loop limit exceeded                     F2xx
    │           ├── TimeLimitError       CPU time over ``max_seconds``                  F201
    │           ├── StepLimitError       loop steps over ``max_steps``                  F202
    │           ├── SizeLimitError       a string, sequence or value too large          F203
    │           ├── NumberLimitError     a number, exponent or ndigits over its limit   F204
    │           └── FormulaDepthError    a value nested too deeply                      F205
    ├── MappingError              a record could not be mapped (a problem of its outcome)  M0xx
    │   ├── NotAnObjectError      the source record is not a JSON object                 M001
    │   ├── MissingValueError     a required row has no value                            M002
    │   ├── WrongTypeError        a value is not of the row's ``expect`` type            M003
    │   ├── TooLongError          a text is longer than the row's ``max_length``         M004
    │   ├── RequiresOneOfError    none of ``requires_one_of`` has a value                M005
    │   ├── ChildItemsError       a child's ``each`` is not a list                       M006
    │   ├── TooDeepError          a field row's value is nested too deeply               M007
    │   ├── UnreadableSourceError a source could not be read (``on_missing: error``)     M010
    │   │   └── PathNotFoundError get(obj, "a.b[0]") found nothing at the path           M010
    │   └── UnexpectedMappingError  an exception nobody expected while mapping           M020
    ├── MappingWarning            a helper's warning on one row; the record still maps    W0xx
    ├── SettingsError             the subscription settings file is invalid          S0xx
    │   ├── SettingsErrors        several settings problems, reported together       S999
    │   ├── SettingsYamlError     not YAML, or YAML the bounded reader refuses       S001
    │   ├── SettingsValueError    a schema or value violation                        S002
    │   ├── UnsetVariableError    a ``${NAME}`` whose variable is not set            S003
    │   ├── SettingsReadError     the settings file is not found or cannot be read   S004
    │   ├── EveryOptionError      ``poll --every`` is not a duration in bounds       S010
    │   ├── NoCredentialsError    no API key and no OAuth connection                 S100
    │   └── BackfillRevisionError backfill at a revision without bulk import jobs     S020
    ├── HubError                  the hub store refused a write or read              H0xx
    │   ├── HubRecordError        a record is malformed (missing required field, wrong type)  H001
    │   ├── EmailExistsError      "Email address already exists"; ``existing_id`` names it    H002
    │   ├── HubNotFoundError      no record with that id                                      H003
    │   ├── HubLockedError        another process holds the hub file's write lock past the wait  H007
    │   ├── HubVersionError       the hub file was written by a newer release                 H004
    │   ├── HubFileError          the hub path is a folder or not a SQLite database           H005
    │   ├── HubDatabaseError      the hub's PostgreSQL database cannot be reached or used     H008
    │   └── ExportTargetError     an export would overwrite a database, or its folder is missing  H006
    ├── RefusedRecordsError       several records of one hub API request refused together   H0xx
    ├── KlaviyoError              talking to Klaviyo                                 K0xx
    │   ├── KlaviyoApiError       Klaviyo answered with an error ("Error calling Klaviyo")
    │   │   └── KlaviyoAuthError  401/403 or a failed OAuth refresh: credentials, not the record  K003
    │   │       ├── OAuthRefreshError         the token source failed (also an AuthError)  A0xx
    │   │       └── OAuthReauthorizationError the refresh token was rejected (also ReauthorizationRequired)  A020
    │   ├── KlaviyoConnectionError transport failure ("An error occurred while contacting Klaviyo")
    │   └── RateBudgetError       the shared rate budget (Redis at ``rate_budget``) unreachable or refusing  K004
    ├── InboundError              the inbound flows (poll, Manual Sync)               I0xx
    │   ├── ProfileIdError        ``sync profile`` text that is not a profile id      I002
    │   ├── ProfileNotFoundError  Manual Sync of a profile id Klaviyo does not have   I003
    │   └── SinceError            a ``--since`` that is not a date or time            I004
    ├── AuthError                 OAuth connection problems                          A0xx
    │   ├── AuthConfigError       Client ID / Client Secret / Redirect URL missing      A001-A004
    │   │   ├── ClientIdMissingError, ClientSecretMissingError, RedirectUrlMissingError  A001-A003
    │   │   └── RedirectUrlError  not a loopback http URL, or cannot listen on it      A004
    │   ├── AuthorizationError    authorisation data/code missing, token exchange failed A010-A012
    │   │   └── AuthorizationDataError, AuthorizationCodeError, TokenExchangeError     A010-A012
    │   ├── PartialGrantWarning   not an error: the login got fewer scopes than needed  A013
    │   ├── ReauthorizationRequired  the refresh token was rejected: authorise again   A020
    │   ├── RefreshError          the access token could not be refreshed              A021
    │   └── RevocationError       logged out locally, not revoked at Klaviyo           A030
    ├── DemoFolderError           ``demo --dir`` names a folder holding files the demo did not write  D001
    ├── DocsTargetError           ``docs --out`` cannot write its pages              G001
    │   └── PageNameClashError    two collection files would write one page          G002
    ├── WorkerError               the ``worker`` command cannot start                 J0xx
    │   ├── SubscriptionsDirError ``--subscriptions`` is no folder, or holds no settings file  J001
    │   ├── DuplicateSubscriptionError  two settings files name one subscription            J002
    │   ├── JobsDatabaseMissingError  no ``--jobs``, and no PostgreSQL hub shared by all    J003
    │   └── JobsDatabaseError     the jobs database cannot be reached or prepared            J004
    └── ServiceError              the ``serve`` process or one request to it (``status`` = HTTP)  V0xx
        ├── ServeLockHeldError    another ``serve`` holds the hub                           V001
        ├── UnprotectedHostError  a non-loopback host without ``service.token``             V002
        ├── ListenError           the address cannot be bound                               V003
        ├── BadRequestError       the body is not JSON or not the expected shape (400)      V400
        ├── UnauthorizedError     no or wrong token, sign in first, API disabled (401)      V401
        ├── ForbiddenError        no valid CSRF token, or a form with no token set (403)    V403
        ├── ResourceNotFoundError unknown route, or a page's record not in the hub (404)    V404
        ├── MethodNotAllowedError the route does not take the method (405)                  V405
        ├── BodyTooLargeError     the body is over ``service.max_body_bytes`` (413)         V413
        ├── UnprocessableRequestError  well-formed but cannot be carried out (422)          V422
        └── InternalServiceError  an exception nobody expected (500)                        V500

Outside the tree (see their section): the sandbox's ``SandboxApiError``, ``SandboxOAuthError``,
``FilterError`` and ``SandboxStateFileError``, and the Klaviyo client's ``MalformedAnswerError``.
Private signals that never leave the one module raising and catching them (the mapper's
``_TooDeep``, the transport's ``_TooLarge`` and ``_NoRefresh``, the inbound transfer's
``_Invalid``) are not errors anyone sees, so they stay beside their code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Self


@dataclass(frozen=True)
class Location:
    """Where something happened. Every part is optional; ``str()`` joins what is known.

    ``file``/``line``/``column`` name a position (a collection or settings file), ``row`` the
    collection row (``"rows[2] EmailAddress"``, ``"filter"``, ``"let total"``), ``destination`` and
    ``source`` that row's destination and source path, ``record_id`` the record being handled.
    """

    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    row: str | None = None  # e.g. "rows[2] EmailAddress"
    record_id: str | None = None
    destination: str | None = None  # the row's destination, e.g. "EmailAddress"
    source: str | None = None  # the row's source path, e.g. "location.city"

    @property
    def position(self) -> str:
        """``file:line:col`` as far as known; empty without a file."""
        if not self.file:
            return ""
        pos = self.file
        if self.line is not None:
            pos += f":{self.line}"
            if self.column is not None:
                pos += f":{self.column}"
        return pos

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.position)
        if self.row:
            parts.append(self.row)
        if self.record_id is not None:
            parts.append(f"record {self.record_id}")
        return " ".join(parts)


#: The renderings of a diagnostic (:meth:`KlaviyoSyncError.format`):
#:
#: - ``"text"``: the CLI's ``file:line:col: CODE message (in row, record id)``, the detail
#:   indented on the next line (what ``str()`` gives);
#: - ``"inbound-log"``: the hub error log's detail for a record of the inbound flows (poll,
#:   Manual Sync): ``detail at file:line:col (row)``;
#: - ``"outbound-log"``: the same for the outbound flows (dispatch, push, backfill):
#:   ``detail; row; file:line:col``.
#:
#: The two log forms differ only because their flows were written apart; error logs already
#: stored and the tests read them, so each keeps its words.
Style = Literal["text", "inbound-log", "outbound-log"]


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

    def format(self, style: Style = "text") -> str:
        """This diagnostic as text, the one rendering every output uses (see :data:`Style`).

        The message itself is not part of the two log forms: the error log keeps it in its own
        column, and the rendered text is the entry's detail.
        """
        loc = self.location
        if style == "inbound-log":
            where = loc.position
            parts = [self.detail or "", f"at {where}" if where else "", f"({loc.row})" if loc.row else ""]
            return " ".join(x for x in parts if x)
        if style == "outbound-log":
            where = ":".join(str(x) for x in (loc.file, loc.line, loc.column) if x is not None)
            return "; ".join(x for x in (self.detail, loc.row, where) if x)
        pos = loc.position
        text = f"{pos}: {self.code} {self.message}" if pos else f"{self.code} {self.message}"
        context = [p for p in (f"in {loc.row}" if loc.row else "",
                               f"record {loc.record_id}" if loc.record_id is not None else "") if p]
        if context:
            text += f" ({', '.join(context)})"
        if self.detail:
            text += f"\n  {self.detail}"
        return text

    def __str__(self) -> str:
        return self.format()

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """A JSON-ready view.

        The full form (``--json`` errors) has ``code, message, detail, file, line, column, row,
        record_id``, each even when unknown.  ``compact=True`` (a record's problems and warnings in
        an outcome, golden files) has only the known parts, in the order a reader takes them in:
        ``code, message, row, destination, source, detail, file, line, column``; not the record id,
        which the outcome holding them states once.
        """
        loc = self.location
        if compact:
            parts = {"code": self.code, "message": self.message, "row": loc.row, "destination": loc.destination,
                     "source": loc.source, "detail": self.detail, "file": loc.file, "line": loc.line,
                     "column": loc.column}
            return {k: v for k, v in parts.items() if v is not None}
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
    """A formula refused when its collection loads (engine/formula/check.py); raised itself, the
    source does not parse.  Each subclass is one code."""

    code = "F001"


class FormulaRuntimeError(FormulaError):
    """A formula failed while evaluating; raised itself, an exception inside the formula (the
    message names it and the failing part).  Each subclass is one code."""

    code = "F100"


class FormulaLimitError(FormulaRuntimeError):
    """An evaluation went past one of its :class:`~engine.formula.Limits`; each subclass is one code."""

    code = "F200"


# -- formulas refused at load, one class a code (engine/formula/check.py; docs/formulas.md) -----


class FormulaTooLongError(FormulaSyntaxError):
    """The formula source is longer than ``max_source`` characters."""

    code = "F002"


class ForbiddenConstructError(FormulaSyntaxError):
    """A construct outside the allow-list (lambda, def, class, try, with, ``:=``, bytes literals...)."""

    code = "F003"


class FormulaImportError(FormulaSyntaxError):
    """An ``import`` or ``from ... import``."""

    code = "F004"


class PrivateNameError(FormulaSyntaxError):
    """A name, attribute or keyword starting with ``_`` (private), e.g. ``x.__class__``."""

    code = "F005"


class UnknownFunctionError(FormulaSyntaxError):
    """A call to a function that is not in the table (the message lists the valid ones), or a call of
    something that is neither a named function nor a safe method."""

    code = "F006"


class ForbiddenAttributeError(FormulaSyntaxError):
    """Attribute access other than a call to a safe method (the message lists them)."""

    code = "F007"


class ForbiddenFormatError(FormulaSyntaxError):
    """``.format()`` / ``.format_map()``, or an f-string format spec that is nested or too wide."""

    code = "F008"


class UnpackingError(FormulaSyntaxError):
    """``*args``, ``**kwargs`` or ``{**d}``."""

    code = "F009"


class MissingReturnError(FormulaSyntaxError):
    """A statement block that does not end with ``return`` (on every branch of a final if/else)."""

    code = "F010"


class FormulaNestingError(FormulaSyntaxError):
    """The formula's syntax tree is nested deeper than ``max_depth``, or too deep to parse."""

    code = "F011"


class FunctionAsValueError(FormulaSyntaxError):
    """A function used as a value or assigned to, e.g. ``len = 1``."""

    code = "F012"


class EmptyFormulaError(FormulaSyntaxError):
    """The formula is empty or only blanks."""

    code = "F013"


# -- formulas failing while evaluating, one class a code (engine/formula/) ---------------------


class DisallowedMethodError(FormulaRuntimeError):
    """A method the value's type does not allow (checked again at run time against the receiver's
    actual type), or ``sum()`` given a start that is not a number."""

    code = "F101"


class NoResolverError(FormulaRuntimeError):
    """A helper that needs the hub or Klaviyo was called without a resolver bound."""

    code = "F102"


class TimeLimitError(FormulaLimitError):
    """The evaluation took more CPU time than ``max_seconds``."""

    code = "F201"


class StepLimitError(FormulaLimitError):
    """The evaluation took more loop steps than ``max_steps``."""

    code = "F202"


class SizeLimitError(FormulaLimitError):
    """A string, sequence or value would be larger than its limit (``max_string``,
    ``max_sequence``, ``max_items``, ``max_format_width``)."""

    code = "F203"


class NumberLimitError(FormulaLimitError):
    """A number would be too large: more bits than ``max_int_bits``, more digits than ``max_digits``,
    an exponent above ``max_exponent``, a ``round()`` ndigits beyond the limit."""

    code = "F204"


class MappingError(KlaviyoSyncError):
    code = "M000"


# -- one record's mapping problems (engine/mapper.py, engine/runner.py) -------------------------
# The mapper does not raise these: it returns them in ``MapResult.problems`` (``warnings``), each
# located at its collection file, line, column, row, destination and source.


class NotAnObjectError(MappingError):
    """The source record is not a JSON object."""

    code = "M001"


class MissingValueError(MappingError):
    """A required row has no value; the message is the collection's required message."""

    code = "M002"


class WrongTypeError(MappingError):
    """A row's value is not of the row's ``expect`` type."""

    code = "M003"


class TooLongError(MappingError):
    """A row's text is longer than the row's ``max_length``."""

    code = "M004"


class RequiresOneOfError(MappingError):
    """None of the collection's ``requires_one_of`` destinations has a value."""

    code = "M005"


class ChildItemsError(MappingError):
    """A child collection's ``each`` path holds something other than a list."""

    code = "M006"


class TooDeepError(MappingError):
    """A field row's value is nested deeper than a payload may hold (a formula row's is F205)."""

    code = "M007"


class UnreadableSourceError(MappingError):
    """A source could not be read: a row with ``on_missing: error`` found no value; the message is
    the collection's ``unreadable_message`` when it has one."""

    code = "M010"


class PathNotFoundError(UnreadableSourceError):
    """``get(obj, path)`` found no value at ``path``; ``step`` names the first missing part."""

    code = "M010"

    def __init__(self, message: str, *, path: str, step: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.path = path
        self.step = step


class UnexpectedMappingError(MappingError):
    """An exception nobody expected while mapping the record (a RecursionError, a helper's bug)."""

    code = "M020"


class FormulaDepthError(FormulaLimitError):
    """A formula's value is nested deeper than a payload may hold, or than ``max_data_depth``."""

    code = "F205"


class MappingWarning(KlaviyoSyncError):
    """A helper's warning about one row (W010: a phone number too long to parse); the record still
    maps.  The code is the helper's (data), so it is passed in."""

    code = "W000"


class SettingsError(KlaviyoSyncError):
    """The settings cannot be used; each subclass is one code (engine/settings.py lists them)."""

    code = "S000"
    exit_code = 2


class SettingsErrors(SettingsError):
    """Several settings problems found at once; ``errors`` holds each, ``str()`` lists them all."""

    code = "S999"

    def __init__(self, errors: list[SettingsError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s) in settings")

    def format(self, style: Style = "text") -> str:
        return "\n".join(e.format(style) for e in self.errors)


# -- the settings file, one class a code (engine/settings.py) ----------------------------------


class SettingsYamlError(SettingsError):
    """The settings file is not YAML, or breaks the reader's bounds (encoding, size, depth,
    aliases, tags, duplicate keys); located at the parser's line and column."""

    code = "S001"


class SettingsValueError(SettingsError):
    """A key breaks ``schemas/settings.schema.json`` (unknown key, wrong type, bad value), or holds
    a value the schema allows but that cannot work (an http:// API URL off loopback, a zero timeout)."""

    code = "S002"


class UnsetVariableError(SettingsError):
    """A ``${NAME}`` reference whose environment variable is not set."""

    code = "S003"


class SettingsReadError(SettingsError):
    """The settings file given does not exist, or cannot be read."""

    code = "S004"


# -- settings a command cannot run with (engine/connect.py, engine/flows/backfill.py, engine/cli/) --


class EveryOptionError(SettingsError):
    """``poll --every`` is not a duration, or is outside the bounds ``poll_interval`` has."""

    code = "S010"


class NoCredentialsError(SettingsError):
    """Neither an API key nor a stored OAuth connection: the Klaviyo client cannot be opened."""

    code = "S100"


class BackfillRevisionError(SettingsError):
    """``backfill customers`` at an ``api_revision`` without bulk profile import jobs."""

    code = "S020"


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


class HubDatabaseError(HubError):
    """The hub's PostgreSQL database cannot be reached, refused the connection, or the subscription is unusable."""

    code = "H008"


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


class RateBudgetError(KlaviyoError):
    """The shared rate budget (Redis at the ``rate_budget`` setting) could not be reached at the first
    request, refused a command, or stayed unreachable past its outage limit.  Nothing was sent: a
    per-process budget instead would exceed the account's tiers.  The URL's password is masked."""

    code = "K004"


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


# -- OAuth, one class a code (engine/oauth/) --------------------------------------------------


class ClientIdMissingError(AuthConfigError):
    """``oauth.client_id`` is not set."""

    code = "A001"


class ClientSecretMissingError(AuthConfigError):
    """``oauth.client_secret`` is not set."""

    code = "A002"


class RedirectUrlMissingError(AuthConfigError):
    """``oauth.redirect_url`` is not set."""

    code = "A003"


class RedirectUrlError(AuthConfigError):
    """``oauth.redirect_url`` is not a loopback ``http://`` URL, or ``auth login`` cannot listen on it."""

    code = "A004"


class AuthorizationDataError(AuthorizationError):
    """No redirect came back from Klaviyo in time, or it carried no parameters."""

    code = "A010"


class AuthorizationCodeError(AuthorizationError):
    """The redirect carried an error, a foreign ``state`` or no ``code``."""

    code = "A011"


class TokenExchangeError(AuthorizationError):
    """Klaviyo refused to exchange the code for tokens, or its answer held no access token."""

    code = "A012"


class PartialGrantWarning(AuthError):
    """Not an error: ``auth login`` worked, but Klaviyo granted fewer scopes than the enabled
    collections need; written to the error log as a warning (``validate --config`` says it as W020)."""

    code = "A013"


class RefreshError(AuthError):
    """The access token could not be refreshed although the refresh token may still be good
    (Klaviyo rejected the client credentials, or its answer held no access token)."""

    code = "A021"


class RevocationError(AuthError):
    """``auth logout`` removed the tokens locally but Klaviyo did not revoke them."""

    code = "A030"


class OAuthRefreshError(KlaviyoAuthError, AuthError):
    """The OAuth token source could not give a usable token, as the Klaviyo client raises it: both a
    :class:`KlaviyoAuthError` and the :class:`AuthError` it was (whose code it keeps, e.g. A021)."""


class OAuthReauthorizationError(KlaviyoAuthError, ReauthorizationRequired):
    """The stored refresh token was rejected (A020), as the Klaviyo client raises it: run ``auth login`` again."""


class DemoFolderError(KlaviyoSyncError):
    """``demo --dir`` names a folder that holds files the demo did not write; nothing is touched."""

    code = "D001"
    exit_code = 2


class DocsTargetError(KlaviyoSyncError):
    """``docs --out`` cannot write its pages; nothing is written: the folder is a file, cannot be
    made or written, or holds a file of a page's name that the command did not generate."""

    code = "G001"
    exit_code = 2


class PageNameClashError(DocsTargetError):
    """Two collection files have the same name, so their pages would too; nothing is written."""

    code = "G002"


# -- inbound flows (engine/flows/inbound.py) ------------------------------------------------


class InboundError(KlaviyoSyncError):
    """An inbound poll or Manual Sync problem (I001, a profile that could not be written, is an
    error-log code only)."""

    code = "I000"


class ProfileIdError(InboundError):
    """``sync profile`` was given text that cannot be a Klaviyo profile id (never sent to Klaviyo)."""

    code = "I002"


class ProfileNotFoundError(InboundError):
    """Manual Sync of a profile id Klaviyo answers 404 for."""

    code = "I003"


class SinceError(InboundError):
    """``poll --since`` is not a date or an ISO time."""

    code = "I004"


class ServiceError(KlaviyoSyncError):
    """A problem of the ``serve`` process or of one request to it; each subclass is one code.

    Attributes:
        status: the HTTP status the API answers with (requests only); on the class where the
            code decides it, else 400.
    """

    code = "V000"
    exit_code = 2
    status: int = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **kw: Any) -> None:
        super().__init__(message, code=code, **kw)
        if status is not None:
            self.status = status


# -- the serve process, one class a code (engine/service/app.py, engine/service/_lock.py) ----


class ServeLockHeldError(ServiceError):
    """Another ``serve`` holds the hub; the lock file beside it names its pid."""

    code = "V001"


class UnprotectedHostError(ServiceError):
    """A non-loopback host without ``service.token``: every call and form would be unauthenticated."""

    code = "V002"


class ListenError(ServiceError):
    """The address cannot be bound (in use, not this machine's, not permitted)."""

    code = "V003"


# -- one request to serve, one class a code, its HTTP status on the class (engine/service/) ----


class BadRequestError(ServiceError):
    """The request body is not JSON (line and column given) or not the expected shape, or a query
    parameter is not a valid value."""

    code = "V400"
    status = 400


class UnauthorizedError(ServiceError):
    """No token, a wrong token, a page that needs a sign-in, or the API is disabled because
    ``service.token`` is not set."""

    code = "V401"
    status = 401


class ForbiddenError(ServiceError):
    """A form without a valid CSRF token, a state-changing page while no token is set, or an action on
    a subscription the serve has no settings for (``serve --subscriptions``)."""

    code = "V403"
    status = 403


class ResourceNotFoundError(ServiceError):
    """An unknown route, or a page of a record kind or record the hub does not have."""

    code = "V404"
    status = 404


class MethodNotAllowedError(ServiceError):
    """The route does not take the request's method (the message lists the allowed ones)."""

    code = "V405"
    status = 405


class BodyTooLargeError(ServiceError):
    """The request body is larger than ``service.max_body_bytes``."""

    code = "V413"
    status = 413


class UnprocessableRequestError(ServiceError):
    """Well-formed but cannot be carried out (an error-log entry that names nothing to retry)."""

    code = "V422"
    status = 422


class InternalServiceError(ServiceError):
    """An exception nobody expected while answering, or one that ended a poll or dispatch of the
    service (logged); the service log has the detail, the answer never a traceback."""

    code = "V500"
    status = 500


# -- the hub API (engine/service/_api.py) ---------------------------------------------------


class RefusedRecordsError(KlaviyoSyncError):
    """Several located record errors of one hub API request, answered together (422); nothing was
    stored.  ``errors`` holds each; the code is the first one's."""

    code = "H001"

    def __init__(self, errors: list[HubError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} record(s) refused; nothing was stored", code=errors[0].code)


# -- the worker command (engine/worker/, engine/cli/_worker.py) ---------------------------------


class WorkerError(KlaviyoSyncError):
    """The ``worker`` command cannot start: its subscriptions or its jobs database (J0xx)."""

    code = "J000"
    exit_code = 2


class SubscriptionsDirError(WorkerError):
    """``--subscriptions`` (or ``$KLAVIYO_SYNC_SUBSCRIPTIONS``) is not a folder, or holds no ``*.yaml``."""

    code = "J001"


class DuplicateSubscriptionError(WorkerError):
    """Two settings files of the subscriptions folder name the same ``subscription``."""

    code = "J002"


class JobsDatabaseMissingError(WorkerError):
    """No ``--jobs`` URL, and the subscriptions do not all share one PostgreSQL hub to default to."""

    code = "J003"


class JobsDatabaseError(WorkerError):
    """The jobs database cannot be reached, or procrastinate's schema cannot be applied to it."""

    code = "J004"
    exit_code = 3


# -- outside the tree ---------------------------------------------------------------------------
# The sandbox plays Klaviyo: its errors are Klaviyo's answers (an HTTP status and Klaviyo's or
# OAuth's own error code, which are data), not diagnostics of the engine, so they are not
# KlaviyoSyncErrors.  MalformedAnswerError never leaves the Klaviyo client: it becomes a
# KlaviyoApiError there.


class SandboxApiError(Exception):
    """A Klaviyo-shaped rejection; the sandbox renders it as a JSON:API ``errors`` body."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, *,
        pointer: str | None = None, parameter: str | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.pointer, self.parameter, self.meta = pointer, parameter, meta or {}


class SandboxOAuthError(Exception):
    """An OAuth token-endpoint rejection of the sandbox (``error`` is OAuth's code, e.g. ``invalid_grant``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class FilterError(ValueError):
    """A sandbox ``filter`` query is malformed or uses a field/operator the endpoint does not allow
    (answered as Klaviyo's 400 ``invalid``)."""


class SandboxStateFileError(ValueError):
    """The sandbox's ``state_file`` cannot be loaded (unreadable, not JSON, not a saved sandbox state)."""


class MalformedAnswerError(ValueError):
    """An answer is not the one Klaviyo gives; ``str()`` says what is wrong with it."""


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
    "FormulaTooLongError",
    "ForbiddenConstructError",
    "FormulaImportError",
    "PrivateNameError",
    "UnknownFunctionError",
    "ForbiddenAttributeError",
    "ForbiddenFormatError",
    "UnpackingError",
    "MissingReturnError",
    "FormulaNestingError",
    "FunctionAsValueError",
    "EmptyFormulaError",
    "DisallowedMethodError",
    "NoResolverError",
    "TimeLimitError",
    "StepLimitError",
    "SizeLimitError",
    "NumberLimitError",
    "MappingError",
    "NotAnObjectError",
    "MissingValueError",
    "WrongTypeError",
    "TooLongError",
    "RequiresOneOfError",
    "ChildItemsError",
    "TooDeepError",
    "UnreadableSourceError",
    "PathNotFoundError",
    "UnexpectedMappingError",
    "FormulaDepthError",
    "MappingWarning",
    "SettingsError",
    "SettingsErrors",
    "SettingsYamlError",
    "SettingsValueError",
    "UnsetVariableError",
    "SettingsReadError",
    "EveryOptionError",
    "HubError",
    "HubRecordError",
    "EmailExistsError",
    "HubNotFoundError",
    "HubVersionError",
    "HubLockedError",
    "HubFileError",
    "HubDatabaseError",
    "ExportTargetError",
    "DemoFolderError",
    "DocsTargetError",
    "PageNameClashError",
    "KlaviyoError",
    "KlaviyoApiError",
    "KlaviyoAuthError",
    "KlaviyoConnectionError",
    "RateBudgetError",
    "AuthError",
    "InboundError",
    "ProfileNotFoundError",
    "AuthConfigError",
    "AuthorizationError",
    "ReauthorizationRequired",
    "ServiceError",
    "ServeLockHeldError",
    "UnprotectedHostError",
    "ListenError",
    "BadRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "ResourceNotFoundError",
    "MethodNotAllowedError",
    "BodyTooLargeError",
    "UnprocessableRequestError",
    "InternalServiceError",
    "WorkerError",
    "SubscriptionsDirError",
    "DuplicateSubscriptionError",
    "JobsDatabaseMissingError",
    "JobsDatabaseError",
    "NoCredentialsError",
    "BackfillRevisionError",
    "ClientIdMissingError",
    "ClientSecretMissingError",
    "RedirectUrlMissingError",
    "RedirectUrlError",
    "AuthorizationDataError",
    "AuthorizationCodeError",
    "TokenExchangeError",
    "PartialGrantWarning",
    "RefreshError",
    "RevocationError",
    "OAuthRefreshError",
    "OAuthReauthorizationError",
    "ProfileIdError",
    "SinceError",
    "RefusedRecordsError",
    "SandboxApiError",
    "SandboxOAuthError",
    "FilterError",
    "SandboxStateFileError",
    "MalformedAnswerError",
]

