"""Named limits of the ledger core. One place, each with the reason for its value."""

# Identifiers are short strings chosen by clients; 128 fits a UUID, a ULID with a
# prefix, or a POS "store-terminal-receipt" triple, and keeps memory per outcome small.
ID_LENGTH_MAX = 128

# Points and money fit comfortably in int64 and far below it, so sums of many
# lines or many members can never overflow an int64 in any client language.
POINTS_MAX = 1_000_000_000_000
AMOUNT_MINOR_MAX = 1_000_000_000_000_000
QUANTITY_MAX = 1_000_000

# A POS basket rarely exceeds a few hundred lines; this bounds per-earn memory.
PURCHASE_LINES_MAX = 500

# Attributes are labels for rules and segments, not a document store.
ATTRIBUTES_MAX = 32
ATTRIBUTE_KEY_LENGTH_MAX = 64
ATTRIBUTE_VALUE_LENGTH_MAX = 256
REASON_LENGTH_MAX = 256
LABEL_LENGTH_MAX = 64  # channel, store_id, sku, category

# The time of "never" wherever a moment has to be compared or sorted: lots that
# never expire (stored with expires_at_ms 0) sort after every dated lot, and a rule
# without a start or end time is active from -NEVER_MS to NEVER_MS. Far past any
# timestamp the gateway accepts (the year 9999 is 2.5e14 ms) and an exact int64, so it
# never becomes a big integer on the hot path nor overflows in any client language.
NEVER_MS = 1 << 62

# The gateway validates every field of a command against the limits above before it
# builds the command (loyalty.server.gateway.requests); the core asserts, on entry to
# each mutation, the cheap ones it relies on. An assert that fails says the gateway
# let something through: a bug, never an answer for a client.
UNVALIDATED = "the gateway validates this (loyalty.server.gateway.requests): a command that breaks it is a gateway bug"

# Holds longer than a week are not checkout holds; they would tie up points.
RESERVATION_TTL_S_DEFAULT = 900
RESERVATION_TTL_S_MAX = 7 * 24 * 3600

# Transactions kept in memory per member for ListTransactions; older ones remain in
# the journal until the next snapshot trims it. Bounds memory per active member.
TRANSACTIONS_PER_MEMBER_MAX = 100

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 500

# GetBalance shows this many upcoming expiry dates.
NEXT_EXPIRATIONS_MAX = 3

# Open reservations per member: a member at a handful of tills at once, not thousands.
RESERVATIONS_PER_MEMBER_MAX = 64

# Rules: a live rule set is evaluated for every earn, so its size bounds the cost of an
# earn (about 1 us per applicable rule); a thousand is far beyond any weekly campaign plan.
RULES_MAX = 1_000
RULE_NAME_LENGTH_MAX = 256
# Values in one condition list (SKUs, stores, ...): matched through a set, so the cost is
# memory, not time; larger product lists belong in categories.
RULE_CONDITION_VALUES_MAX = 10_000
RULE_TIME_WINDOWS_MAX = 16
# Decimal strings such as "1.5": long enough for any sensible rate, short enough that
# exact fractions stay small integers.
RULE_DECIMAL_LENGTH_MAX = 20
# A rate or factor past these is a typo, and would bring points near POINTS_MAX.
RULE_POINTS_PER_UNIT_MAX = 1_000
RULE_MULTIPLIER_MAX = 100
