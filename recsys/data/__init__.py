"""Data contracts, readers, adapters and the synthetic generator (docs/architecture.md)."""
