"""Users and sign-in, audit trail (and, as they land: LOBs, AWS accounts, memberships, tenancy)."""
