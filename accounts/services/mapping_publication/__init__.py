"""Publishing the user→LOB and LOB→account mappings to the DynamoDB tables of seed 003.

The reference Studio-access Lambda reads ``users-map-table`` (``{PK: username, LOB: slug}``) and
``lobs-map-table`` (``{PK: slug, ACCOUNT_ID: account id}``). The portal owns the mapping and keeps
those tables in step through the :class:`~accounts.models.MappingOutbox`:

* a service that changes a membership, a LOB or a user calls :func:`mapping_outbox_enqueue` inside
  its transaction; after commit a Celery task drains the outbox (beat drains it too, every 30 s, so
  a change made while Redis was down is published all the same);
* :func:`mapping_outbox_drain` computes each item from the database as it is *now* (never from the
  row) and writes or deletes it; a failed write stays in the outbox with a backoff;
* :func:`mapping_drift` / :func:`mapping_repair` compare whole tables and fix them;
* :func:`mapping_import` loads an existing deployment's tables into the portal.

Items carry ``LOBS`` (every LOB of the user, earliest membership first) beside the reference
``LOB``. AWS is reached only through :mod:`portal.aws_gateway`, with the low-level client and
attribute values marshalled here (boto3's serializer lives in boto3, which this package may not
import).

Modules: ``tables`` (where the tables are, the client, one-item writes, full scans),
``attributes`` (attribute-value marshalling), ``desired`` (the desired items, from the database),
``outbox`` (recording a change, purging delivered rows), ``drain`` (publishing due rows),
``drift`` (comparing whole tables), ``repair`` (fixing them) and ``importing`` (loading them into
the portal). The names below are the package's interface; code and tests that replace a helper
patch it in the module that looks it up.
"""

from accounts.services.mapping_publication.attributes import marshal_item, unmarshal_item
from accounts.services.mapping_publication.desired import desired_lob_item, desired_user_item
from accounts.services.mapping_publication.drain import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    DrainResult,
    mapping_outbox_drain,
)
from accounts.services.mapping_publication.drift import (
    LOB_ATTRIBUTES,
    USER_ATTRIBUTES,
    Drift,
    DriftEntry,
    TableDrift,
    mapping_drift,
)
from accounts.services.mapping_publication.importing import ImportResult, mapping_import
from accounts.services.mapping_publication.outbox import (
    mapping_outbox_enqueue,
    mapping_outbox_purge,
)
from accounts.services.mapping_publication.repair import mapping_repair
from accounts.services.mapping_publication.tables import (
    SESSION_NAME,
    DynamoDBClient,
    MappingTableError,
    mapping_tables_description,
)

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_MAX_SECONDS",
    "LOB_ATTRIBUTES",
    "SESSION_NAME",
    "USER_ATTRIBUTES",
    "DrainResult",
    "Drift",
    "DriftEntry",
    "DynamoDBClient",
    "ImportResult",
    "MappingTableError",
    "TableDrift",
    "desired_lob_item",
    "desired_user_item",
    "mapping_drift",
    "mapping_import",
    "mapping_outbox_drain",
    "mapping_outbox_enqueue",
    "mapping_outbox_purge",
    "mapping_repair",
    "mapping_tables_description",
    "marshal_item",
    "unmarshal_item",
]
