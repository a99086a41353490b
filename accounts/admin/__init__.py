"""Django admin for platform admins: AWS accounts, LOBs and memberships (changed only through
the tenancy services, so every change is checked, audited and published), users (read-mostly),
the DynamoDB outbox and the audit trail (read-only).

Modules: ``base`` (what the admin pages share, here and in :mod:`subscriptions.admin`: platform
admin access, the service-backed admin, its helpers and constants), ``aws_accounts`` (AWS
accounts), ``lobs`` (LOBs and memberships), ``outbox`` (the DynamoDB outbox) and ``users`` (users
and the audit trail). Importing this package imports every module, so Django's admin
autodiscovery registers every ModelAdmin; the names below are the package's interface. Tests that
replace a name patch it in the module that looks it up.
"""

from accounts.admin.aws_accounts import (
    AwsAccountAdmin,
    AwsAccountAdminForm,
    VerificationStateFilter,
)
from accounts.admin.base import (
    ADMIN_SEARCH_MAX_CHARS,
    REFUSALS,
    PlatformAdminAccess,
    ServiceBackedAdmin,
    adopt_saved,
    delete_selected_through_services,
    form_fields,
    https_by_default,
    refusal_text,
    service_kwargs,
)
from accounts.admin.lobs import (
    LobAdmin,
    MembershipAdmin,
    MembershipForm,
    MembershipInline,
    MembershipInlineForm,
)
from accounts.admin.outbox import DeliveryStateFilter, MappingOutboxAdmin
from accounts.admin.users import AuditEventAdmin, GatehouseUserAdmin

__all__ = [
    "ADMIN_SEARCH_MAX_CHARS",
    "REFUSALS",
    "AuditEventAdmin",
    "AwsAccountAdmin",
    "AwsAccountAdminForm",
    "DeliveryStateFilter",
    "GatehouseUserAdmin",
    "LobAdmin",
    "MappingOutboxAdmin",
    "MembershipAdmin",
    "MembershipForm",
    "MembershipInline",
    "MembershipInlineForm",
    "PlatformAdminAccess",
    "ServiceBackedAdmin",
    "VerificationStateFilter",
    "adopt_saved",
    "delete_selected_through_services",
    "form_fields",
    "https_by_default",
    "refusal_text",
    "service_kwargs",
]
