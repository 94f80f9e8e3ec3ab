"""The ticket store: tables, queries and the only code that opens a session."""

from store.store import Store, Transaction

__all__ = ["Store", "Transaction"]
