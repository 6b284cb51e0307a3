"""Batch entry points (top floor): they compose the ground floor, encoders and ranking."""
