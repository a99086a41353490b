"""Marketplace listings, subscriptions, endpoints, the authorized proxy path, jobs and results."""
