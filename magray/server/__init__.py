"""Servers that expose a memory file to agents; they only call the `Memory` facade."""
