"""The error catalog: every message text the specification gives, word for word.

The specification's articles (summarised in docs/specification.md: the error catalog,
the inbound profile and the Placed Order articles) name each message exactly; code that logs
or raises one of them takes the constant from here so the text cannot drift.  Keys are stable
identifiers used in the error log and in golden files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Authorization and Connection (002)
AUTH_DATA_MISSING: Final = (
    "The authorization could not be completed because the data returned from Klaviyo was missing."
)
AUTH_CODE_MISSING: Final = (
    "The authorization could not be completed because the authorization code from Klaviyo was missing."
)
AUTH_CLIENT_ID_NOT_CONFIGURED: Final = (
    "The authorization could not be completed because the Client ID is not configured "
    "for this Klaviyo integration version."
)
AUTH_CLIENT_SECRET_NOT_CONFIGURED: Final = (
    "The authorization could not be completed because the Client Secret is not configured "
    "for this Klaviyo integration version."
)
AUTH_REDIRECT_URL_NOT_CONFIGURED: Final = (
    "The authorization could not be completed because the Redirect URL is not configured "
    "for this Klaviyo integration version."
)
AUTH_TOKEN_EXCHANGE_FAILED: Final = (
    "The authorization could not be completed because the temporary code could not be "
    "exchanged for an access token."
)

# Add / Update Klaviyo Profile FROM Hub (002)
PROFILE_NOT_CREATED: Final = (
    "The Klaviyo profile could not be created because a required mapping field is missing or incomplete."
)
PROFILE_NOT_UPDATED: Final = (
    "The Klaviyo profile could not be updated because a required mapping field is missing or incomplete."
)
PROFILE_LINK_WARNING: Final = (
    "The integration could not automatically link this record to an existing Klaviyo profile "
    "by email address. This may result in duplicate profile records."
)

# Add / Update Klaviyo Profile TO Hub (002, 001)
CUSTOMER_LINK_WARNING: Final = (
    "The integration could not automatically link this profile to an existing iPaaS.com Customer "
    "by email address. This may result in duplicate customer records."
)
EMAIL_REQUIRED: Final = "An email address is required"
CUSTOMER_NUMBER_REQUIRED: Final = "A customer number is required"
EMAIL_ALREADY_EXISTS: Final = "Email address already exists"

# Address children (002)
ADDRESS_VALUE_UNREADABLE: Final = (
    "A mapped address or subscription value could not be read from the Klaviyo profile."
)

# Placed Order / Ordered Product (002, 003)
ORDER_EVENT_NOT_CREATED: Final = (
    "The Klaviyo order event could not be created because a required mapping field is missing or incomplete."
)
ORDER_CUSTOMER_NOT_CREATED: Final = (
    "The customer needed for this order could not be created, which prevented the order from transferring."
)
PRODUCT_EVENT_NOT_CREATED: Final = (
    "The Klaviyo ordered product event could not be created because a required mapping field "
    "is missing or incomplete."
)
TRANSACTION_MAPPING_INCOMPLETE: Final = "Could not Create Transaction: Mapping field is missing / not complete"
PROFILE_NOT_RESOLVED: Final = "Profile could not be resolved"

# Klaviyo API response errors, all flows (002)
ERROR_CALLING_KLAVIYO: Final = "Error calling Klaviyo"
KLAVIYO_CONNECTION_ERROR: Final = "An error occurred while contacting Klaviyo"
KLAVIYO_UNAVAILABLE_ORDERS: Final = "Klaviyo API temporarily unavailable"   # 003, order flows
KLAVIYO_UNAVAILABLE_PROFILES: Final = "Klaviyo temporarily unavailable"    # 001, inbound profile flows

# -- One error, two texts ---------------------------------------------------------------
#
# Where two articles word the same error differently, the error log keeps both: the error
# catalog's text (002) is the entry's message, the other article's text goes into its detail.
# ``TEXT_PAIRS`` lists every such pair found in the five articles; tests/test_error_pairs.py
# checks each one end to end.

ORDER_FLOWS: Final = frozenset({"Add Klaviyo Placed Order Event FROM Hub",
                                "Add Klaviyo Ordered Product Event FROM Hub"})


@dataclass(frozen=True)
class TextPair:
    """One error worded twice.

    Attributes:
        message: the error catalog's text (seed 002), the log entry's message.
        other: the other article's text, carried in the entry's detail.
        article: which article words it ``other`` (named in the detail).
        flows: the flows (collection titles) the pair applies to; ``None`` means any flow whose
            title ends with ``flows_suffix``.
        flows_suffix: see ``flows``.
        prefix: ``message`` may be followed by more text (Klaviyo's detail), so it is matched as
            a prefix; otherwise it must be the whole message.
        swap: a message equal to ``other`` is logged as ``message`` (the other article's text moves
            into the detail); without it only ``message`` entries gain the other text.
        statuses: for an "Error calling Klaviyo (HTTP s)" message, the statuses that count.
    """

    message: str
    other: str
    article: str
    flows: frozenset[str] | None = None
    flows_suffix: str = ""
    prefix: bool = False
    swap: bool = False
    statuses: tuple[int, int] | None = None

    def applies_to(self, flow: str) -> bool:
        return flow in self.flows if self.flows is not None else flow.endswith(self.flows_suffix)

    def matches(self, message: str) -> bool:
        if self.statuses is not None:
            head = f"{self.message} (HTTP "
            if not message.startswith(head):
                return False
            digits = message[len(head):len(head) + 3]
            return digits.isdigit() and self.statuses[0] <= int(digits) <= self.statuses[1]
        return message.startswith(self.message) if self.prefix else message == self.message


_PLACED_ORDER_ARTICLE: Final = "Placed Order event article"
_PROFILE_TO_HUB_ARTICLE: Final = "Klaviyo Profile TO Hub article"

TEXT_PAIRS: Final[tuple[TextPair, ...]] = (
    # A required order mapping did not resolve (002 "Order Event Could Not Be Created" / 003 Error Handling).
    TextPair(ORDER_EVENT_NOT_CREATED, TRANSACTION_MAPPING_INCOMPLETE, _PLACED_ORDER_ARTICLE,
             flows=frozenset({"Add Klaviyo Placed Order Event FROM Hub"}), swap=True),
    # The customer transfer an order depends on produced no profile (002 "Customer Required for Order
    # Could Not Be Created" / 003 "Profile could not be resolved ... the prerequisite customer transfer
    # does not produce a profile").  Not swapped: with no Customer to transfer at all, 003's text
    # stands alone (002 has no text for that case).
    TextPair(ORDER_CUSTOMER_NOT_CREATED, PROFILE_NOT_RESOLVED, _PLACED_ORDER_ARTICLE,
             flows=frozenset({"Add Klaviyo Placed Order Event FROM Hub"})),
    # Klaviyo cannot be reached (002 "Klaviyo Connection Error" / 003 "Klaviyo API temporarily
    # unavailable" / 001 "Klaviyo temporarily unavailable"); a 5xx answer is the same situation.
    TextPair(KLAVIYO_CONNECTION_ERROR, KLAVIYO_UNAVAILABLE_ORDERS, _PLACED_ORDER_ARTICLE,
             flows=ORDER_FLOWS, prefix=True),
    TextPair(ERROR_CALLING_KLAVIYO, KLAVIYO_UNAVAILABLE_ORDERS, _PLACED_ORDER_ARTICLE,
             flows=ORDER_FLOWS, statuses=(500, 599)),
    TextPair(KLAVIYO_CONNECTION_ERROR, KLAVIYO_UNAVAILABLE_PROFILES, _PROFILE_TO_HUB_ARTICLE,
             flows_suffix=" TO Hub", prefix=True),
    TextPair(ERROR_CALLING_KLAVIYO, KLAVIYO_UNAVAILABLE_PROFILES, _PROFILE_TO_HUB_ARTICLE,
             flows_suffix=" TO Hub", statuses=(500, 599)),
)


def other_text(pair: TextPair) -> str:
    """How the other article's wording appears in a log entry's detail."""
    return f'the {pair.article} words this error "{pair.other}"'


def pair_texts(flow: str, message: str, detail: str | None) -> tuple[str, str | None]:
    """The (message, detail) to log: the catalog's text as the message, the other article's in the detail.

    Messages that belong to no pair come back unchanged.
    """
    for pair in TEXT_PAIRS:
        if not pair.applies_to(flow):
            continue
        if pair.swap and message == pair.other:
            message = pair.message
        elif not pair.matches(message):
            continue
        extra = other_text(pair)
        if detail and extra in detail:
            return message, detail
        return message, f"{detail}; {extra}" if detail else extra
    return message, detail
