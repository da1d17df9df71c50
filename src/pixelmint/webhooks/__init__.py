"""Outbound webhooks for teams: endpoints, messages signed per Standard Webhooks, delivery attempts with retries, the delivery log."""
