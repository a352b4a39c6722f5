"""Helpers shared by the reliability tests (crash, concurrency, doctor, hostile input)."""
