"""Data contracts, readers, adapters and the synthetic generator (DESIGN §2)."""
