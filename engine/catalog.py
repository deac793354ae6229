"""The error catalog: every message text the specification gives, word for word.

The seeds (``shared/seeds/002_*.txt``, ``001_*.txt``, ``003_*.txt``) name each
message exactly; code that logs or raises one of them takes the constant from
here so the text cannot drift.  Keys are stable identifiers used in the error
log and in golden files.
"""

from __future__ import annotations

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
