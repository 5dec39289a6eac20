"""Conversations: mentions of the gateway's accounts read, stored, and answered safely."""
