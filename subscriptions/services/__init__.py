"""Services of the subscriptions app: the catalogue, the authorized proxy path, endpoint sync."""
