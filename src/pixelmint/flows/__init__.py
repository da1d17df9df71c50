"""Processes that span domains (Dispatch's ``flows.py``): each calls the owning domains' service
functions in the caller's transaction and writes no table itself."""
