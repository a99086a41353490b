"""Services: every change to accounts data goes through a function here (writes, audit, outbox).

Modules: ``users`` (identity sync), ``tenancy`` (AWS accounts, LOBs, memberships),
``aws_verification`` (checking an account's invoke role), ``mapping_publication`` (DynamoDB).
"""
