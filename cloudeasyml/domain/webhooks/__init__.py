"""Webhooks: the event catalog and outbox (events), endpoints, signing, the URL guard and the dispatcher."""
